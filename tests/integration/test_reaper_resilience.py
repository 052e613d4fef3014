"""The reaper's heartbeat timeouts keep working whatever a sleep schedule holds.

Clearing a runner's sleep schedule stored JSON `null`, which `IS NOT NULL` matched: the
reaper then met a "schedule" of None, its whole pass failed on every run, and from then
on no silent worker went offline and no task of a dead worker went back to the queue.
Now a cleared schedule is SQL NULL (migration 0014 mends rows written before), and each
of the reaper's steps runs on its own, so one that fails does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from farmhand.manager.app import create_app
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import Farm, make_settings, post_stand_in
from tests.integration.postgres import fresh_database, postgres_bin, postgres_server
from tests.old_schema import insert_old

HEARTBEAT_TIMEOUT = 2.0
"""Short for a test, long enough that a loaded machine does not let the runner go
silent between its registration and its claim."""

ALWAYS = {
    "timezone": "UTC",
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00",
                 "end": "24:00"}],
    "when": "now",
}  # fmt: skip


def _claimed_then_silent(farm: Farm) -> tuple[int, int]:
    """A job of one task, claimed by a runner that then never calls again."""
    answer = post_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1, chunk_size=1)
    assert answer.status_code == 202, answer.text
    silent = farm.register_runner("silent")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=silent)
    assert task.status_code == 200, task.text
    return int(answer.json()["id"]), int(task.json()["task_id"])


def _runner(farm: Farm, name: str) -> dict[str, Any]:
    runners = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return next(r for r in runners if r["name"] == name)


def _wait_offline(farm: Farm, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (runner := _runner(farm, name))["status"] != "offline":
        assert time.monotonic() < deadline, f"{name} never went offline: {runner}"
        time.sleep(0.1)
    return runner


@contextmanager
def _farm(tmp_path: Path) -> Iterator[tuple[ManagerSettings, Farm]]:
    """A manager in-process whose reaper runs often, with a short heartbeat timeout."""
    settings = make_settings(
        tmp_path / "data", heartbeat_timeout=HEARTBEAT_TIMEOUT, reaper_interval=0.1
    )
    with TestClient(create_app(settings)) as client:
        yield settings, Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


def test_a_silent_worker_goes_offline_after_a_sleep_schedule_was_cleared(
    tmp_path: Path,
) -> None:
    with _farm(tmp_path) as (settings, farm):
        client = farm.client
        farm.register_runner("artist")
        url = f"/api/admin/runners/{_runner(farm, 'artist')['id']}/sleep-schedule"
        assert client.put(url, headers=farm.admin, json=ALWAYS).json()["status"] == "asleep"
        cleared = client.put(url, headers=farm.admin, json={"windows": []})
        assert cleared.status_code == 200 and cleared.json()["sleep_schedule"] is None
        with make_engine(settings.resolved_database_url).connect() as connection:
            stored = connection.execute(text("SELECT sleep_schedule FROM workers")).all()
        assert stored == [(None,)], "no schedule is SQL NULL, not the JSON text 'null'"

        time.sleep(HEARTBEAT_TIMEOUT + 0.1)  # past the manager's start-up grace
        job_id, task_id = _claimed_then_silent(farm)
        _wait_offline(farm, "silent")
        task = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"][0]
        assert (task["id"], task["status"]) == (task_id, "queued")
        assert "stopped responding" in task["last_error"]


def test_a_schedule_the_reaper_cannot_read_does_not_stop_heartbeat_timeouts(
    tmp_path: Path,
) -> None:
    with _farm(tmp_path) as (settings, farm):
        client = farm.client
        farm.register_runner("odd")
        engine = make_engine(settings.resolved_database_url)
        with engine.begin() as connection:  # written by hand, or by a future version
            connection.execute(text("UPDATE workers SET sleep_schedule = '{\"windows\": 7}'"))
        time.sleep(HEARTBEAT_TIMEOUT + 0.1)
        job_id, _ = _claimed_then_silent(farm)
        deadline = time.monotonic() + 10
        query = text("SELECT status FROM workers WHERE name = 'silent'")
        while True:
            with engine.connect() as connection:
                status = connection.execute(query).scalar()
            if status == "offline":
                break
            assert time.monotonic() < deadline, f"never went offline: {status}"
            time.sleep(0.1)
        task = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"][0]
        assert task["status"] == "queued"
        engine.dispose()


def _a_worker_with_a_cleared_schedule_at_0013(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine, "0013")
    with engine.begin() as connection:
        insert_old(
            connection, "workers", name="w", secret_hash="0" * 64, capabilities={},
            registered_at=utcnow(), status="idle", admin_state="enabled", asleep=False,
        )  # fmt: skip
    with engine.begin() as connection:  # what clearing a schedule stored before 0014
        connection.execute(text("UPDATE workers SET sleep_schedule = 'null'"))
        stored = connection.execute(text("SELECT sleep_schedule IS NULL FROM workers")).scalar()
        assert not stored, "the old value is JSON text, not SQL NULL"
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT sleep_schedule IS NULL FROM workers")).scalar()
    engine.dispose()


def test_migration_0014_turns_a_stored_json_null_into_sql_null(tmp_path: Path) -> None:
    _a_worker_with_a_cleared_schedule_at_0013(f"sqlite:///{tmp_path / 'farm.sqlite3'}")


@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
@pytest.mark.xdist_group("postgres")
def test_migration_0014_on_postgres(tmp_path: Path) -> None:
    with postgres_server() as server:
        _a_worker_with_a_cleared_schedule_at_0013(fresh_database(server, f"sleep_{tmp_path.name}"))
