"""`farmhand pause | resume | requeue | priority | delete | task | runners | runner |
blocklist` against a real manager process.

The commands run in-process (`CliRunner`, as `farmhand` would with FARMHAND_URL and
FARMHAND_TOKEN set), runners are scripted HTTP calls as in test_scheduling.py, and every
effect is checked through the API, not only in what the command prints. One manager
serves the module; after each test every job and runner is removed, so a runner's claim
only ever sees the jobs of its own test.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from farmhand.cli.app import app
from farmhand.cli.runners_cmd import format_days, parse_window
from farmhand.client import FarmhandClient
from farmhand.localfarm import LocalFarm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import cli_api_fixture, farm_fixture, png_bytes, submit_stand_in
from tests.integration.farmhand_cli import cli

BLOCKLIST_THRESHOLD = 2


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = farm_fixture("--blocklist-threshold", str(BLOCKLIST_THRESHOLD), heartbeat_timeout=600.0)
api = cli_api_fixture()


def farmhand(*args: str, answer: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=answer)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def refused(result: Result, *words: str) -> str:
    """Exit 1 with one red `error:` line saying `words`; never a traceback."""
    assert result.exit_code == 1, result.output
    # An uncaught exception also exits 1 under CliRunner: it must be the CLI's own exit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def submit(api: httpx.Client, frames: str = "1-3", **settings: Any) -> int:
    start, end = frames.split("-")
    body = {"frame_start": int(start), "frame_end": int(end), "chunk_size": 1, **settings}
    return submit_stand_in(api, **body)


def job(api: httpx.Client, job_id: int) -> dict[str, Any]:
    answer = api.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def statuses(api: httpx.Client, job_id: int) -> list[str]:
    return [task["status"] for task in sorted(job(api, job_id)["tasks"], key=lambda t: t["index"])]


def register(api: httpx.Client, farm: LocalFarm, name: str, **caps: Any) -> dict[str, str]:
    answer = api.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": name,
            "capabilities": {"protocol": WORKER_PROTOCOL, **caps},
        },
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def runners(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {runner["name"]: runner for runner in api.get("/api/admin/runners").json()}


def claim(api: httpx.Client, who: dict[str, str]) -> dict[str, Any]:
    answer = api.get("/api/runner/tasks", params={"wait": 0}, headers=who)
    assert answer.status_code == 200, f"{answer.status_code}: nothing to claim"
    return answer.json()  # type: ignore[no-any-return]


def finish(api: httpx.Client, who: dict[str, str], task: dict[str, Any]) -> None:
    for frame in task["frames"]:
        api.post(
            f"/api/runner/files/{task['job_id']}/upload",
            headers=who,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": (f"{frame}.png", png_bytes(), "image/png")},
        ).raise_for_status()
    api.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=who,
        json={"frames": task["frames"]},
    ).raise_for_status()


def fail(api: httpx.Client, who: dict[str, str], task: dict[str, Any]) -> None:
    api.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=who, json={"reason": "boom"}
    ).raise_for_status()


# ------------------------------------------------------------------------------ jobs


def test_pause_resume_and_priority(api: httpx.Client) -> None:
    job_id = submit(api)
    ok(farmhand("pause", str(job_id)))
    assert job(api, job_id)["status"] == "paused"
    ok(farmhand("resume", str(job_id)))
    assert job(api, job_id)["status"] == "queued"
    refused(farmhand("resume", str(job_id)), "not paused", "409")

    assert "priority 80" in ok(farmhand("priority", str(job_id), "80"))
    assert job(api, job_id)["priority"] == 80
    assert farmhand("priority", str(job_id), "101").exit_code == 2, "0 to 100"
    assert job(api, job_id)["priority"] == 80

    refused(farmhand("pause", "999999"), "job 999999 not found")
    ok(farmhand("cancel", str(job_id)))
    refused(farmhand("pause", str(job_id)), "canceled", "only unfinished jobs pause")


def test_requeue_failed_only_then_all(api: httpx.Client, farm: LocalFarm) -> None:
    job_id = submit(api, max_attempts=1)
    worker = register(api, farm, "requeuer")
    finish(api, worker, claim(api, worker))
    fail(api, worker, claim(api, worker))
    assert statuses(api, job_id) == ["completed", "failed", "canceled"]
    said = ok(farmhand("requeue", str(job_id), "--failed-only"))
    assert "(2 tasks requeued)" in said, said  # the failed one, and the one it canceled
    assert statuses(api, job_id) == ["completed", "queued", "queued"]
    said = ok(farmhand("requeue", str(job_id)))
    assert said.strip().endswith(": queued (1 task requeued)"), said  # the completed one
    assert statuses(api, job_id) == ["queued", "queued", "queued"]
    assert job(api, job_id)["status"] == "queued"
    said = ok(farmhand("requeue", str(job_id)))
    assert said.startswith(f"nothing to requeue: job {job_id} "), said
    assert "has no finished tasks; it is queued" in said, said


def test_requeue_failed_only_says_when_no_task_failed(api: httpx.Client, farm: LocalFarm) -> None:
    """A completed job with no failed task: the requeue does nothing and says so,
    rather than answer the job's state as if it had done something (exit 0 still)."""
    job_id = submit(api, "1-1", name="shot010")
    worker = register(api, farm, "renderer")
    finish(api, worker, claim(api, worker))
    said = ok(farmhand("requeue", str(job_id), "--failed-only"))
    assert said.strip() == (
        f"nothing to requeue: job {job_id} 'shot010' has no failed or canceled tasks; "
        "it is completed"
    )
    assert statuses(api, job_id) == ["completed"]
    assert job(api, job_id)["status"] == "completed"


