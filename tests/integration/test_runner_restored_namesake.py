"""A machine registering again after its manager was restored from an older backup.

The restored database still has the machine's runner as it was at the backup: busy or
idle, not offline, with the admin's settings, and the secret of the backup's time. The
machine's newer secret is unknown (401), so it registers again, within a second of the
manager's start, before any reaper pass (whose clock does not count the time the manager
was down). It must take over its restored record, not come back as a second runner of
the same name beside an offline ghost. The restore is simulated without pg_dump: the
record's last heartbeat is set back as a restored database would have it, its status
left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from farmhand.localfarm import local_farm
from farmhand.manager.app import create_app
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import Worker
from farmhand.manager.settings import ManagerSettings
from farmhand.shared.schemas import RunnerInfo
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.waiting import wait_for

HEARTBEAT_TIMEOUT = 30.0


def _farm(tmp_path: Path, heartbeat_timeout: float) -> Iterator[Farm]:
    # No reaper pass runs in these tests (the first would come after an hour): the
    # registration must find the record as the restored database has it, busy or idle.
    settings = make_settings(
        tmp_path / "data", heartbeat_timeout=heartbeat_timeout, reaper_interval=3600.0
    )
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    yield from _farm(tmp_path, HEARTBEAT_TIMEOUT)


def _named(farm: Farm, name: str) -> list[dict[str, Any]]:
    rows = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return [row for row in rows if row["name"] == name]


def _restored(farm: Farm, worker_id: int, heard_seconds_ago: float) -> None:
    """What a database restored from a backup taken `heard_seconds_ago` holds: the last
    heartbeat of that time, and the status it had then (busy or idle, not offline)."""
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        session.execute(
            update(Worker)
            .where(Worker.id == worker_id)
            .values(last_heartbeat=utcnow() - timedelta(seconds=heard_seconds_ago))
        )


def _task(farm: Farm, job_id: int) -> dict[str, Any]:
    answer = farm.client.get(f"/api/jobs/{job_id}/tasks", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    [task] = answer.json()
    return dict(task)


def _act(farm: Farm, worker_id: int, action: str, when: str) -> None:
    answer = farm.client.post(
        f"/api/admin/runners/{worker_id}/actions",
        headers=farm.admin,
        json={"action": action, "when": when},
    )
    assert answer.status_code == 200, answer.text


def test_a_busy_restored_record_is_taken_over_and_its_task_requeued(farm: Farm) -> None:
    """Case A: the runner was rendering at the backup, and an admin had it drain. Its
    machine takes over the record (same id, still draining), and the task the record
    held goes back to the queue for another runner, neither lost nor left active with
    no worker."""
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    old = farm.register_runner("w2")
    claimed = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=old)
    assert claimed.status_code == 200, claimed.text
    [before] = _named(farm, "w2")
    assert before["status"] == "busy"
    _act(farm, before["id"], "drain", "after-task")
    _restored(farm, before["id"], 120)

    new = farm.register_runner("w2")

    named = _named(farm, "w2")
    assert len(named) == 1, "the machine came back as a second runner named w2"
    [after] = named
    assert after["id"] == before["id"], "one runner named w2: its record, taken over"
    assert after["admin_state"] == "draining", "what the admin set still holds"
    task = _task(farm, job_id)
    assert (task["status"], task["worker"]) == ("queued", None)
    assert "w2 stopped responding" in task["last_error"]
    assert farm.client.post("/api/runner/heartbeat", headers=old, json={}).status_code == 401
    drained = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=new)
    assert drained.status_code == 204, "a draining runner with nothing to finish takes no work"
    other = farm.register_runner("w3")
    again = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=other)
    assert again.status_code == 200, "the task is back in the queue"
    assert again.json()["task_id"] == task["id"]


def test_a_disabled_idle_restored_record_is_taken_over_still_disabled(farm: Farm) -> None:
    """Case B: an idle runner an admin disabled. After the restore its machine comes back
    as that runner, still disabled, so it takes no work, and no ghost of it is left."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    old = farm.register_runner("w2")
    [before] = _named(farm, "w2")
    _act(farm, before["id"], "disable", "now")
    assert farm.client.post("/api/runner/heartbeat", headers=old, json={}).status_code == 200
    _restored(farm, before["id"], 120)
    assert _named(farm, "w2")[0]["status"] == "disabled", "not offline: no reaper pass yet"

    new = farm.register_runner("w2")

    named = _named(farm, "w2")
    assert len(named) == 1, "the machine came back as a second runner named w2"
    [after] = named
    assert (after["id"], after["admin_state"], after["status"]) == (
        before["id"],
        "disabled",
        "disabled",
    )
    nothing = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=new)
    assert nothing.status_code == 204, "the admin's disable applies to the machine"


