"""Runner credentials: registration tokens (expiry, uses, revocation), runner revocation,
and a runner's reach (runner routes only, and only the files of tasks it holds)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, text, update

from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import RunnerRegistrationToken, Worker
from tests.integration.conftest import Farm, png_bytes, submit_stand_in


def new_reg_token(farm: Farm, **body: object) -> tuple[int, str]:
    answer = farm.client.post("/api/admin/runner-tokens", headers=farm.admin, json=body)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["token"]["id"]), str(answer.json()["secret"])


def register(farm: Farm, secret: str, name: str = "w") -> int:
    answer: httpx.Response = farm.client.post(
        "/api/runner/register", json={"token": secret, "name": name}
    )
    return answer.status_code


def token_row(farm: Farm, token_id: int) -> dict[str, object]:
    rows = farm.client.get("/api/admin/runner-tokens", headers=farm.admin).json()
    return next(row for row in rows if row["id"] == token_id)


def test_a_single_use_token_admits_one_runner(farm: Farm) -> None:
    token_id, secret = new_reg_token(farm, max_uses=1)
    assert register(farm, secret, "first") == 201
    second = farm.client.post("/api/runner/register", json={"token": secret, "name": "second"})
    assert second.status_code == 401
    assert "used up" in second.json()["detail"]
    row = token_row(farm, token_id)
    assert (row["uses"], row["max_uses"], row["active"]) == (1, 1, False)


def test_a_multi_use_token_admits_its_count_then_no_more(farm: Farm) -> None:
    token_id, secret = new_reg_token(farm, max_uses=3)
    assert [register(farm, secret, f"w{i}") for i in range(4)] == [201, 201, 201, 401]
    assert token_row(farm, token_id)["uses"] == 3
    _, unlimited = new_reg_token(farm, max_uses=None)
    assert {register(farm, unlimited, f"u{i}") for i in range(5)} == {201}


def test_an_expired_token_admits_no_one(farm: Farm) -> None:
    token_id, secret = new_reg_token(farm, expires_in_hours=1)
    assert register(farm, secret) == 201
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        session.execute(
            update(RunnerRegistrationToken)
            .where(RunnerRegistrationToken.id == token_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert register(farm, secret) == 401
    assert token_row(farm, token_id)["active"] is False


def test_a_revoked_token_admits_no_one_but_its_runners_keep_working(farm: Farm) -> None:
    token_id, secret = new_reg_token(farm)
    answer = farm.client.post("/api/runner/register", json={"token": secret, "name": "w"})
    runner = {"Authorization": f"Bearer {answer.json()['secret']}"}
    assert (
        farm.client.delete(f"/api/admin/runner-tokens/{token_id}", headers=farm.admin).status_code
        == 200
    )
    assert register(farm, secret) == 401
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json={}).status_code == 200


def test_a_revoked_runner_is_locked_out_at_once(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    runner = farm.register_runner("doomed")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert farm.client.get(f"/api/runner/files/{job_id}/scene.blend", headers=runner).is_success
    worker_id = farm.client.get("/api/admin/runners", headers=farm.admin).json()[0]["id"]
    gone = farm.client.delete(f"/api/admin/runners/{worker_id}", headers=farm.admin)
    assert gone.status_code == 204
    for method, path in (
        ("POST", "/api/runner/heartbeat"),
        ("GET", "/api/runner/tasks?wait=0"),
        ("GET", f"/api/runner/files/{job_id}/scene.blend"),
        ("POST", f"/api/runner/tasks/{task['task_id']}/release"),
    ):
        answer = farm.client.request(method, path, headers=runner, json={"reason": "x"})
        assert answer.status_code == 401, (path, answer.text)
    # Its task went back to the queue for someone else.
    other = farm.register_runner("heir")
    again = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=other)
    assert again.json()["task_id"] == task["task_id"]


def test_runner_secrets_are_stored_hashed(farm: Farm) -> None:
    answer = farm.client.post(
        "/api/runner/register", json={"token": farm.runner_token, "name": "w"}
    )
    secret = answer.json()["secret"]
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.read() as session:
        stored = session.scalar(select(Worker.secret_hash))
        dump = "\n".join(
            str(row)
            for table in ("workers", "runner_registration_tokens", "api_tokens")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        )
    assert stored and stored != secret
    assert secret not in dump and farm.runner_token not in dump and farm.admin_token not in dump


def test_a_runner_reads_only_the_files_of_tasks_it_holds(farm: Farm) -> None:
    first = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    second = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    holder, idle = farm.register_runner("holder"), farm.register_runner("idle")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=holder).json()
    held = task["job_id"]
    other_job = second if held == first else first
    assert farm.client.get(f"/api/runner/files/{held}/scene.blend", headers=holder).is_success
    assert farm.client.get(f"/api/runner/files/{held}/scene.blend", headers=idle).status_code == 404
    assert (
        farm.client.get(f"/api/runner/files/{other_job}/scene.blend", headers=holder).status_code
        == 404
    )
    # Uploads: only for its own task, of that task's job and frames.
    frame = {"file": ("0001.png", png_bytes(), "image/png")}
    upload = f"/api/runner/files/{held}/upload"
    data = {"task_id": str(task["task_id"]), "frame": "1"}
    assert farm.client.post(upload, headers=idle, data=data, files=frame).status_code == 409
    wrong_job = f"/api/runner/files/{other_job}/upload"
    assert farm.client.post(wrong_job, headers=holder, data=data, files=frame).status_code == 400
    wrong_frame = {**data, "frame": "7"}
    assert (
        farm.client.post(upload, headers=holder, data=wrong_frame, files=frame).status_code == 400
    )
    assert farm.client.post(upload, headers=holder, data=data, files=frame).status_code == 201
    # Rendered frames (what a video task reads) are no exception.
    frames = f"/api/runner/files/{held}/frames/0001.png?kind=output"
    assert farm.client.get(frames, headers=holder).is_success
    assert farm.client.get(frames, headers=idle).status_code == 404
    # Once the task is given back, its files are out of reach.
    released = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=holder, json={"reason": "bye"}
    )
    assert released.status_code == 200, released.text
    assert (
        farm.client.get(f"/api/runner/files/{held}/scene.blend", headers=holder).status_code == 404
    )
    assert farm.client.post(upload, headers=holder, data=data, files=frame).status_code == 409
    assert farm.client.get(frames, headers=holder).status_code == 404


def test_runner_and_people_credentials_do_not_cross(farm: Farm) -> None:
    runner = farm.register_runner()
    assert farm.client.get("/api/jobs", headers=runner).status_code == 401
    assert farm.client.get("/api/admin/runners", headers=runner).status_code == 401
    assert farm.client.post("/api/runner/heartbeat", headers=farm.admin, json={}).status_code == 401
    registration = {"Authorization": f"Bearer {farm.runner_token}"}
    assert (
        farm.client.post("/api/runner/heartbeat", headers=registration, json={}).status_code == 401
    )
    assert farm.client.get("/api/jobs", headers=registration).status_code == 401


def _named(farm: Farm, name: str) -> list[dict[str, Any]]:
    rows = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return [row for row in rows if row["name"] == name]


def _fall_silent(farm: Farm, worker_id: int, seconds: float) -> None:
    """What the reaper records for a runner unheard of for `seconds`."""
    context = farm.client.app.state.farm  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        session.execute(
            update(Worker)
            .where(Worker.id == worker_id)
            .values(status="offline", last_heartbeat=utcnow() - timedelta(seconds=seconds))
        )


def test_a_machine_that_registers_again_takes_over_its_offline_record(farm: Farm) -> None:
    """A reinstalled render node (its credentials lost) comes back as the same runner:
    what admins set on it holds, its old secret stops working, and no ghost is left."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    old = farm.register_runner("render-07")
    [before] = _named(farm, "render-07")
    worker_id = before["id"]
    disabled = farm.client.post(
        f"/api/admin/runners/{worker_id}/actions",
        headers=farm.admin,
        json={"action": "disable", "when": "now"},
    )
    assert disabled.status_code == 200, disabled.text
    schedule = {"timezone": "UTC", "windows": [{"days": ["sat"], "start": "00:00", "end": "24:00"}]}
    put = farm.client.put(
        f"/api/admin/runners/{worker_id}/sleep-schedule", headers=farm.admin, json=schedule
    )
    assert put.status_code == 200, put.text
    assert farm.client.post("/api/runner/heartbeat", headers=old, json={}).status_code == 200
    _fall_silent(farm, worker_id, 120)

    new = farm.register_runner("render-07")

    [after] = _named(farm, "render-07")
    assert after["id"] == worker_id and after["admin_state"] == "disabled"
    assert after["sleep_schedule"]["windows"] == schedule["windows"]
    assert after["status"] == "disabled", "heard from again, and still disabled"
    assert farm.client.post("/api/runner/heartbeat", headers=old, json={}).status_code == 401
    assert farm.client.post("/api/runner/heartbeat", headers=new, json={}).status_code == 200
    nothing = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=new)
    assert nothing.status_code == 204, "a disabled runner takes no work"


def test_a_namesake_that_may_be_alive_is_never_displaced(farm: Farm) -> None:
    """Two machines that share a name both work; an offline runner heard from within the
    last minute (a manager process may still honour its secret) keeps its record too."""
    first = farm.register_runner("twin")
    second = farm.register_runner("twin")
    assert len(_named(farm, "twin")) == 2, "an online namesake is not taken over"
    first_id = min(row["id"] for row in _named(farm, "twin"))
    _fall_silent(farm, first_id, 10)
    third = farm.register_runner("twin")
    assert len(_named(farm, "twin")) == 3
    for runner in (first, second, third):
        assert farm.client.post("/api/runner/heartbeat", headers=runner, json={}).status_code == 200
