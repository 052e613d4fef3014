"""A task one worker is given back again and again, without working on it, does not cycle
forever: the third time in a row it counts as that worker's failed attempt.

A worker that asks for work while the manager still counts a task as its own is not
working on it, and the task goes back to the queue, not as a failure
(test_forgotten_tasks.py). But a worker that cannot do a task and drops it without failing
it (QA: an old worker given the tiles of a still) was handed it again at once, forever:
attempts climbed past `--max-attempts` and the job never ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings
from tests.integration.test_claim_next import claim, submit

GRACE = 0.3


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    # max_attempts=1: the give-back counted as a failure fails the task (and job) at once.
    settings = make_settings(tmp_path / "data", forgotten_task_after=GRACE, max_attempts=1)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def job(farm: Farm, job_id: int) -> dict[str, Any]:
    return farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()  # type: ignore[no-any-return]


def test_a_task_given_back_three_times_by_one_worker_counts_as_its_failure(farm: Farm) -> None:
    job_id = submit(farm, 1)
    runner = farm.register_runner("forgetful")
    task = claim(farm, runner)
    for attempt in (2, 3):
        time.sleep(GRACE + 0.2)
        again = claim(farm, runner)  # given back, and handed out again: it was the only one
        assert (again["task_id"], again["attempt"]) == (task["task_id"], attempt)
    time.sleep(GRACE + 0.2)

    nothing = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)

    # The third give-back is a failed attempt: with --max-attempts 1 the task fails, and
    # with it the job, saying why; not a fourth round.
    assert nothing.status_code == 204, nothing.text
    summary = job(farm, job_id)
    [failed] = summary["tasks"]
    assert failed["status"] == "failed"
    assert failed["attempts"] == 3
    assert "asked for work without it 3 times in a row" in failed["last_error"]
    assert summary["status"] == "failed"
    assert "3 times in a row" in summary["status_reason"]
