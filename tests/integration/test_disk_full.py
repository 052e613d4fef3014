"""A full disk under the manager: a clear 507, nothing half-stored, nothing lost.

The manager's data directory (blob store, task logs and the SQLite database) is on a
small tmpfs that each test fills with one big file, as a disk fills up in production:
frames of every job land on the manager. Mounting needs root; CI runs as root, and the
tests are skipped, saying why, where mounting is not allowed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import (
    FAKE_BLEND,
    Farm,
    make_settings,
    png_bytes,
    submit_stand_in,
    upload_frame,
)

SIZE = "16m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def farm_on_small_disk(small_disk: Path) -> Iterator[Farm]:
    settings = make_settings(small_disk / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file; removing it frees them again."""
    filler = disk / "filler"
    block = b"\xff" * (64 * 1024)
    with filler.open("wb", buffering=0) as handle:
        try:
            while handle.write(block):  # a short write fills the last page; then ENOSPC
                pass
        except OSError:
            pass
    assert os.statvfs(disk).f_bavail == 0
    return filler


def staged_files(farm: Farm) -> list[Path]:
    """Temporary upload files left in the blob store (there must be none after a
    refusal: on a full disk, every stray byte counts)."""
    tmp = farm.data_dir / "blobs" / "tmp"
    return [p for p in tmp.rglob("*") if p.is_file()] if tmp.exists() else []


def start_task(farm: Farm) -> tuple[dict[str, str], dict[str, object]]:
    """A runner holding the first task of a two-frame job (one frame a task)."""
    runner = farm.register_runner()
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner)
    assert task.status_code == 200, task.text
    return runner, task.json()


@pytest.mark.parametrize(
    "padding",
    [0, 64 * 1024],
    ids=["small-frame-fails-when-flushed", "big-frame-fails-while-written"],
)
def test_a_frame_upload_on_a_full_disk_is_a_507_and_the_stored_frames_survive(
    farm_on_small_disk: Farm, small_disk: Path, padding: int
) -> None:
    farm = farm_on_small_disk
    runner, task = start_task(farm)
    first = png_bytes(64, 48, "red")
    assert upload_frame(farm, runner, task, 1, first).status_code == 201

    filler = fill(small_disk)
    # A small frame waits in the file's buffer and fails when flushed; a big one fails
    # while it is written. Either way no half-written file may stay behind.
    second = os.urandom(padding) + png_bytes(64, 48, "blue")
    refused = upload_frame(farm, runner, task, 2, second)
    assert refused.status_code == 507, refused.text
    assert "storage is full" in refused.json()["detail"]
    assert "Traceback" not in refused.text
    assert staged_files(farm) == []
    # What was stored before is still there, whole.
    kept = farm.client.get(f"/api/jobs/{task['job_id']}/outputs/1", headers=farm.admin)
    assert kept.status_code == 200
    assert hashlib.sha256(kept.content).digest() == hashlib.sha256(first).digest()
    # The task cannot complete without its second frame, and is still the runner's.
    early = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1, 2]}
    )
    assert early.status_code == 409

    filler.unlink()
    # The worker retries (a 5xx is retryable) and, with room again, the frame goes in.
    assert upload_frame(farm, runner, task, 2, png_bytes(64, 48, "blue")).status_code == 201
    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1, 2]}
    )
    assert done.status_code == 200, done.text
    assert done.json()["job_status"] == "completed"


