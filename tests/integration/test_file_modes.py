"""What another account on the manager's machine can read: nothing of the farm's.

The database holds argon2 password hashes, e-mail addresses and job names; task logs hold
what renders printed. With the usual umask (022) SQLite and plain `open` would make them
0644, readable by every local account. These tests run a real manager under that umask
and look at the modes, as `ls -l` shows them to someone checking their machine.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.db.engine import private_sqlite_files
from tests.integration.conftest import Farm, make_settings, submit_stand_in

DATABASE = "farmhand.sqlite3"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def logged_task(farm: Farm) -> tuple[int, int]:
    """A job whose task's runner sent log lines; (job id, task id), the log written."""
    job_id = submit_stand_in(farm.client, farm.admin)
    runner = farm.register_runner()
    task: dict[str, Any] = farm.client.get(
        "/api/runner/tasks", params={"wait": 0}, headers=runner
    ).json()
    reply = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/progress",
        headers=runner,
        json={"frames_done": 0, "log_lines": ["Fra:1 Mem:12M | Rendering /home/ana/shot.blend"]},
    )
    assert reply.status_code == 200, reply.text
    log = farm.client.get(f"/api/jobs/{job_id}/tasks/{task['task_id']}/log", headers=farm.admin)
    assert "shot.blend" in log.text  # read back: it is on disk now
    return job_id, int(task["task_id"])


def private_files(data: Path, job_id: int, task_id: int) -> dict[str, int]:
    """The modes of the database's files and of the task's log and its folders."""
    names = [DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"]
    found = {name: mode(data / name) for name in names if (data / name).exists()}
    for relative in ("logs", f"logs/job-{job_id}", f"logs/job-{job_id}/task-{task_id}.log"):
        found[relative] = mode(data / relative)
    return found


def test_a_new_farm_keeps_its_database_and_task_logs_to_itself(tmp_path: Path) -> None:
    before = mode(tmp_path)
    settings = make_settings(tmp_path / "farm" / "data")
    with TestClient(create_app(settings)) as client:
        farm = Farm(
            client, settings.admin_token or "", settings.runner_token or "", settings.data_dir
        )
        job_id, task_id = logged_task(farm)
        modes = private_files(settings.data_dir, job_id, task_id)
    assert {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"} <= modes.keys(), "WAL mode"
    assert modes == {
        DATABASE: 0o600,
        f"{DATABASE}-wal": 0o600,
        f"{DATABASE}-shm": 0o600,
        "logs": 0o700,
        f"logs/job-{job_id}": 0o700,
        f"logs/job-{job_id}/task-{task_id}.log": 0o600,
    }
    assert mode(settings.data_dir) == 0o700, "a data dir the manager made is its alone"
    assert mode(tmp_path) == before, "the folder it was made in is left as it was"


def test_files_an_older_version_left_readable_are_made_private_at_start(tmp_path: Path) -> None:
    """A data dir of an older version: everything 0644/0755. The next start tightens the
    database and the logs; the data dir, which the person may have chosen and set up,
    keeps its mode."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    settings = make_settings(data)
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, settings.admin_token or "", settings.runner_token or "", data)
        job_id, task_id = logged_task(farm)
    for path in [data / DATABASE, data / "logs", *(data / "logs").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    with TestClient(create_app(make_settings(data))) as client:
        assert client.get("/healthz").status_code == 200
        modes = private_files(data, job_id, task_id)
    assert set(modes.values()) <= {0o600, 0o700}, modes
    assert modes[DATABASE] == 0o600 and modes[f"logs/job-{job_id}/task-{task_id}.log"] == 0o600
    assert mode(data) == 0o755


def test_a_databases_wal_and_shm_left_readable_are_tightened(tmp_path: Path) -> None:
    database = tmp_path / DATABASE
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").touch(mode=0o644)
        os.chmod(f"{database}{suffix}", 0o644)
    private_sqlite_files(database)
    assert [mode(Path(f"{database}{s}")) for s in ("", "-wal", "-shm")] == [0o600] * 3
