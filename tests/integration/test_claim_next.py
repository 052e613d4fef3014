"""`POST /api/runner/tasks/{id}/complete?next=true`: the completion hands out the next task.

The worker sends one request between tasks instead of two. What must hold: the next task
is really the worker's (claimed by the same rules as a claim, its own job first), a
completion that is refused hands out nothing, and a worker that was draining stops.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Farm, submit_stand_in, upload_frames


def submit(farm: Farm, frames: int) -> int:
    return submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=frames, chunk_size=1)


def claim(farm: Farm, runner: dict[str, str], **params: object) -> dict[str, Any]:
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0, **params}, headers=runner)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def complete(farm: Farm, runner: dict[str, str], task: dict[str, Any], *, next_task: bool) -> Any:
    return farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=runner,
        params={"next": "true"} if next_task else {},
        json={"frames": task["frames"]},
    )


def drain_after_task(farm: Farm, name: str) -> None:
    """An admin drains the runner called `name`: it finishes its task, then stops."""
    runners = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    worker_id = next(r["id"] for r in runners if r["name"] == name)
    drained = farm.client.post(
        f"/api/admin/runners/{worker_id}/actions",
        headers=farm.admin,
        json={"action": "drain", "when": "after-task"},
    )
    assert drained.status_code == 200, drained.text
    assert drained.json()["status"] == "draining"


def statuses(farm: Farm, job_id: int) -> dict[int, tuple[str, int | None]]:
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    return {t["id"]: (t["status"], t.get("worker_id")) for t in job["tasks"]}


def test_the_completion_hands_out_the_next_task_of_the_same_job_first(farm: Farm) -> None:
    older = submit(farm, 3)
    newer = submit(farm, 3)
    runner = farm.register_runner("w1")
    first = claim(farm, runner, prefer_job=newer)
    assert first["job_id"] == newer
    upload_frames(farm, runner, first)

    answer = complete(farm, runner, first, next_task=True)

    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["task_status"] == "completed"
    following = outcome["next_task"]
    assert following is not None
    # Same priority and owner: the older job would come first, but the worker holds the
    # newer one's files (and Blender session).
    assert following["job_id"] == newer
    assert following["task_id"] != first["task_id"]
    assert following["files"] and following["main_file"] == "scene.blend"
    held = statuses(farm, newer)[following["task_id"]]
    assert held[0] == "active"
    progress = farm.client.post(
        f"/api/runner/tasks/{following['task_id']}/progress",
        headers=runner,
        json={"frames_done": 0},
    )
    assert progress.json()["keep_going"] is True, "the handed-out task is this worker's"
    assert all(status == "queued" for status, _ in statuses(farm, older).values())


def test_without_next_or_without_work_no_task_is_handed_out(farm: Farm) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("w1")
    first = claim(farm, runner)
    upload_frames(farm, runner, first)
    plain = complete(farm, runner, first, next_task=False)
    assert plain.status_code == 200
    assert plain.json()["next_task"] is None
    assert [s for s, _ in statuses(farm, job_id).values()].count("queued") == 1

    second = claim(farm, runner)
    upload_frames(farm, runner, second)
    last = complete(farm, runner, second, next_task=True)
    assert last.status_code == 200
    assert last.json()["next_task"] is None, "nothing left to hand out"
    assert last.json()["job_status"] == "completed"


def test_a_refused_completion_hands_out_nothing(farm: Farm) -> None:
    job_id = submit(farm, 2)
    runner = farm.register_runner("w1")
    first = claim(farm, runner)
    # No frame uploaded: the completion is refused, and so is the next task.
    answer = complete(farm, runner, first, next_task=True)
    assert answer.status_code == 409
    assert "no output" in answer.json()["detail"]
    tasks = statuses(farm, job_id)
    assert tasks[first["task_id"]][0] == "active"
    assert sorted(status for status, _ in tasks.values()) == ["active", "queued"]


def test_a_draining_worker_gets_no_next_task_and_is_disabled(farm: Farm) -> None:
    job_id = submit(farm, 3)
    runner = farm.register_runner("w1")
    first = claim(farm, runner)
    drain_after_task(farm, "w1")
    upload_frames(farm, runner, first)

    answer = complete(farm, runner, first, next_task=True)

    assert answer.status_code == 200, answer.text
    assert answer.json()["next_task"] is None
    assert [s for s, _ in statuses(farm, job_id).values()].count("queued") == 2
    runners = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    assert next(r for r in runners if r["name"] == "w1")["status"] == "disabled"


def test_a_completion_sent_again_gets_the_same_answer_and_the_same_next_task(
    farm: Farm,
) -> None:
    """The worker retries a completion whose answer it never got (a dropped connection):
    a 409 would leave the task that answer handed out with a worker that does not know it
    has it, until the task timeout."""
    job_id = submit(farm, 4)
    runner = farm.register_runner("w1")
    first = claim(farm, runner)
    upload_frames(farm, runner, first)
    answer = complete(farm, runner, first, next_task=True)
    assert answer.status_code == 200, answer.text
    handed_out = answer.json()["next_task"]["task_id"]

    again = complete(farm, runner, first, next_task=True)

    assert again.status_code == 200, again.text
    assert again.json()["task_status"] == "completed"
    assert again.json()["next_task"]["task_id"] == handed_out, "the same task, not a second"
    tasks = statuses(farm, job_id)
    assert [status for status, _ in tasks.values()].count("active") == 1
    assert tasks[handed_out][0] == "active"
    assert [status for status, _ in tasks.values()].count("completed") == 1

    plain = complete(farm, runner, first, next_task=False)
    assert plain.status_code == 200
    assert plain.json()["next_task"] is None


def test_a_completion_of_someone_elses_task_is_still_refused(farm: Farm) -> None:
    submit(farm, 2)
    runner, other = farm.register_runner("w1"), farm.register_runner("w2")
    first = claim(farm, runner)
    upload_frames(farm, runner, first)
    assert complete(farm, runner, first, next_task=False).status_code == 200

    answer = complete(farm, other, first, next_task=True)

    assert answer.status_code == 409
    assert "not assigned to this runner" in answer.json()["detail"]