def test_delete_asks_first_and_removes_the_job(api: httpx.Client, farm: LocalFarm) -> None:
    job_id = submit(api, "1-1", name="shot 10")
    worker = register(api, farm, "renderer")
    finish(api, worker, claim(api, worker))
    assert [f["kind"] for f in api.get(f"/api/jobs/{job_id}/files").json()].count("output") == 1

    declined = farmhand("delete", str(job_id), answer="n\n")
    assert declined.exit_code == 1, declined.output
    assert f"Delete job {job_id} 'shot 10' and its outputs?" in declined.output
    assert job(api, job_id)["status"] == "completed", "declining leaves the job"

    ok(farmhand("delete", str(job_id), answer="y\n"))
    assert api.get(f"/api/jobs/{job_id}").status_code == 404
    assert api.get(f"/api/jobs/{job_id}/files").status_code == 404

    running = submit(api, "1-2")
    claim(api, worker)
    ok(farmhand("delete", str(running), "--yes"))
    assert api.get(f"/api/jobs/{running}").status_code == 404
    refused(farmhand("delete", str(running), "--yes"), f"job {running} not found")


# ----------------------------------------------------------------------------- tasks


def test_tasks_are_named_by_the_number_farmhand_job_shows(api: httpx.Client) -> None:
    submit(api, "1-1")  # task ids of the next job no longer start where its numbers do
    job_id = submit(api, "1-3")
    by_number = {task["index"]: task for task in job(api, job_id)["tasks"]}
    assert by_number[2]["id"] != 2, "the test tells ids and numbers apart"

    ok(farmhand("task", "cancel", str(job_id), "2"))
    assert statuses(api, job_id) == ["queued", "queued", "canceled"]
    shown = ok(farmhand("job", str(job_id)))
    # (The line `tasks: 3 · 2 queued · 1 canceled` above the rows counts them.)
    row = next(line for line in shown.splitlines() if "canceled" in line and "tasks:" not in line)
    assert re.match(r"\W*2\W+3\W", row), f"`farmhand job` shows the number taken: {row}"

    ok(farmhand("task", "requeue", str(job_id), "2"))
    assert statuses(api, job_id) == ["queued", "queued", "queued"]
    ok(farmhand("task", "cancel", str(job_id), "0"))
    assert statuses(api, job_id) == ["canceled", "queued", "queued"]

    refused(farmhand("task", "cancel", str(job_id), "3"), f"job {job_id} has no task 3")
    refused(farmhand("task", "requeue", "999999", "0"), "job 999999 not found")
    assert statuses(api, job_id) == ["canceled", "queued", "queued"]


