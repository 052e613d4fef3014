"""Text from the manager is printed as the characters it is, against a real manager.

Job names, failure reasons, task errors and a runner's give-back reason are written by
users and workers. `farmhand jobs` and `farmhand job` printed them as Rich markup: a job
named `shot[/v2] [red]final` crashed both (MarkupError, exit 1) for everyone who listed
it, and `[old]` in a task error's path vanished. A worker's give-back reason reached the
admin's terminal raw in `farmhand runners`: ESC sequences and newlines included.
"""

from __future__ import annotations

from typing import Any

import httpx
from typer.testing import CliRunner, Result

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm
from tests.integration.conftest import cli_api_fixture, farm_fixture, submit_stand_in

NAME = "shot[/v2] [red]final [bold]x[/] \\[y]"
"""Markup that does not close (`[/v2]`), styles that would swallow their tags, an escape."""
BROKEN = "cannot read /srv/proj/textures/[old]/wood.png: [Errno 2] [red]gone[/red]"
ESC = "\x1b"


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = farm_fixture(heartbeat_timeout=600.0)
api = cli_api_fixture()


def farmhand(*args: str) -> str:
    result: Result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output and ESC not in result.output, result.output
    return result.output


def runner(farm: LocalFarm, api: httpx.Client, name: str) -> dict[str, str]:
    registered = api.post("/api/runner/register", json={"token": farm.runner_token, "name": name})
    assert registered.status_code == 201, registered.text
    return {"Authorization": f"Bearer {registered.json()['secret']}"}


def claim(api: httpx.Client, worker: dict[str, str]) -> dict[str, Any]:
    answer = api.get("/api/runner/tasks", params={"wait": 0}, headers=worker)
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def test_a_job_named_with_markup_is_listed_and_shown_as_named(api: httpx.Client) -> None:
    job_id = submit_stand_in(api, name=NAME, frame_start=1, frame_end=2)
    assert api.get(f"/api/jobs/{job_id}").json()["name"] == NAME, "the manager keeps it"

    listed = farmhand("jobs")
    assert NAME in listed, listed
    shown = farmhand("job", str(job_id))
    assert f"job {job_id} {NAME!r} by admin" in shown, shown
    paused = farmhand("pause", str(job_id))
    assert f"job {job_id} {NAME!r}: paused" in paused, paused


def test_a_task_error_and_the_jobs_reason_are_shown_whole(
    farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(api, frame_start=1, frame_end=1, max_attempts=1)
    worker = runner(farm, api, "box")
    task = claim(api, worker)
    # A line of Blender's output that repaints the screen and tries to fake a new line.
    error = f"{BROKEN}{ESC}[2J{ESC}]0;pwned\x07\nnow: 100%"
    failed = api.post(
        f"/api/runner/tasks/{task['task_id']}/fail",
        headers=worker,
        json={"reason": error, "log_lines": []},
    )
    assert failed.status_code == 200, failed.text
    detail = api.get(f"/api/jobs/{job_id}").json()
    assert detail["status"] == "failed" and BROKEN in detail["status_reason"], detail

    shown = farmhand("job", str(job_id))
    reason = next(line for line in shown.splitlines() if line.startswith("reason: "))
    assert BROKEN in reason, shown
    assert "^[[2J^[]0;pwned^G now: 100%" in reason, "the controls made visible, on one line"
    row = next(line for line in shown.splitlines() if "box" in line)
    assert "/srv/proj/textures/[old]/wood.png" in row, shown
    assert "[Errno 2] [red]gone[/red]" in row, shown


def test_a_runners_give_back_reason_cannot_steer_the_terminal(
    farm: LocalFarm, api: httpx.Client
) -> None:
    submit_stand_in(api, frame_start=1, frame_end=1)
    worker = runner(farm, api, "box")
    task = claim(api, worker)
    reason = f"worker box cannot work: {ESC}[31mdisk [red]full{ESC}[0m\nrunner ok idle"
    released = api.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=worker, json={"reason": reason}
    )
    assert released.status_code == 200, released.text
    note = api.get("/api/admin/runners").json()[0]["status_note"]
    assert ESC in note and "\n" in note, "the manager keeps the worker's words as sent"

    listed = farmhand("runners")
    assert "cannot work: ^[[31mdisk [red]full^[[0m runner ok idle" in listed, listed