@pytest.mark.parametrize(
    ("heartbeat_timeout", "heard_seconds_ago", "why"),
    [
        (600.0, 120, "heard from within the heartbeat timeout: it may be alive"),
        (HEARTBEAT_TIMEOUT, 45, "within a minute another process may still honour its secret"),
    ],
)
def test_a_namesake_that_may_still_be_alive_keeps_its_record(
    tmp_path: Path, heartbeat_timeout: float, heard_seconds_ago: float, why: str
) -> None:
    """Two machines may share a name: the one whose runner is not gone by the heartbeat's
    rule (nor quiet for the runner-id cache's minute) keeps its row and its task; the
    newcomer gets a row of its own."""
    for farm in _farm(tmp_path, heartbeat_timeout):
        job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
        first = farm.register_runner("w2")
        claimed = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=first)
        assert claimed.status_code == 200, claimed.text
        [before] = _named(farm, "w2")
        _restored(farm, before["id"], heard_seconds_ago)

        second = farm.register_runner("w2")

        assert len(_named(farm, "w2")) == 2, why
        task = _task(farm, job_id)
        assert (task["status"], task["worker"]) == ("active", "w2"), "its task is still its own"
        for runner in (first, second):
            heartbeat = farm.client.post("/api/runner/heartbeat", headers=runner, json={})
            assert heartbeat.status_code == 200


@pytest.mark.blender
@pytest.mark.slow
def test_a_worker_comes_back_as_its_restored_disabled_runner(tmp_path: Path) -> None:
    """Case B end to end: a real worker, an admin disables its runner, the manager stops
    and its database is put back as an older backup has it (an older secret, the
    heartbeat of that time, the runner still idle). On the restarted manager the worker's
    secret is unknown, it registers again by itself and is the same runner, disabled."""
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w2", blender="bpy")
        with farm.client() as client:
            runner = wait_for(
                lambda: next((r for r in client.list_runners() if r.name == "w2"), None),
                60,
                "the worker to register",
            )
            client.runner_action(runner.id, "disable", "now")
        assert farm.manager is not None
        farm.manager.stop()

        db = Database(ManagerSettings(data_dir=farm.data_dir).resolved_database_url)
        try:
            with db.transaction() as session:
                session.execute(
                    update(Worker)
                    .where(Worker.id == runner.id)
                    .values(
                        secret_hash=token_hash(new_token("runner")),
                        last_heartbeat=utcnow() - timedelta(seconds=120),
                        status="idle",
                    )
                )
        finally:
            db.dispose()
        restarted = utcnow()
        farm.start_manager()

        def heard_again() -> list[RunnerInfo] | None:
            with farm.client() as client:
                named = [r for r in client.list_runners() if r.name == "w2"]
            back = any(r.last_heartbeat and r.last_heartbeat > restarted for r in named)
            return named if back else None

        named = wait_for(heard_again, 60, "the worker to be heard from after the restart")
        assert [(r.id, r.admin_state, r.status) for r in named] == [
            (runner.id, "disabled", "disabled")
        ], "one runner named w2, its restored record, still disabled"
