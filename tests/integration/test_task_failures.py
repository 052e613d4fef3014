"""A task's failures, what the retry limit counts, apart from its hand-outs.

A task's `attempts` counts every hand-out, give-backs included (a worker stopping gives
its task back; that is not a failure), while the retry limit reads its failures: a task
given back four times showed `attempts 4` on a job allowed one attempt, which read as a
retry limit not kept. The task summary now carries `failures`, and `farmhand job --tasks`
shows them, with the hand-outs only when they say more.
"""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import Farm, cli_at, submit_stand_in, upload_frames
from tests.integration.test_claim_next import claim, complete
from tests.integration.test_runner_status_note import register


def give_back(farm: Farm, runner: dict[str, str], times: int) -> int:
    """Claim the job's one task and give it back `times` times, as a worker stopping does;
    the task's id."""
    task_id = 0
    for _ in range(times):
        task_id = claim(farm, runner)["task_id"]
        answer = farm.client.post(
            f"/api/runner/tasks/{task_id}/release",
            headers=runner,
            json={"reason": "worker shutting down"},
        )
        assert answer.status_code == 200, answer.text
    return task_id


def test_a_task_given_back_counts_its_hand_outs_not_as_failures(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1, max_attempts=1)
    runner = farm.register_runner("w1")

    task_id = give_back(farm, runner, 4)

    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    (task,) = job["tasks"]
    assert task["id"] == task_id
    assert (task["status"], task["failures"], task["attempts"]) == ("queued", 0, 4)
    paged = farm.client.get(f"/api/jobs/{job_id}/tasks", headers=farm.admin).json()
    assert [(t["failures"], t["attempts"]) for t in paged] == [(0, 4)]

    # Handed out a fifth time and failed: one failure, which the job's one attempt allows.
    claim(farm, runner)
    failed = farm.client.post(
        f"/api/runner/tasks/{task_id}/fail", headers=runner, json={"reason": "boom"}
    )
    assert failed.status_code == 200, failed.text
    (task,) = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
    assert (task["status"], task["failures"], task["attempts"]) == ("failed", 1, 5)


def cells(output: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell (the task's number), each as its cells."""
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row for row in rows if row}


def test_farmhand_job_shows_failures_and_the_hand_outs_only_when_they_say_more(
    manager: LocalFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cli_at(manager, monkeypatch) as api:
        job_id = submit_stand_in(api, frame_start=1, frame_end=3, chunk_size=1, max_attempts=3)
        with httpx.Client(base_url=manager.url, timeout=30) as client:
            farm = Farm(client, manager.admin_token, manager.runner_token, manager.data_dir)  # type: ignore[arg-type]
            caps = {"protocol": WORKER_PROTOCOL}
            # One task given back four times, then handed out again: five hand-outs.
            stopping = register(client, manager.runner_token, "stopping", caps)
            given_back = give_back(farm, stopping, 4)
            assert claim(farm, stopping)["task_id"] == given_back
            # One that failed once, then completed elsewhere: one failure, two hand-outs.
            crashing = register(client, manager.runner_token, "crashing", caps)
            failing = claim(farm, crashing)
            answer = client.post(
                f"/api/runner/tasks/{failing['task_id']}/fail",
                headers=crashing,
                json={"reason": "boom"},
            )
            assert answer.status_code == 200, answer.text
            finishing = register(client, manager.runner_token, "finishing", caps)
            retried = claim(farm, finishing)
            assert retried["task_id"] == failing["task_id"]
            upload_frames(farm, finishing, retried)
            assert complete(farm, finishing, retried, next_task=False).status_code == 200
        tasks = {t["id"]: t for t in api.get(f"/api/jobs/{job_id}").json()["tasks"]}
        assert (tasks[given_back]["failures"], tasks[given_back]["attempts"]) == (0, 5)

        result = CliRunner().invoke(app, ["job", str(job_id), "--tasks"])

        assert result.exit_code == 0, result.output
        header = next(line for line in result.output.splitlines() if line.startswith("┃"))
        assert "failures" in header and "attempts" not in header, header
        rows = cells(result.output)
        column = [cell.strip() for cell in header.split("┃")[1:-1]].index("failures")
        shown = {
            task_id: rows[str(tasks[task_id]["index"])][column]
            for task_id in (given_back, failing["task_id"])
        }
        assert shown == {given_back: "0 of 5 hand-outs", failing["task_id"]: "1"}, result.output
