"""Deleting a big job never keeps the other workers waiting, and always finishes.

QA round 7: `DELETE /api/jobs/{id}?purge=true` of a 9,000-task job with 8,500 stored
frames took a minute in one write transaction, and every other worker's heartbeat,
upload and completion waited behind it (past the heartbeat timeout: live workers were
marked offline). The job is now marked as being deleted in one short transaction (gone
for everyone from then on) and its rows go in batches, each its own transaction; a
manager stopped in the middle finishes the deletion when it starts again.

Each test builds a job of 2,000 tasks, 1,800 of them completed with a stored frame (rows
written straight to the database: submitting and rendering them would take minutes),
and another job that must be left whole. The moment "in the middle" is found by watching
the deleting thread's write transactions end (`Midway`) while the job still has rows.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile, Task, TaskFailure
from farmhand.manager.jobs import delete as deletion
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage.gc import collect_garbage, release_orphans
from farmhand.shared.schemas import TaskStatus
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.postgres import fresh_database
from tests.integration.test_scheduling import claimed, farm_for, manager_of

TASKS = 2000
DONE = 1800
"""Completed tasks, each with a stored frame: several batches of each kind of row."""
WAIT = 30.0
"""Bounded wait for what must happen: a hang fails the test after it."""


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("postgres"))]
)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ManagerSettings:
    """A manager's settings on SQLite or a fresh PostgreSQL database; no garbage
    collection, so whatever goes is the deletion's doing."""
    overrides: dict[str, object] = {"gc_interval": 0}
    if request.param == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        overrides["database_url"] = fresh_database(server, f"delbig_{tmp_path.name}")
    return make_settings(tmp_path / "data", **overrides)


@contextmanager
def running(settings: ManagerSettings) -> Iterator[Farm]:
    """A manager on `settings`, started (and stopped at the end of the block)."""
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


@dataclass
class BigJob:
    id: int
    frames: list[str]
    """Hashes of its stored frames (only it uses them)."""
    logs: Path


def big_job(farm: Farm) -> BigJob:
    """A job of `TASKS` tasks, `DONE` of them completed with a stored frame, a log each,
    and a few failures."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=TASKS)
    context = manager_of(farm)
    now = utcnow()
    with context.db.read() as session:
        ids = dict(session.execute(select(Task.index, Task.id).where(Task.job_id == job_id)).all())
    blobs: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for index in range(DONE):
        data = f"frame {index + 1} of job {job_id}".encode()
        sha = hashlib.sha256(data).hexdigest()
        path = context.blobs.path_for(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        blobs.append({"sha256": sha, "size": len(data), "created_at": now, "used_at": now})
        files.append({"job_id": job_id, "kind": "output", "path": f"frame_{index + 1:04d}.png",
                      "sha256": sha, "size": len(data), "frame": index + 1,
                      "task_id": ids[index], "created_at": now})  # fmt: skip
    with context.db.transaction() as session:
        session.execute(
            update(Task)
            .where(Task.job_id == job_id, Task.index < DONE)
            .values(status=TaskStatus.COMPLETED.value, finished_at=now, frames_done=1)
        )
        session.execute(insert(Blob), blobs)
        session.execute(insert(JobFile), files)
        session.execute(
            insert(TaskFailure),
            [{"task_id": ids[i], "reason": "out of memory", "created_at": now} for i in range(20)],
        )
    logs = context.logs.root / f"job-{job_id}"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"task-{ids[0]}.log").write_text("Fra:1 Mem:12M | Rendering\n")
    return BigJob(job_id, [b["sha256"] for b in blobs], logs)


def rows_left(context: ManagerContext, job_id: int) -> int:
    """The job's own rows still in the database: its tasks, files and the job."""
    with context.db.read() as session:
        return sum(
            session.scalar(statement) or 0
            for statement in (
                select(func.count()).select_from(Task).where(Task.job_id == job_id),
                select(func.count()).select_from(JobFile).where(JobFile.job_id == job_id),
                select(func.count()).select_from(Job).where(Job.id == job_id),
            )
        )


def stored(context: ManagerContext, hashes: Collection[str]) -> int:
    """How many of these blobs still have a row or a file."""
    with context.db.read() as session:
        rows = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(list(hashes)))))
    return len(rows | {sha for sha in hashes if context.blobs.path_for(sha).exists()})


class Midway:
    """Watches the write transactions of the thread deleting a job (the thread that
    frees its blobs) and calls `at` once after one of them has ended with some of the
    job's rows gone and some left: the deletion is under way and holds no lock."""

    def __init__(
        self, context: ManagerContext, job_id: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.context, self.job_id = context, job_id
        self.before = rows_left(context, job_id)
        self.deleter: threading.Thread | None = None
        self.at: Callable[[], None] = lambda: None
        self.seen = False
        transaction = context.db.transaction

        def releasing(session: Session, *args: Any) -> list[str]:
            self.deleter = threading.current_thread()
            return release_orphans(session, *args)

        @contextmanager
        def watched() -> Iterator[Session]:
            with transaction() as session:
                yield session
            mine = threading.current_thread() is self.deleter and not self.seen
            if mine and 0 < rows_left(context, job_id) < self.before:
                self.seen = True
                self.at()

        monkeypatch.setattr(f"{deletion.__name__}.release_orphans", releasing)
        monkeypatch.setattr(context.db, "transaction", watched)


def other_job(farm: Farm) -> int:
    """A small job of the same .blend (its input blob shared with the big job)."""
    return submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=3)


