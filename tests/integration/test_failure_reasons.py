"""What a user is told about failures: the blocklist counts tasks, a completed task shows
no error.

Scripted runners through the API, as in `test_scheduling`.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Farm
from tests.integration.test_scheduling import claim, claimed, fail, finish, job, runner, submit


def blocklist(farm: Farm) -> list[tuple[str, str]]:
    answer = farm.client.get("/api/admin/blocklist", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    return [(entry["worker"], entry["reason"]) for entry in answer.json()]


def test_one_task_failing_again_and_again_is_the_retry_rules_business(farm: Farm) -> None:
    """A job's only worker gets back the task it failed (nobody else could take it): its
    attempts do not blocklist it, so the task has the attempts its job allows and the
    job's reason is the task's own error."""
    job_id = submit(farm, "1-2", max_attempts=5)
    alone = runner(farm, "w4")
    task = claimed(farm, alone)
    for attempt in range(1, 5):
        fail(farm, alone, task, f"out of memory (attempt {attempt})")
        again = claimed(farm, alone)
        assert again["task_id"] == task["task_id"], "nobody else could take it"
        task = again
    assert blocklist(farm) == [], "4 failures of 1 task are not 3 tasks"
    assert job(farm, job_id)["status"] == "active"

    fail(farm, alone, task, "out of memory (attempt 5)")
    failed = job(farm, job_id)
    assert failed["status"] == "failed"
    assert failed["status_reason"] == "task 0 failed: out of memory (attempt 5)"
    assert failed["tasks"][0]["attempts"] == 5


def test_a_worker_is_blocklisted_after_failing_that_many_different_tasks(farm: Farm) -> None:
    """The default threshold, 3: its reason counts tasks, as the rule does."""
    submit(farm, "1-4", max_attempts=5)
    w4 = runner(farm, "w4")
    first = claimed(farm, w4)
    fail(farm, w4, first)
    fail(farm, w4, claimed(farm, w4))  # alone, it gets the same task back
    runner(farm, "w5")  # from now on a task w4 failed waits for w5
    second = claimed(farm, w4)
    assert second["task_id"] != first["task_id"]
    fail(farm, w4, second)
    assert blocklist(farm) == [], "3 failures, but of 2 tasks"
    third = claimed(farm, w4)
    fail(farm, w4, third)
    assert blocklist(farm) == [("w4", "failed 3 render tasks of this job")]
    assert claim(farm, w4) is None


def task_row(farm: Farm, job_id: int) -> dict[str, Any]:
    row: dict[str, Any] = job(farm, job_id)["tasks"][0]
    return row


def test_a_completed_task_shows_no_earlier_attempts_error(farm: Farm) -> None:
    """`farmhand job` and the job page show `last_error` in an error column: beside
    "completed", an earlier attempt's error read as the completion's."""
    job_id = submit(farm, "1-1")
    w1, w2 = runner(farm, "w1"), runner(farm, "w2")
    fail(farm, w1, claimed(farm, w1), "worker w1 ran out of disk")
    queued = task_row(farm, job_id)
    assert queued["status"] == "queued", "why it is not done is still shown"
    assert queued["last_error"] == "worker w1 ran out of disk"
    finish(farm, w2, claimed(farm, w2))
    done = task_row(farm, job_id)
    assert (done["status"], done["attempts"], done["worker"]) == ("completed", 2, "w2")
    assert done["last_error"] is None
