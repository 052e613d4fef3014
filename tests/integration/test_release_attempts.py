"""A task its worker gives back without working on it does not count as an attempt.

A worker whose disk is full, one draining or stopping, or one handed a next task with
its completion that it will not start gives the task back (`POST .../release`). The
claim had counted an attempt, so `farmhand job` showed attempts 4 on a job with
`--max-attempts 1` after four give-backs, which reads like four failed tries. A failed
try still counts.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Farm, upload_frames
from tests.integration.test_claim_next import claim, complete, submit


def attempts(farm: Farm, job_id: int) -> dict[int, int]:
    detail = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    return {task["id"]: task["attempts"] for task in detail["tasks"]}


def release(farm: Farm, runner: dict[str, str], task: dict[str, Any], reason: str) -> None:
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=runner, json={"reason": reason}
    )
    assert answer.status_code == 200, answer.text


def test_a_task_given_back_unworked_keeps_its_attempts(farm: Farm) -> None:
    job_id = submit(farm, 1)
    runner = farm.register_runner("disk-full")
    for _ in range(4):
        task = claim(farm, runner)
        assert task["attempt"] == 1
        release(farm, runner, task, "worker disk-full cannot work: no space left")

    assert attempts(farm, job_id) == {task["task_id"]: 0}


def test_a_next_task_given_back_keeps_its_attempts(farm: Farm) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("stopping")
    first = claim(farm, runner)
    upload_frames(farm, runner, first)
    answer = complete(farm, runner, first, next_task=True)
    assert answer.status_code == 200, answer.text
    second = answer.json()["next_task"]

    release(farm, runner, second, "worker shutting down")

    assert attempts(farm, job_id) == {first["task_id"]: 1, second["task_id"]: 0}


def test_a_failed_try_still_counts_as_an_attempt(farm: Farm) -> None:
    job_id = submit(farm, 1)
    runner = farm.register_runner("unlucky")
    task = claim(farm, runner)
    release(farm, runner, task, "worker shutting down")
    task = claim(farm, runner)
    failed = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=runner, json={"reason": "crashed"}
    )
    assert failed.status_code == 200, failed.text

    assert attempts(farm, job_id) == {task["task_id"]: 1}
