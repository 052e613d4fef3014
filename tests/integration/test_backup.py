"""`farmhand backup` of a running manager (`--processes 2`) while work keeps arriving,
and a second manager started on the copy.

What an admin would notice if the backup were not taken as it must be: a copy whose
database is damaged or lacks what the farm had already acknowledged (the database
copied as plain files while it is written: the write-ahead log left out or torn), or a
copy whose database names files it does not hold (blobs copied before the database:
frames uploaded in between are named and missing). Both are checked here, through the
copy's own manager as a user would, and on the copy's files directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, descendants, local_farm
from farmhand.manager.auth.sessions import SESSION_COOKIE
from tests.integration.conftest import FAKE_BLEND, submit_stand_in

pytestmark = pytest.mark.xdist_group("backup")


PAUSE = 0.05
"""Seconds between the producer's jobs."""


def _png(number: int) -> bytes:
    """A frame no other frame equals (so each is a blob of its own)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (number % 251, number // 251 % 251, 7)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Work:
    """What the farm acknowledged: jobs with their .blend and frames, and when."""

    blends: dict[int, bytes] = field(default_factory=dict)
    frames: dict[tuple[int, int], bytes] = field(default_factory=dict)
    done_at: dict[int, float] = field(default_factory=dict)
    """Job → when its last frame was acknowledged (monotonic)."""
    errors: list[str] = field(default_factory=list)


class Producer:
    """A submitter and a runner in one: submit a job (a .blend of its own), claim its
    task, upload its frames with log lines, complete it; again and again."""

    def __init__(self, farm: LocalFarm, work: Work) -> None:
        self.farm, self.work = farm, work
        self.numbers = itertools.count(1)
        self.admin = httpx.Client(
            base_url=farm.url, headers={"Authorization": f"Bearer {farm.admin_token}"}, timeout=30
        )
        answer = self.admin.post(
            "/api/runner/register", json={"token": farm.runner_token, "name": "backup-test"}
        )
        assert answer.status_code == 201, answer.text
        self.runner = httpx.Client(
            base_url=farm.url,
            headers={"Authorization": f"Bearer {answer.json()['secret']}"},
            timeout=30,
        )
        self.stop = threading.Event()

    def one_job(self) -> None:
        blend = FAKE_BLEND + secrets.token_bytes(256 * 1024)
        job_id = submit_stand_in(self.admin, blend=blend, frame_start=1, frame_end=2, chunk_size=2)
        self.work.blends[job_id] = blend
        claim = self.runner.get("/api/runner/tasks", params={"wait": 5})
        assert claim.status_code == 200, claim.text
        task = claim.json()
        reply = self.runner.post(
            f"/api/runner/tasks/{task['task_id']}/progress",
            json={"frames_done": 0, "log_lines": [f"rendering job {task['job_id']}"]},
        )
        assert reply.status_code == 200, reply.text
        for frame in task["frames"]:
            data = _png(next(self.numbers))
            upload = self.runner.put(
                f"/api/runner/tasks/{task['task_id']}/frames/{frame}.png", content=data
            )
            assert upload.status_code == 201, upload.text
            self.work.frames[task["job_id"], frame] = data
        done = self.runner.post(
            f"/api/runner/tasks/{task['task_id']}/complete", json={"frames": task["frames"]}
        )
        assert done.status_code == 200, done.text
        self.work.done_at[task["job_id"]] = time.monotonic()

    def run(self) -> None:
        """Jobs until stopped, a pause between them: SQLite then checkpoints its log into
        the database file every couple of seconds, not several times during a backup
        (the test below says why that matters)."""
        try:
            while not self.stop.is_set():
                self.one_job()
                time.sleep(PAUSE)
        except Exception as error:  # the test's thread reports it
            self.work.errors.append(repr(error))

    def close(self) -> None:
        self.admin.close()
        self.runner.close()


class CopyFarm(LocalFarm):
    """A manager on the copy with no preset tokens: the tokens that work are the copy's."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("FARMHAND_ADMIN_TOKEN")
        env.pop("FARMHAND_RUNNER_TOKEN")
        return env