def test_workers_are_answered_while_a_big_job_is_deleted(
    settings: ManagerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(settings) as farm:
        job = big_job(farm)
        holder = farm.register_runner("holder")
        held = claimed(farm, holder)  # one of the big job's queued tasks
        assert held["job_id"] == job.id
        other = other_job(farm)
        idle = farm.register_runner("idle")
        context = manager_of(farm)
        midway = Midway(context, job.id, monkeypatch)
        reached, resume = threading.Event(), threading.Event()

        def pause() -> None:
            reached.set()
            assert resume.wait(4 * WAIT), "the test never let the deletion go on"

        midway.at = pause
        answers: dict[str, Any] = {}

        def purge() -> None:
            answers["delete"] = farm.client.delete(
                f"/api/jobs/{job.id}", params={"purge": "true"}, headers=farm.admin
            )

        deleter = threading.Thread(target=purge, name="purge", daemon=True)
        deleter.start()
        try:
            for _ in range(int(WAIT / 0.05)):
                if reached.wait(0.05):
                    break
                assert deleter.is_alive(), (
                    "the deletion never let go of the database while the job still had "
                    "rows: it held the write lock until every row was gone"
                )
            else:
                pytest.fail(f"the deletion did not get under way within {WAIT} s")
            # Under way: the other workers are answered, and the job is gone for all.
            beat = farm.client.post("/api/runner/heartbeat", headers=idle, json={})
            assert beat.status_code == 200, beat.text
            assert claimed(farm, idle)["job_id"] == other
            # The worker on one of its tasks is told to stop, as for a canceled job.
            url = f"/api/runner/tasks/{held['task_id']}"
            told = farm.client.post(f"{url}/progress", headers=holder, json={})
            assert told.json() == {"keep_going": False}, told.text
            done = farm.client.post(
                f"{url}/complete", headers=holder, json={"frames": held["frames"]}
            )
            assert done.status_code == 409, done.text
            gone = farm.client.get(f"/api/jobs/{job.id}", headers=farm.admin)
            assert gone.status_code == 404, gone.text
            listed = farm.client.get("/api/jobs", headers=farm.admin).json()
            assert [j["id"] for j in listed] == [other]
            assert rows_left(context, job.id) > 0, "the test saw the deletion's middle"
        finally:
            resume.set()
            deleter.join(WAIT)
        assert not deleter.is_alive(), f"the deletion did not end within {WAIT} s"
        assert answers["delete"].status_code == 204, answers["delete"].text
        assert_deleted(farm, job, other)


def assert_deleted(farm: Farm, job: BigJob, other: int) -> None:
    """The big job and all it alone used are gone; the other job is whole."""
    context = manager_of(farm)
    assert rows_left(context, job.id) == 0
    with context.db.read() as session:
        assert session.scalar(select(func.count()).select_from(TaskFailure)) == 0
    assert stored(context, job.frames) == 0, "its frames' rows and files are gone"
    assert not job.logs.exists(), "its logs are gone"
    answer = farm.client.get(f"/api/jobs/{other}", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    files = farm.client.get(f"/api/jobs/{other}/files", headers=farm.admin).json()
    assert [f["path"] for f in files] == ["scene.blend"]
    assert context.blobs.path_for(files[0]["sha256"]).exists(), "the shared input stays"


class Stopped(Exception):
    """The manager stopping in the middle of a deletion."""


def test_a_deletion_cut_short_is_finished_when_the_manager_starts_again(
    settings: ManagerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(settings) as farm:
        job = big_job(farm)
        other = other_job(farm)
        worker = farm.register_runner("w")
        context = manager_of(farm)
        midway = Midway(context, job.id, monkeypatch)

        def stop() -> None:
            raise Stopped

        midway.at = stop
        with pytest.raises(Stopped):
            farm.client.delete(f"/api/jobs/{job.id}", params={"purge": "true"}, headers=farm.admin)
        monkeypatch.undo()
        assert rows_left(context, job.id) > 0, "the deletion was cut short in the middle"
        # Half deleted, and still gone for everyone: not listed, not found, not claimed.
        assert farm.client.get(f"/api/jobs/{job.id}", headers=farm.admin).status_code == 404
        listed = farm.client.get("/api/jobs", headers=farm.admin).json()
        assert [j["id"] for j in listed] == [other]
        again = farm.client.delete(
            f"/api/jobs/{job.id}", params={"purge": "true"}, headers=farm.admin
        )
        assert again.status_code == 404, again.text
        assert claimed(farm, worker)["job_id"] == other

    with running(settings) as farm:
        context = manager_of(farm)
        for _ in range(int(WAIT / 0.05)):
            if not rows_left(context, job.id):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the deletion was not finished within {WAIT} s of the start")
        # It stopped between a batch's commit and the removal of that batch's blob
        # files: files without a row, which garbage collection sweeps once they are
        # older than the grace period (as after a crash between storing and recording).
        later = utcnow() + timedelta(seconds=settings.blob_grace_seconds + 1)
        assert collect_garbage(context, later).stray_files > 0
        assert_deleted(farm, job, other)
