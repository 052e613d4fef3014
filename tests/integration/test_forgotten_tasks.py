"""A task whose claim answer never reached its worker goes back to the queue when that
worker next asks for work, not after the task timeout, and not as a failure.

A worker runs one task at a time and asks only between tasks, so whatever the manager
still counts as its own by then is a task it is not working on: the answer was lost (the
manager was killed mid-reply, the network dropped) or the worker gave up on the task
while the manager was out of reach. Tasks handed out within `forgotten_task_after` are
spared: an answer may still be on its way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings, upload_frames
from tests.integration.test_claim_next import claim, complete, drain_after_task, submit

GRACE = 0.5


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    # max_attempts=1: had the lost task been counted as a failure, it and its job would
    # fail at once.
    settings = make_settings(tmp_path / "data", forgotten_task_after=GRACE, max_attempts=1)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def tasks(farm: Farm, job_id: int) -> dict[int, dict[str, Any]]:
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    return {task["id"]: task for task in job["tasks"]}


def test_a_lost_claim_answer_gives_the_task_back_when_its_worker_asks_again(
    farm: Farm,
) -> None:
    job_id = submit(farm, 1)
    runner = farm.register_runner("w1")
    lost = claim(farm, runner)  # the manager handed it out; the worker never heard
    assert tasks(farm, job_id)[lost["task_id"]]["status"] == "active"
    time.sleep(GRACE + 0.2)

    again = claim(farm, runner)

    # The same task, through the queue (a second attempt), not a failure: with
    # max_attempts=1 a failure would have failed the task and the job.
    assert again["task_id"] == lost["task_id"]
    assert again["attempt"] == 2
    task = tasks(farm, job_id)[lost["task_id"]]
    assert task["status"] == "active"
    assert task["last_error"].startswith("its worker asked for work without it (worker ")
    assert task["last_error"].endswith(", 1 time in a row)")
    upload_frames(farm, runner, again)
    done = complete(farm, runner, again, next_task=False)
    assert done.status_code == 200, done.text
    assert done.json()["job_status"] == "completed"


def test_a_task_handed_out_within_the_grace_stays_with_its_worker(farm: Farm) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("w1")
    lost = claim(farm, runner)

    other = claim(farm, runner)  # at once: the first answer might still be on its way

    assert other["task_id"] != lost["task_id"]
    held = tasks(farm, job_id)
    assert held[lost["task_id"]]["status"] == "active"
    assert held[lost["task_id"]]["worker"] == "w1"
    assert held[lost["task_id"]]["attempts"] == 1


def test_a_completion_asking_for_the_next_task_gives_back_a_forgotten_one(
    farm: Farm,
) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("w1")
    lost = claim(farm, runner)
    working = claim(farm, runner)
    upload_frames(farm, runner, working)
    time.sleep(GRACE + 0.2)

    answer = complete(farm, runner, working, next_task=True)

    assert answer.status_code == 200, answer.text
    following = answer.json()["next_task"]
    assert following is not None
    assert following["task_id"] == lost["task_id"]
    assert following["attempt"] == 2
    assert tasks(farm, job_id)[lost["task_id"]]["status"] == "active"


def test_a_draining_worker_that_lost_its_task_passes_it_to_another(farm: Farm) -> None:
    job_id = submit(farm, 1)
    forgetful = farm.register_runner("w1")
    lost = claim(farm, forgetful)
    drain_after_task(farm, "w1")
    other = farm.register_runner("w2")
    waiting = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=other)
    assert waiting.status_code == 204  # w1 holds the only task
    time.sleep(GRACE + 0.2)

    # w1 asks for work: it has finished "its" task as far as it knows, so it is now
    # disabled and gets nothing, and the task it never heard of goes back to the queue.
    nothing = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=forgetful)
    assert nothing.status_code == 204
    taken = claim(farm, other)

    assert taken["task_id"] == lost["task_id"]
    assert tasks(farm, job_id)[lost["task_id"]]["worker"] == "w2"