@pytest.fixture
def busy_farm(tmp_path: Path) -> Iterator[tuple[LocalFarm, Producer]]:
    with local_farm(tmp_path / "farm", heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager("--processes", "2")
        assert manager.process is not None
        deadline = time.monotonic() + 30
        while len(descendants(manager.process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # A session cookie makes the manager create its `session-key` (on first use).
        with httpx.Client(base_url=farm.url, cookies={SESSION_COOKIE: "none"}) as browser:
            assert browser.get("/api/jobs").status_code == 401
        assert (farm.data_dir / "session-key").exists()
        producer = Producer(farm, Work())
        try:
            yield farm, producer
        finally:
            producer.stop.set()
            producer.close()


def _backup(farm: LocalFarm, dest: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    env.pop("FARMHAND_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "farmhand", "backup", str(dest), "--data-dir", str(farm.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _jobs_in_a_plain_copy(database: Path, scratch: Path) -> set[int] | None:
    """The jobs a plain copy of the database file would hold now: what the write-ahead
    log holds, not yet checkpointed into the file, is missing from it (None: the copy
    caught a checkpoint half-way and is unreadable)."""
    probe = scratch / "plain-copy.sqlite3"
    shutil.copyfile(database, probe)
    try:
        with contextlib.closing(sqlite3.connect(probe)) as plain:
            return {row[0] for row in plain.execute("SELECT id FROM jobs")}
    except sqlite3.Error:
        return None
    finally:
        for leftover in scratch.glob("plain-copy.sqlite3*"):
            leftover.unlink()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_backup_taken_while_the_farm_works_restores_into_a_working_manager(
    busy_farm: tuple[LocalFarm, Producer], tmp_path: Path
) -> None:
    farm, producer = busy_farm
    work = producer.work
    for _ in range(4):
        producer.one_job()
    writer = threading.Thread(target=producer.run)
    writer.start()
    try:
        # Start the backup just after SQLite checkpointed, with acknowledged jobs only in
        # its log: a backup that copied the database file as a plain file would lose
        # them (the next checkpoint is seconds away), so the test tells the two apart.
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "SQLite never checkpointed: the test cannot tell"
            assert work.errors == []
            before = set(work.done_at)
            plain = _jobs_in_a_plain_copy(farm.data_dir / "farmhand.sqlite3", tmp_path)
            if plain is not None and len(before) > 6 and 1 <= len(before - plain) <= 3:
                break
            time.sleep(0.01)
        acknowledged = dict(work.done_at)  # all of this must be in the copy
        copy_root = tmp_path / "copy"
        dest = copy_root / "data"  # where a LocalFarm keeps its data dir
        started = time.monotonic()
        result = _backup(farm, dest)
        ended = time.monotonic()
        time.sleep(0.5)  # and the farm goes on working after it
    finally:
        producer.stop.set()
        writer.join(60)
    assert work.errors == []
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Backed up to" in result.stdout
    during = [job for job, at in work.done_at.items() if started < at < ended]
    assert during, "the farm wrote nothing while the backup ran: the test proves nothing"

    # The copy's files, directly: a sound database naming only blobs the copy holds.
    with contextlib.closing(sqlite3.connect(dest / "farmhand.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        named = {
            row[0]
            for row in db.execute("SELECT sha256 FROM blobs UNION SELECT sha256 FROM job_files")
        }
        copied_jobs = {row[0] for row in db.execute("SELECT id FROM jobs")}
    missing = [sha for sha in named if not (dest / "blobs/sha256" / sha[:2] / sha[2:]).is_file()]
    assert missing == [], f"the copy names {len(missing)} blobs it lacks"
    for sha in named:
        assert _sha256((dest / "blobs/sha256" / sha[:2] / sha[2:]).read_bytes()) == sha
    lost = sorted(set(acknowledged) - copied_jobs)
    assert lost == [], f"jobs acknowledged before the backup began are not in the copy: {lost}"
    for name in ("admin-token", "runner-token", "session-key"):
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o600
    assert (dest / "session-key").read_bytes() == (farm.data_dir / "session-key").read_bytes()
    assert any((dest / "logs").rglob("*.log"))
    assert not (dest / "blobs" / "tmp").exists() and not (dest / "run").exists()

    # A manager on the copy, through its API, with the copy's own tokens.
    restored = CopyFarm(copy_root)
    try:
        restored.start_manager()
        _check_through_the_api(restored, dest, work, copied_jobs, set(acknowledged))
    except BaseException:
        print(restored.logs(), file=sys.stderr)
        raise
    finally:
        restored.stop()


def _check_through_the_api(
    restored: LocalFarm, dest: Path, work: Work, copied_jobs: set[int], acknowledged: set[int]
) -> None:
    """Every job of the copy with every file whole, each frame acknowledged before the
    backup began as uploaded, and the copy's own admin and runner tokens accepted."""
    admin_token = (dest / "admin-token").read_text().strip()
    runner_token = (dest / "runner-token").read_text().strip()
    with httpx.Client(
        base_url=restored.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    ) as api:
        jobs = api.get("/api/jobs")
        assert jobs.status_code == 200, jobs.text  # the copy's admin token works
        assert {job["id"] for job in jobs.json()} == copied_jobs
        for job_id in copied_jobs:
            files = api.get(f"/api/jobs/{job_id}/files")
            assert files.status_code == 200, files.text
            for row in files.json():
                body = api.get(f"/api/jobs/{job_id}/files/{row['id']}/download")
                assert body.status_code == 200, body.text
                assert _sha256(body.content) == row["sha256"]
                if row["kind"] == "input":
                    assert body.content == work.blends[job_id]
            if job_id in acknowledged:
                for frame in (1, 2):
                    output = api.get(f"/api/jobs/{job_id}/outputs/{frame}")
                    assert output.status_code == 200, output.text
                    assert output.content == work.frames[job_id, frame]
        register = api.post(
            "/api/runner/register", json={"token": runner_token, "name": "after-restore"}
        )
        assert register.status_code == 201, register.text
