"""`farmhand jobs` and `farmhand job` on a farm with more than a screenful, against a
real manager process.

A studio farm has thousands of jobs, some of 10,000 tasks: `farmhand jobs` shows the
newest 50 (and says how many it left out and how to see them), filters by state and
owner on the manager; `farmhand job` counts the tasks by state and shows the failed and
running ones, not one row per task, unless `--tasks` asks for every task.
"""

from __future__ import annotations

import json
import re

import httpx
from typer.testing import CliRunner, Result

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm
from tests.integration.conftest import cli_api_fixture, farm_fixture, submit_stand_in

ROW = re.compile(r"^│\s*(\d+)\s*│", re.MULTILINE)
"""A table row's first cell: a job's id, or a task's number."""


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = farm_fixture(heartbeat_timeout=600.0)
api = cli_api_fixture()


def farmhand(*args: str) -> str:
    result: Result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def rows(output: str) -> list[int]:
    return [int(number) for number in ROW.findall(output)]


def submit(api: httpx.Client, frames: int = 1, headers: dict[str, str] | None = None) -> int:
    return submit_stand_in(api, headers, frame_start=1, frame_end=frames, chunk_size=1)


def test_jobs_shows_the_newest_50_and_says_how_to_see_more(api: httpx.Client) -> None:
    ids = [submit(api) for _ in range(53)]
    newest_first = ids[::-1]

    shown = farmhand("jobs")
    assert rows(shown) == newest_first[:50]
    assert shown.rstrip().endswith("showing 50 of 53 jobs; --limit N or --all for more")

    assert rows(farmhand("jobs", "--limit", "3")) == newest_first[:3]
    everything = farmhand("jobs", "--all")
    assert rows(everything) == newest_first and "showing" not in everything
    listed = json.loads(farmhand("jobs", "--json", "--limit", "2"))
    assert [job["id"] for job in listed] == newest_first[:2], "--json prints what was asked"

    both = CliRunner().invoke(app, ["jobs", "--all", "--limit", "5"])
    assert both.exit_code == 1 and "--all" in both.output and "Traceback" not in both.output


def test_jobs_filters_by_state_and_owner(api: httpx.Client) -> None:
    made = api.post("/api/admin/users", json={"name": "alice"})
    assert made.status_code == 201, made.text
    alice = {"Authorization": f"Bearer {made.json()['token']}"}
    try:
        mine = [submit(api) for _ in range(3)]
        hers = submit(api, headers=alice)
        assert api.delete(f"/api/jobs/{mine[1]}").status_code == 200

        assert rows(farmhand("jobs", "--owner", "alice")) == [hers]
        assert rows(farmhand("jobs", "--status", "canceled")) == [mine[1]]
        queued = farmhand("jobs", "--status", "queued", "--owner", "admin", "--limit", "1")
        assert rows(queued) == [mine[2]]
        assert "showing 1 of 2 jobs" in queued
        both = farmhand("jobs", "--status", "queued", "--status", "canceled", "--owner", "admin")
        assert rows(both) == mine[::-1]
        bad = CliRunner().invoke(app, ["jobs", "--status", "done"])
        assert bad.exit_code == 2 and "done" in bad.output, "click names the bad choice"
    finally:
        api.delete(f"/api/jobs/{hers}", params={"purge": "true"})
        user_id = made.json()["user"]["id"]
        assert api.delete(f"/api/admin/users/{user_id}").status_code == 204


def test_job_counts_its_tasks_and_shows_the_running_ones(
    farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit(api, frames=60)
    held = []
    for name in ("w1", "w2"):
        registered = api.post(
            "/api/runner/register", json={"token": farm.runner_token, "name": name}
        )
        assert registered.status_code == 201, registered.text
        runner = {"Authorization": f"Bearer {registered.json()['secret']}"}
        task = api.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
        held.append(task)

    shown = farmhand("job", str(job_id))
    assert "tasks: 60 · 58 queued · 2 active" in shown, shown
    assert rows(shown) == [0, 1], "only the running tasks, not a row per task"
    assert "w1" in shown and "w2" in shown
    assert "58 more tasks not shown; --tasks shows every task" in shown

    every = farmhand("job", str(job_id), "--tasks")
    assert rows(every) == list(range(60)) and "not shown" not in every

    light = json.loads(farmhand("job", str(job_id), "--json"))
    assert light["tasks"] == [] and light["frames_total"] == 60
    whole = json.loads(farmhand("job", str(job_id), "--json", "--tasks"))
    assert [task["index"] for task in whole["tasks"]] == list(range(60))
    assert whole == api.get(f"/api/jobs/{job_id}").json() | {
        "elapsed_seconds": whole["elapsed_seconds"],
        "eta_seconds": whole["eta_seconds"],
    }


def test_a_small_job_shows_every_task(api: httpx.Client) -> None:
    job_id = submit(api, frames=4)
    shown = farmhand("job", str(job_id))
    assert "tasks: 4 · 4 queued" in shown
    assert rows(shown) == [0, 1, 2, 3] and "not shown" not in shown