def test_a_database_write_on_a_full_disk_is_a_507_and_the_database_stays_usable(
    farm_on_small_disk: Farm, small_disk: Path
) -> None:
    farm = farm_on_small_disk
    stored = farm.client.put(
        f"/api/blobs/{hashlib.sha256(FAKE_BLEND).hexdigest()}",
        headers=farm.admin,
        content=FAKE_BLEND,
    )
    assert stored.status_code in (200, 201), stored.text
    manifest = {
        "main_file": "scene.blend",
        "files": {"scene.blend": hashlib.sha256(FAKE_BLEND).hexdigest()},
        "frame_start": 1,
        "chunk_size": 1,
    }
    small = farm.client.post(
        "/api/jobs", headers=farm.admin, json={**manifest, "frame_end": 3, "name": "small"}
    )
    assert small.status_code == 202, small.text

    filler = fill(small_disk)
    # Thousands of task rows: SQLite must grow its files, and there is no room.
    big = farm.client.post(
        "/api/jobs", headers=farm.admin, json={**manifest, "frame_end": 20000, "name": "big"}
    )
    assert big.status_code == 507, big.text
    assert "storage is full" in big.json()["detail"]
    listed = farm.client.get("/api/jobs", headers=farm.admin)
    assert listed.status_code == 200
    assert [job["name"] for job in listed.json()] == ["small"]  # nothing half-created

    filler.unlink()
    again = farm.client.post(
        "/api/jobs", headers=farm.admin, json={**manifest, "frame_end": 20000, "name": "big"}
    )
    assert again.status_code == 202, again.text
    assert (
        len(farm.client.get(f"/api/jobs/{again.json()['id']}", headers=farm.admin).json()["tasks"])
        == 20000
    )


@pytest.mark.parametrize(
    ("heartbeat_timeout", "task_timeout"),
    [(3.0, 3600.0), (3600.0, 3.0)],
    ids=["heartbeat-timeout", "no-progress-timeout"],
)
def test_a_worker_refused_while_the_disk_was_full_keeps_its_task_when_space_is_back(
    small_disk: Path, heartbeat_timeout: float, task_timeout: float
) -> None:
    """A disk-full spell twice the timeout, with the worker calling all along: every
    heartbeat was refused (507) and none recorded, yet the worker never went silent. When
    space comes back it is still online and its task still its own, not requeued
    ("stopped responding") or failed ("no progress"): it uploads and completes it, rather
    than being told (409) that the task is no longer its own and rendering it again."""
    timeout = min(heartbeat_timeout, task_timeout)
    settings = make_settings(
        small_disk / "data",
        heartbeat_timeout=heartbeat_timeout,
        task_timeout=task_timeout,
        reaper_interval=0.1,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert settings.admin_token and settings.runner_token
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)
        time.sleep(timeout + 0.2)  # past the manager's start-up grace
        runner, task = start_task(farm)
        beat = {"current_task_id": task["task_id"]}
        assert client.post("/api/runner/heartbeat", headers=runner, json=beat).status_code == 200

        filler = fill(small_disk)
        refused = set()
        until = time.monotonic() + 2 * timeout
        while time.monotonic() < until:  # the worker keeps calling
            refused.add(client.post("/api/runner/heartbeat", headers=runner, json=beat).status_code)
            time.sleep(0.2)
        assert refused == {507}
        filler.unlink()
        # Reaper passes (every 0.1 s) with room to write again, before the worker's next
        # call. Not much longer: the worker has one timeout from the last refusal, and
        # the test must not spend it on a loaded machine before it calls.
        time.sleep(0.5)

        def still_its_own() -> None:
            """A worker's heartbeat and progress report, told to keep going: the task was
            neither requeued nor failed. Between every two calls below, as a worker calls,
            so that a slow machine's requests never add up to a timeout."""
            beat_back = client.post("/api/runner/heartbeat", headers=runner, json=beat)
            assert beat_back.status_code == 200 and beat_back.json()["abort_task_ids"] == []
            said = client.post(
                f"/api/runner/tasks/{task['task_id']}/progress",
                headers=runner,
                json={"frames_done": 0},
            )
            assert said.status_code == 200 and said.json()["keep_going"] is True, said.text

        for frame in (1, 2):
            still_its_own()
            assert upload_frame(farm, runner, task, frame, png_bytes()).status_code == 201
        still_its_own()
        done = client.post(
            f"/api/runner/tasks/{task['task_id']}/complete",
            headers=runner,
            json={"frames": [1, 2]},
        )
        assert done.status_code == 200, done.text
        assert done.json()["job_status"] == "completed"
        job = client.get(f"/api/jobs/{task['job_id']}", headers=farm.admin).json()
        held = job["tasks"][0]
        assert (held["attempts"], held["last_error"]) == (1, None), "rendered once, not again"
        runners = client.get("/api/admin/runners", headers=farm.admin).json()
        assert runners[0]["status"] == "idle", runners