# --------------------------------------------------------------------------- runners


def test_runners_are_listed_and_controlled(
    api: httpx.Client, farm: LocalFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(api, "1-2")
    first = next(t["id"] for t in job(api, job_id)["tasks"] if t["index"] == 0)
    cancel = api.post(f"/api/jobs/{job_id}/tasks/{first}/actions", json={"action": "cancel"})
    assert cancel.status_code == 200, cancel.text
    busy = register(
        api, farm, "box-a", tags=["gpu"], device="CUDA", gpu=0, blender_versions=["4.2.1"]
    )
    register(api, farm, "box-b", blender_versions=["5.0.0", "3.4.1"])
    task = claim(api, busy)
    number = next(t["index"] for t in job(api, job_id)["tasks"] if t["id"] == task["task_id"])
    assert number == 1 and task["task_id"] != number, "on the 2nd task; id ≠ number"
    listed = runners(api)
    assert (listed["box-a"]["current_job_id"], listed["box-a"]["current_task_id"]) == (
        job_id,
        task["task_id"],
    )
    assert listed["box-a"]["current_task_index"] == number
    assert listed["box-b"]["current_task_index"] is None
    # What the web page's row shows, without fetching the job: its name and the frames.
    shown = {
        key: listed["box-a"][f"current_{key}"]
        for key in ("job_name", "task_frames_done", "task_frame_count")
    }
    assert shown == {
        "job_name": job(api, job_id)["name"],
        "task_frames_done": 0,
        "task_frame_count": 1,
    }
    assert listed["box-b"]["current_job_name"] is None

    # The listing names the task from the runners alone: no job is fetched for it.
    sent: list[tuple[str, str]] = []
    request = FarmhandClient._request

    def recorded(self: FarmhandClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        sent.append((method, url))
        return request(self, method, url, **kwargs)

    monkeypatch.setattr(FarmhandClient, "_request", recorded)
    listing = ok(farmhand("runners"))
    assert sent == [("GET", "/api/admin/runners")]
    monkeypatch.setattr(FarmhandClient, "_request", request)
    row_a = next(line for line in listing.splitlines() if " box-a " in line)
    for cell in ("busy", f"job {job_id} task {number} (0/1)", "gpu", "CUDA:0", "4.2.1"):
        assert cell in row_a, row_a
    row_b = next(line for line in listing.splitlines() if " box-b " in line)
    assert "idle" in row_b and "5.0.0, 3.4.1" in row_b and "CPU" in row_b, row_b

    ok(farmhand("runner", "drain", "box-a"))
    assert runners(api)["box-a"]["admin_state"] == "draining"
    ok(farmhand("runner", "enable", "box-a"))
    assert runners(api)["box-a"]["admin_state"] == "enabled"
    assert "once its current task is done" in ok(farmhand("runner", "disable", "box-a"))
    assert runners(api)["box-a"]["status"] == "draining", "after its task by default"
    assert job(api, job_id)["tasks"][number]["status"] == "active"
    ok(farmhand("runner", "disable", "box-a", "--now"))
    assert runners(api)["box-a"]["status"] == "disabled"
    assert job(api, job_id)["tasks"][number]["status"] == "queued", "its task was requeued"
    ok(farmhand("runner", "enable", "box-a"))
    assert runners(api)["box-a"]["status"] == "idle"
    ok(farmhand("runner", "disable", "box-b"))
    assert runners(api)["box-b"]["status"] == "disabled", "no task: disabled at once"

    refused(farmhand("runner", "disable", "nobody"), "no runner 'nobody'")
    refused(farmhand("runner", "delete", "nobody", "--yes"), "no runner 'nobody'")

    declined = farmhand("runner", "delete", "box-b", answer="n\n")
    assert declined.exit_code == 1 and "Delete runner box-b" in declined.output
    assert "box-b" in runners(api)
    ok(farmhand("runner", "delete", "box-b", "--yes"))
    assert "box-b" not in runners(api)


def test_a_runner_deleted_with_the_cli_is_told_it_was_deleted(
    api: httpx.Client, farm: LocalFarm
) -> None:
    """QA's case: after `farmhand runner delete id:N --yes` the worker heard "unknown
    runner secret; register again", registered anew and took work again."""
    job_id = submit(api, "1-1")
    worker = register(api, farm, "doomed")
    claim(api, worker)
    said = ok(farmhand("runner", "delete", f"id:{runners(api)['doomed']['id']}", "--yes"))
    assert "deleted runner doomed" in said and "cannot register again by itself" in said, said
    assert statuses(api, job_id) == ["queued"], "its task went back to the queue"
    answer = api.post("/api/runner/heartbeat", headers=worker, json={})
    assert answer.status_code == 401, answer.text
    assert answer.headers.get("X-Farmhand-Runner") == "deleted", answer.headers
    assert "this runner (doomed) was deleted by admin admin" in answer.json()["detail"]


def test_runners_sharing_a_name_are_picked_by_id(api: httpx.Client, farm: LocalFarm) -> None:
    register(api, farm, "twin")
    register(api, farm, "twin")
    ids = sorted(r["id"] for r in api.get("/api/admin/runners").json() if r["name"] == "twin")
    refused(farmhand("runner", "disable", "twin"), "2 runners are named 'twin'", f"id:{ids[1]}")
    ok(farmhand("runner", "disable", f"id:{ids[1]}"))
    states = {r["id"]: r["status"] for r in api.get("/api/admin/runners").json()}
    assert (states[ids[0]], states[ids[1]]) == ("idle", "disabled")


def test_sleep_schedule(api: httpx.Client, farm: LocalFarm) -> None:
    register(api, farm, "desk")
    weekdays, weekend = "mon-fri 09:00-18:00", "sat,sun 22:00-06:00"
    zone = ("--timezone", "Europe/Paris")
    said = ok(farmhand("runner", "sleep", "desk", "--window", weekdays, "--window", weekend, *zone))
    assert "mon-fri 09:00-18:00, sat-sun 22:00-06:00 (Europe/Paris)" in said, said
    schedule = runners(api)["desk"]["sleep_schedule"]
    assert schedule == {
        "timezone": "Europe/Paris",
        "windows": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"},
            {"days": ["sat", "sun"], "start": "22:00", "end": "06:00"},
        ],
        "when": "after-task",
    }
    assert "mon-fri 09:00-18:00" in ok(farmhand("runners"))

    ok(farmhand("runner", "sleep", "desk", "--window", "daily 00:00-24:00", "--now"))
    desk = runners(api)["desk"]
    assert desk["status"] == "asleep" and desk["sleep_schedule"]["when"] == "now"

    refused(farmhand("runner", "sleep", "desk", "--window", "weekdays 9-18"), "--window")
    refused(farmhand("runner", "sleep", "desk", "--window", "mon 09:00-25:00"), "--window")
    refused(
        farmhand(
            "runner", "sleep", "desk", "--window", "mon 09:00-18:00", "--timezone", "Mars/Base"
        ),
        "unknown time zone",
    )
    refused(farmhand("runner", "sleep", "desk"), "--window", "--clear")
    assert runners(api)["desk"]["sleep_schedule"]["windows"][0]["end"] == "24:00", "unchanged"

    ok(farmhand("runner", "sleep", "desk", "--clear"))
    desk = runners(api)["desk"]
    assert desk["sleep_schedule"] is None and desk["status"] == "idle"


def test_window_syntax() -> None:
    window = parse_window("fri-mon 22:00-06:00")
    assert window.days == ["fri", "sat", "sun", "mon"] and (window.start, window.end) == (
        "22:00",
        "06:00",
    )
    assert parse_window("mon,wed-fri 10:00-11:00").days == ["mon", "wed", "thu", "fri"]
    assert format_days(["mon", "wed", "thu", "fri"]) == "mon,wed-fri"
    assert format_days(["sun", "mon", "tue", "wed", "thu", "fri", "sat"]) == "daily"
    # Over the week's end: one range, as it was typed, not mon,fri-sun.
    assert format_days(window.days) == "fri-mon"
    assert format_days(["sun", "mon", "wed"]) == "wed,sun-mon"
    assert format_days(["sat", "sun"]) == "sat-sun"
    assert format_days(["mon"]) == "mon"
    for bad in ("mon", "mon 9:00-10:00", "funday 09:00-10:00", "mon 10:00", "mon 24:30-01:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


# ------------------------------------------------------------------------- blocklist


def test_blocklist_is_listed_and_cleared(api: httpx.Client, farm: LocalFarm) -> None:
    first = submit(api, "1-4", max_attempts=5, priority=90)
    second = submit(api, "1-4", max_attempts=5, priority=10)
    a, b = register(api, farm, "flaky-a"), register(api, farm, "flaky-b")
    register(api, farm, "steady")  # idle: a task a or b failed goes to another of theirs
    for who in (a, a, a, a, b, b):  # a: two tasks of the first job, then of the second
        fail(api, who, claim(api, who))
    entries = api.get("/api/admin/blocklist").json()
    assert sorted((e["worker"], e["job_id"]) for e in entries) == sorted(
        [("flaky-a", first), ("flaky-a", second), ("flaky-b", first)]
    )

    listing = ok(farmhand("blocklist"))
    for entry in entries:
        row = next(line for line in listing.splitlines() if re.match(rf"\W*{entry['id']}\W", line))
        for cell in (entry["worker"], str(entry["job_id"]), "render", "failed 2 render tasks"):
            assert cell in row, row

    said = ok(farmhand("blocklist", "clear", "--job", str(first)))
    assert "cleared 2 blocklist entries" in said, said
    left = api.get("/api/admin/blocklist").json()
    assert [(e["worker"], e["job_id"]) for e in left] == [("flaky-a", second)]

    ok(farmhand("blocklist", "clear", str(left[0]["id"])))
    assert api.get("/api/admin/blocklist").json() == []
    refused(farmhand("blocklist", "clear", str(left[0]["id"])), "not found", "404")
    refused(farmhand("blocklist", "clear"), "entry id or --job")
    # A job that does not exist is refused as an entry that does not is, not "cleared 0".
    gone = second + 100
    refused(farmhand("blocklist", "clear", "--job", str(gone)), f"job {gone} not found", "404")
    said = ok(farmhand("blocklist", "clear", "--job", str(second)))
    assert f"cleared 0 blocklist entries of job {second}" in said, "a job with none left"


# ---------------------------------------------------------------------- who may do it


@pytest.fixture(scope="module")
def user_token(farm: LocalFarm) -> str:
    with httpx.Client(base_url=farm.url, timeout=30) as client:
        answer = client.post(
            "/api/admin/users",
            json={"name": "ana", "role": "user"},
            headers={"Authorization": f"Bearer {farm.admin_token}"},
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_admin_commands_refuse_other_people(
    api: httpx.Client, farm: LocalFarm, user_token: str
) -> None:
    register(api, farm, "box")
    job_id = submit(api, "1-1")
    refused(farmhand("runners", "--token", user_token), "needs an admin", "403")
    refused(farmhand("runner", "disable", "box", "--token", user_token), "needs an admin")
    refused(farmhand("blocklist", "--token", user_token), "needs an admin")
    refused(farmhand("blocklist", "--token", user_token, "clear", "1"), "needs an admin")
    assert runners(api)["box"]["status"] == "idle"
    # Someone else's job does not exist for them.
    refused(farmhand("pause", str(job_id), "--token", user_token), f"job {job_id} not found")
    refused(farmhand("delete", str(job_id), "--yes", "--token", user_token), "not found")
    assert job(api, job_id)["status"] == "queued"


def test_errors_are_one_line_from_the_real_command(farm: LocalFarm, api: httpx.Client) -> None:
    """As a person runs it (its own process): a clear line, exit code 1."""
    register(api, farm, "real")
    for args, words in (
        (("runner", "drain", "ghost"), "no runner 'ghost'"),
        (("requeue", "999999"), "job 999999 not found"),
    ):
        result = cli(farm, *args)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert f"error: {words}" in result.stderr, result.stderr
