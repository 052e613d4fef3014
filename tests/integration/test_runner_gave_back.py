"""A runner that gave its task back is not listed as plain `idle` until it takes another.

A worker whose machine cannot work (its disk full, its work dir not writable) gives the
task back (`POST /api/runner/tasks/{id}/release`, "worker NAME cannot work: …") and takes
no task for 30 s to 10 minutes while the fault lasts. `farmhand runners` and the web's
runners page showed it `idle`, as if ready for work; only the given-back task's
`last_error` said why. The manager now keeps the runner's last give-back (migration
0021) and its summary says it (`status_note`: `gave task 0 of job 1 back: cannot work:
…`) while it is idle and has been handed no task since; a worker that stops (gives its
task back, then signs off) or restarts is not said to have given anything back.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.auth.tokens import token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import Farm, make_settings, submit_stand_in, upload_frames
from tests.integration.postgres import fresh_database
from tests.integration.test_claim_next import claim
from tests.integration.test_runner_status_note import runners
from tests.integration.test_scheduling import farm_for
from tests.old_schema import insert_old

DISK_FULL = "[Errno 28] No space left on device: '/var/lib/farmhand/work/jobs/1/scene.blend'"


def release(farm: Farm, runner: dict[str, str], task: dict[str, Any], reason: str | None) -> None:
    body = {} if reason is None else {"reason": reason}
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=runner, json=body
    )
    assert answer.status_code == 200, answer.text


def index_of(farm: Farm, task: dict[str, Any]) -> int:
    detail = farm.client.get(f"/api/jobs/{task['job_id']}", headers=farm.admin).json()
    return int(next(t["index"] for t in detail["tasks"] if t["id"] == task["task_id"]))


def gave_back(farm: Farm, task: dict[str, Any], why: str) -> str:
    """The note the runners listing should show after `task` was given back for `why`."""
    return f"gave task {index_of(farm, task)} of job {task['job_id']} back: {why}"


def listed(farm: Farm, name: str) -> tuple[str, str | None]:
    runner = runners(farm)[name]
    return runner["status"], runner["status_note"]


def test_a_runner_that_gave_its_task_back_says_why_until_it_takes_another(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=4)
    box = farm.register_runner("box")
    other = farm.register_runner("other")
    task = claim(farm, box)
    assert task["job_id"] == job_id

    release(farm, box, task, f"worker box cannot work: {DISK_FULL}")

    # The runner's own name, which the row shows, is left out of the reason.
    note = gave_back(farm, task, f"cannot work: {DISK_FULL}")
    assert listed(farm, "box") == ("idle", note)
    assert listed(farm, "other") == ("idle", None)
    # The same in the summary an admin's action answers with.
    box_id = runners(farm)["box"]["id"]
    actions = f"/api/admin/runners/{box_id}/actions"
    disabled = farm.client.post(actions, headers=farm.admin, json={"action": "disable"}).json()
    assert (disabled["status"], disabled["status_note"]) == ("disabled", None)
    enabled = farm.client.post(actions, headers=farm.admin, json={"action": "enable"}).json()
    assert (enabled["status"], enabled["status_note"]) == ("idle", note)
    # Another runner taking the task back from the queue changes nothing for `box`.
    taken = claim(farm, other)
    assert taken["task_id"] == task["task_id"]
    assert listed(farm, "box") == ("idle", note)

    # Handed a task again, it works: busy, then idle with nothing more to say.
    again = claim(farm, box)
    assert listed(farm, "box") == ("busy", None)
    upload_frames(farm, box, again)
    done = farm.client.post(
        f"/api/runner/tasks/{again['task_id']}/complete",
        headers=box,
        json={"frames": again["frames"]},
    )
    assert done.status_code == 200, done.text
    assert listed(farm, "box") == ("idle", None)

    # A task it failed since counts as one it was handed (the failed task, back in the
    # queue, no longer names it).
    third = claim(farm, box)
    release(farm, box, third, "box's own words: the scratch disk is read-only")
    assert listed(farm, "box") == (
        "idle",
        gave_back(farm, third, "box's own words: the scratch disk is read-only"),
    )
    fourth = claim(farm, box)
    failed = farm.client.post(
        f"/api/runner/tasks/{fourth['task_id']}/fail",
        headers=box,
        json={"reason": "Blender crashed", "log_lines": []},
    )
    assert failed.status_code == 200, failed.text
    assert listed(farm, "box") == ("idle", None)


@pytest.mark.parametrize("then", ["deleted", "requeued", "failure forgiven"])
def test_work_since_a_give_back_counts_after_its_job_forgets_it(farm: Farm, then: str) -> None:
    """A runner gives a task of job A back, then works on job B (completes a task, or
    fails one); then job B is deleted, or requeued whole by a person (which forgets who
    ran its tasks and their failures). The give-back used to come back into the runners
    listing, hours later, of a runner that had worked fine since."""
    first = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    box = farm.register_runner("box")
    given = claim(farm, box)
    assert given["job_id"] == first
    release(farm, box, given, f"worker box cannot work: {DISK_FULL}")
    act(farm, first, "pause")
    second = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    worked = claim(farm, box)
    assert worked["job_id"] == second
    if then == "failure forgiven":
        failed = farm.client.post(
            f"/api/runner/tasks/{worked['task_id']}/fail",
            headers=box,
            json={"reason": "Blender crashed", "log_lines": []},
        )
        assert failed.status_code == 200, failed.text
    else:
        upload_frames(farm, box, worked)
        done = farm.client.post(
            f"/api/runner/tasks/{worked['task_id']}/complete",
            headers=box,
            json={"frames": worked["frames"]},
        )
        assert done.status_code == 200, done.text
    assert listed(farm, "box") == ("idle", None)

    if then == "deleted":
        gone = farm.client.delete(f"/api/jobs/{second}?purge=true", headers=farm.admin)
        assert gone.status_code in (200, 204), gone.text
    else:
        act(farm, second, "requeue-all")
        act(farm, second, "pause")

    assert listed(farm, "box") == ("idle", None)


def act(farm: Farm, job_id: int, action: str) -> None:
    answer = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": action}
    )
    assert answer.status_code == 200, answer.text


def test_a_give_back_of_a_deleted_job_names_no_internal_id(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    box = farm.register_runner("box")
    release(farm, box, claim(farm, box), f"worker box cannot work: {DISK_FULL}")
    gone = farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=farm.admin)
    assert gone.status_code in (200, 204), gone.text

    assert listed(farm, "box") == (
        "idle",
        f"gave a task of a deleted job back: cannot work: {DISK_FULL}",
    )


def test_a_long_reason_is_cut_at_a_word(farm: Farm) -> None:
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    box = farm.register_runner("box")
    task = claim(farm, box)
    release(farm, box, task, "worker box cannot work: " + "the disk is full " * 40)

    _, note = listed(farm, "box")

    assert note is not None
    start = gave_back(farm, task, "cannot work: the disk is full the disk")
    assert note.startswith(start), note
    kept, ellipsis = note.rsplit(" ", 1)
    assert ellipsis == "…", note
    assert kept.rsplit(" ", 1)[1] in ("the", "disk", "is", "full"), "cut inside a word"
    assert len(note) <= len(start) + 100, note


def test_a_stopping_runner_is_not_said_to_have_given_work_back(farm: Farm) -> None:
    """A worker stopping releases its task ("worker shutting down"), then signs off: it
    is offline, with no note, and back online (a restart) it is plain idle."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2)
    box = farm.register_runner("box")
    task = claim(farm, box)

    release(farm, box, task, None)
    # Between the two (or killed before it could sign off), that is what happened.
    assert listed(farm, "box") == ("idle", gave_back(farm, task, "worker shutting down"))
    assert farm.client.post("/api/runner/sign-off", headers=box).status_code == 204
    assert listed(farm, "box") == ("offline", None)

    beat = farm.client.post("/api/runner/heartbeat", headers=box, json={})
    assert beat.status_code == 200, beat.text
    assert listed(farm, "box") == ("idle", None)


