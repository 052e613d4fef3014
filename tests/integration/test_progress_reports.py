"""`POST /api/runner/tasks/{id}/progress`: reports people would read as nonsense are refused.

`sample 10/5`, or `99999` frames done of a 2-frame task, used to be taken and shown on
the job page; each is now a 400 saying what is wrong, and the task's progress stays
what the last sensible report said.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Farm, submit_stand_in


def claim(farm: Farm, runner: dict[str, str]) -> dict[str, Any]:
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def report(farm: Farm, runner: dict[str, str], task_id: int, **body: Any) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        f"/api/runner/tasks/{task_id}/progress", headers=runner, json=body
    )
    return answer


def task_summary(farm: Farm, job_id: int, task_id: int) -> dict[str, Any]:
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    return next(t for t in job["tasks"] if t["id"] == task_id)


@pytest.fixture
def two_frame_task(farm: Farm) -> tuple[dict[str, str], dict[str, Any]]:
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task["frames"] == [1, 2]
    return runner, task


def test_a_sample_past_the_total_is_400_and_not_shown(
    farm: Farm, two_frame_task: tuple[dict[str, str], dict[str, Any]]
) -> None:
    runner, task = two_frame_task
    ok = report(farm, runner, task["task_id"], frame=1, sample=3, samples_total=5)
    assert ok.status_code == 200 and ok.json() == {"keep_going": True}
    bad = report(farm, runner, task["task_id"], frame=1, sample=10, samples_total=5)
    assert bad.status_code == 400, bad.text
    assert "sample (10) is past samples_total (5)" in bad.json()["detail"]
    shown = task_summary(farm, task["job_id"], task["task_id"])
    assert (shown["sample"], shown["samples_total"]) == (3, 5)


@pytest.mark.parametrize("field", ["frames_done", "sample", "samples_total", "render_seconds"])
def test_negative_counts_are_400(
    farm: Farm, two_frame_task: tuple[dict[str, str], dict[str, Any]], field: str
) -> None:
    runner, task = two_frame_task
    answer = report(farm, runner, task["task_id"], **{field: -1})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"]


def test_more_frames_done_than_the_task_has_is_400_and_not_shown(
    farm: Farm, two_frame_task: tuple[dict[str, str], dict[str, Any]]
) -> None:
    runner, task = two_frame_task
    assert report(farm, runner, task["task_id"], frames_done=1).status_code == 200
    bad = report(farm, runner, task["task_id"], frames_done=99_999)
    assert bad.status_code == 400, bad.text
    assert bad.json()["detail"] == "frames_done (99999) is more than the task's 2 frames"
    assert report(farm, runner, task["task_id"], frames_done=3).status_code == 400
    assert task_summary(farm, task["job_id"], task["task_id"])["frames_done"] == 1
    assert report(farm, runner, task["task_id"], frames_done=2).status_code == 200
    assert task_summary(farm, task["job_id"], task["task_id"])["frames_done"] == 2


def test_a_task_taken_away_still_answers_keep_going_false(
    farm: Farm, two_frame_task: tuple[dict[str, str], dict[str, Any]]
) -> None:
    """However many frames the report claims: the worker must hear "stop", not "bad"."""
    runner, task = two_frame_task
    farm.client.delete(f"/api/jobs/{task['job_id']}", headers=farm.admin)
    answer = report(farm, runner, task["task_id"], frames_done=99_999)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"keep_going": False}


def test_a_tile_task_reports_its_tile_as_one_frame_done(farm: Farm) -> None:
    """What the real worker sends: a tile task has no frames, but uploading its tile
    counts as one (`worker/agent.py` `frames_uploaded`)."""
    submit_stand_in(farm.client, farm.admin, tiles={"columns": 2, "rows": 1})
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task["frames"] == [] and task["tile"] is not None
    answer = report(farm, runner, task["task_id"], frames_done=1, sample=2, samples_total=2)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"keep_going": True}
    assert report(farm, runner, task["task_id"], frames_done=2).status_code == 400