def test_a_restarted_runner_is_not_said_to_have_given_work_back(farm: Farm) -> None:
    """Killed after a fault and started again, a worker says so in its first heartbeat:
    what its earlier run gave back says nothing of this one."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2)
    box = farm.register_runner("box")
    task = claim(farm, box)
    release(farm, box, task, f"worker box cannot work: {DISK_FULL}")
    assert listed(farm, "box")[1] is not None

    beat = farm.client.post("/api/runner/heartbeat", headers=box, json={"starting": True})

    assert beat.status_code == 200, beat.text
    assert listed(farm, "box") == ("idle", None)


def test_two_managers_on_one_database_agree(tmp_path: Path) -> None:
    """The give-back is in the database, so every process (`--processes 2`) or manager
    sharing it lists it, whichever took the release."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first = make_settings(tmp_path / "one", database_url=url)
    second = make_settings(
        tmp_path / "two",
        database_url=url,
        admin_token=first.admin_token,
        runner_token=first.runner_token,
    )
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as two:
        farm = Farm(one, str(first.admin_token), str(first.runner_token), first.data_dir)
        other = Farm(two, str(first.admin_token), str(first.runner_token), second.data_dir)
        submit_stand_in(one, farm.admin, frame_start=1, frame_end=1)
        box = farm.register_runner("box")
        task = claim(farm, box)
        release(farm, box, task, f"worker box cannot work: {DISK_FULL}")
        assert listed(other, "box") == ("idle", gave_back(farm, task, f"cannot work: {DISK_FULL}"))


def made_before_0021(database_url: str) -> str:
    """A database at revision 0020 with one runner that holds a task of one job; that
    runner's secret."""
    secret = f"fh_run_{secrets.token_urlsafe(32)}"
    engine = make_engine(database_url)
    upgrade(engine, "0020")
    now = utcnow()
    with engine.begin() as connection:
        worker_id = insert_old(
            connection, "workers", name="veteran", secret_hash=token_hash(secret),
            capabilities={"protocol": 1}, registered_at=now, last_heartbeat=now,
            status="idle", admin_state="enabled", asleep=False,
        )  # fmt: skip
        user_id = insert_old(
            connection, "users", name="ana", role="user", created_at=now, session_epoch=0,
        )  # fmt: skip
        job_id = insert_old(
            connection, "jobs", name="old job", owner_id=user_id, type="animation",
            status="active", priority=50, settings={}, main_file="scene.blend",
            created_at=now, started_at=now,
        )  # fmt: skip
        insert_old(
            connection, "tasks", job_id=job_id, index=0, type="render", status="active",
            frames=[1], frames_done=0, worker_id=worker_id, attempts=1, failures=0,
            render_seconds=0.0, started_at=now, progress_at=now,
        )  # fmt: skip
    engine.dispose()
    return secret


def check_upgrade(settings: ManagerSettings, secret: str) -> None:
    """Upgraded at start, the old runner is busy with no note, and its give-back (the
    task it held from before the upgrade) is said."""
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, str(settings.admin_token), str(settings.runner_token), Path("."))
        runner = {"Authorization": f"Bearer {secret}"}
        assert listed(farm, "veteran") == ("busy", None)
        beat = client.post("/api/runner/heartbeat", headers=runner, json={"current_task_id": 1})
        assert beat.json()["abort_task_ids"] == [], beat.text
        task = {"task_id": 1, "job_id": 1}
        release(farm, runner, task, f"worker veteran cannot work: {DISK_FULL}")
        assert listed(farm, "veteran") == (
            "idle",
            f"gave task 0 of job 1 back: cannot work: {DISK_FULL}",
        )


def test_a_database_made_before_0021_upgrades_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    secret = made_before_0021(url)
    check_upgrade(make_settings(tmp_path / "data", database_url=url), secret)


@pytest.fixture
def pg_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    yield fresh_database(postgres_url, f"gaveback_{tmp_path.name}")


@pytest.mark.xdist_group("postgres")
def test_a_database_made_before_0021_upgrades_on_postgres(tmp_path: Path, pg_url: str) -> None:
    secret = made_before_0021(pg_url)
    check_upgrade(make_settings(tmp_path / "data", database_url=pg_url), secret)


@pytest.mark.xdist_group("postgres")
def test_a_runner_that_gave_its_task_back_on_postgres(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=pg_url)
    with TestClient(create_app(settings)) as client:
        test_a_runner_that_gave_its_task_back_says_why_until_it_takes_another(
            farm_for(client, settings)
        )
