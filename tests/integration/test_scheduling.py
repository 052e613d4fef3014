"""Scheduling rules through the API, each with a scenario that fails if the rule breaks.

Workers are scripted HTTP calls against a real manager (real SQLite), so every rule is
checked exactly as a worker experiences it: which task a claim returns.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import ApiToken, Task, TaskDependency, User
from farmhand.manager.scheduling.reaper import ReaperClock, ReapReport, fail_stuck_tasks
from farmhand.manager.scheduling.workers import in_sleep_window
from farmhand.manager.settings import ManagerSettings
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import SleepSchedule
from tests.integration.conftest import (
    Farm,
    make_settings,
    png_bytes,
    post_stand_in,
    submit_stand_in,
    upload_frame,
    upload_frames,
)


@pytest.fixture
def strict_farm(tmp_path: Path) -> Iterator[Farm]:
    """A farm with a low blocklist threshold and a short task timeout."""
    settings = make_settings(tmp_path / "data", blocklist_threshold=2)
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


def farm_for(client: TestClient, settings: ManagerSettings) -> Farm:
    assert settings.admin_token and settings.runner_token
    return Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def manager_of(farm: Farm) -> ManagerContext:
    """The manager's own state (its database, its store), for what no API shows."""
    found: ManagerContext = farm.client.app.state.farm  # type: ignore[attr-defined]
    return found


def add_user(farm: Farm, name: str) -> dict[str, str]:
    """A second person on the farm (accounts have no API of their own yet)."""
    secret = new_token("api")
    with manager_of(farm).db.transaction() as session:
        user = User(name=name, role="user", created_at=utcnow())
        session.add(user)
        session.flush()
        session.add(
            ApiToken(user_id=user.id, name="t", token_hash=token_hash(secret), created_at=utcnow())
        )
    return {"Authorization": f"Bearer {secret}"}


def submit(
    farm: Farm,
    frames: str = "1-2",
    chunk: int = 1,
    headers: dict[str, str] | None = None,
    **settings: Any,
) -> int:
    start, end = frames.split("-")
    body = {"frame_start": int(start), "frame_end": int(end), "chunk_size": chunk, **settings}
    return submit_stand_in(farm.client, headers or farm.admin, **body)


def runner(
    farm: Farm, name: str, tags: list[str] | None = None, types: list[str] | None = None
) -> dict[str, str]:
    caps: dict[str, object] = {"tags": tags or []}
    if types:
        caps["task_types"] = types
    answer = farm.client.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": name,
            "capabilities": {"protocol": WORKER_PROTOCOL, **caps},
        },
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def claim(farm: Farm, who: dict[str, str]) -> dict[str, Any] | None:
    """The task a claim hands `who`, or None when it is told there is nothing for it."""
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=who)
    assert answer.status_code in (200, 204), answer.text
    task: dict[str, Any] | None = answer.json() if answer.status_code == 200 else None
    return task


def claimed(farm: Farm, who: dict[str, str]) -> dict[str, Any]:
    """The task a claim must hand `who` (the test fails if it hands none)."""
    task = claim(farm, who)
    assert task is not None, "the claim handed out no task"
    return task


def finish(farm: Farm, who: dict[str, str], task: dict[str, Any]) -> None:
    upload_frames(farm, who, task)
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=who,
        json={"frames": task["frames"]},
    )
    assert answer.status_code == 200, answer.text


def fail(
    farm: Farm, who: dict[str, str], task: dict[str, Any], reason: str = "boom"
) -> dict[str, Any]:
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=who, json={"reason": reason}
    )
    assert answer.status_code == 200, answer.text
    outcome: dict[str, Any] = answer.json()
    return outcome


def job(farm: Farm, job_id: int) -> dict[str, Any]:
    detail: dict[str, Any] = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    return detail


def runners(farm: Farm) -> dict[str, dict[str, Any]]:
    listing = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return {r["name"]: r for r in listing}


def act(farm: Farm, worker_id: int, action: str, when: str = "after-task") -> dict[str, Any]:
    answer = farm.client.post(
        f"/api/admin/runners/{worker_id}/actions",
        headers=farm.admin,
        json={"action": action, "when": when},
    )
    assert answer.status_code == 200, answer.text
    outcome: dict[str, Any] = answer.json()
    return outcome


# ------------------------------------------------------------------------------ order


def test_priority_can_change_while_queued(farm: Farm) -> None:
    first = submit(farm, "1-1")
    later = submit(farm, "1-1")
    answer = farm.client.patch(f"/api/jobs/{later}", headers=farm.admin, json={"priority": 90})
    assert answer.json()["priority"] == 90
    w = runner(farm, "w")
    assert claimed(farm, w)["job_id"] == later
    assert claimed(farm, w)["job_id"] == first
    bad = farm.client.patch(f"/api/jobs/{first}", headers=farm.admin, json={"priority": 101})
    assert bad.status_code == 400


def test_fair_share_between_users_at_equal_priority(farm: Farm) -> None:
    busy_user = add_user(farm, "alice")
    quiet_user = add_user(farm, "bob")
    alice_jobs = [submit(farm, "1-3", headers=busy_user) for _ in range(5)]
    bob_job = submit(farm, "1-3", headers=quiet_user)
    workers = [runner(farm, f"w{n}") for n in range(4)]
    got = [claimed(farm, w)["job_id"] for w in workers]
    # Alice's jobs are older, but once she holds a worker Bob's job goes first.
    assert got[0] == alice_jobs[0]
    assert got[1] == bob_job
    assert got.count(bob_job) == 2 and set(got) - {bob_job} == {alice_jobs[0]}


def test_fair_share_comes_before_the_job_a_worker_prefers(farm: Farm) -> None:
    """A worker asking for the next task of the job it holds (`complete?next=true`, what
    the worker sends between tasks; or `prefer_job`, what it sends when it claims) does
    not keep a second user's job waiting at the same priority until the first user's
    whole job is done: the preference only breaks ties of fair share."""
    alice, bob = add_user(farm, "alice"), add_user(farm, "bob")
    big = submit(farm, "1-12", headers=alice)
    w1, w2 = runner(farm, "w1"), runner(farm, "w2")
    first, second = claimed(farm, w1), claimed(farm, w2)
    assert first["job_id"] == second["job_id"] == big
    small = submit(farm, "1-4", headers=bob)

    def complete_next(who: dict[str, str], task: dict[str, Any]) -> dict[str, Any]:
        upload_frames(farm, who, task)
        answer = farm.client.post(
            f"/api/runner/tasks/{task['task_id']}/complete",
            headers=who,
            params={"next": "true"},
            json={"frames": task["frames"]},
        )
        assert answer.status_code == 200, answer.text
        following: dict[str, Any] = answer.json()["next_task"]
        return following

    first = complete_next(w1, first)
    assert first["job_id"] == small, "alice still holds w2, bob holds nobody: bob's turn"
    second = complete_next(w2, second)
    assert second["job_id"] == big, "now each holds one worker"
    assert job(farm, small)["status"] == "active"

    # A claim naming the held job, as the worker agent sends it, shares the same way.
    third = submit(farm, "1-2", headers=add_user(farm, "carol"))  # nobody on it yet
    w3 = runner(farm, "w3")
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0, "prefer_job": big}, headers=w3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_id"] == third, "carol holds no worker; alice and bob one each"


def test_per_job_worker_cap(farm: Farm) -> None:
    capped = submit(farm, "1-6", max_workers=1)
    other = submit(farm, "1-6")
    w1, w2 = runner(farm, "w1"), runner(farm, "w2")
    assert claimed(farm, w1)["job_id"] == capped
    assert claimed(farm, w2)["job_id"] == other, "the capped job already has its one worker"


# -------------------------------------------------------------------------------- fit


def test_required_tags_and_task_types(farm: Farm) -> None:
    gpu_job = submit(farm, "1-1", required_tags=["gpu"])
    plain = runner(farm, "plain")
    video_only = runner(farm, "encoder", tags=["gpu"], types=["video"])
    gpu = runner(farm, "gpu-box", tags=["gpu", "highmem"])
    assert claim(farm, plain) is None, "a job needing gpu never goes to a worker without it"
    assert claim(farm, video_only) is None, "a render task never goes to a video-only worker"
    assert claimed(farm, gpu)["job_id"] == gpu_job
    bad = post_stand_in(farm.client, farm.admin, required_tags=["Has Spaces"])
    assert bad.status_code == 400


# ------------------------------------------------------------------ retries, blocklists


def test_failed_task_goes_to_another_worker_first(farm: Farm) -> None:
    submit(farm, "1-2")
    a, b = runner(farm, "a"), runner(farm, "b")
    first = claim(farm, a)
    assert first is not None and first["frames"] == [1]
    fail(farm, a, first)
    second = claim(farm, a)
    assert second is not None and second["frames"] == [2], "a does not get back what it failed"
    retry = claim(farm, b)
    assert retry is not None and retry["task_id"] == first["task_id"]


def test_failed_task_returns_to_the_same_worker_when_alone(farm: Farm) -> None:
    submit(farm, "1-1")
    a = runner(farm, "a")
    first = claimed(farm, a)
    fail(farm, a, first)
    again = claim(farm, a)
    assert again is not None and again["task_id"] == first["task_id"]


def test_blocklist_after_repeated_failures_and_admin_clears_it(strict_farm: Farm) -> None:
    farm = strict_farm
    job_id = submit(farm, "1-4", max_attempts=5)
    a, b = runner(farm, "a"), runner(farm, "b")
    for _ in range(2):
        task = claim(farm, a)
        assert task is not None
        fail(farm, a, task)
    assert claim(farm, a) is None, "a is blocklisted from this job"
    entries = farm.client.get("/api/admin/blocklist", headers=farm.admin).json()
    assert [(e["worker"], e["job_id"]) for e in entries] == [("a", job_id)]
    assert claim(farm, b) is not None, "b still works on the job"
    cleared = farm.client.delete(f"/api/admin/blocklist/{entries[0]['id']}", headers=farm.admin)
    assert cleared.status_code == 204
    assert claim(farm, a) is not None


def test_a_cleared_worker_starts_again_with_a_clean_slate(strict_farm: Farm) -> None:
    """Clearing an entry (or requeueing the job) forgives the failures behind it: the
    worker's next failure is its first again, not the one past the threshold."""
    farm = strict_farm
    submit(farm, "1-6", max_attempts=5)
    a, b = runner(farm, "a"), runner(farm, "b")
    for _ in range(2):
        fail(farm, a, claimed(farm, a))
    [entry] = farm.client.get("/api/admin/blocklist", headers=farm.admin).json()
    cleared = farm.client.delete(f"/api/admin/blocklist/{entry['id']}", headers=farm.admin)
    assert cleared.status_code == 204
    fail(farm, a, claimed(farm, a))
    assert farm.client.get("/api/admin/blocklist", headers=farm.admin).json() == [], (
        "one failure after the clear is below the threshold of 2"
    )
    assert claim(farm, a) is not None, "a still takes the job's work"
    assert claim(farm, b) is not None


def test_blocklist_lists_one_jobs_entries(strict_farm: Farm) -> None:
    """`?job_id=` narrows the listing to one job (the job page's Blocklist section)."""
    farm = strict_farm
    first = submit(farm, "1-4", max_attempts=5, priority=90)
    second = submit(farm, "1-4", max_attempts=5, priority=10)
    a, b = runner(farm, "a"), runner(farm, "b")
    runner(farm, "c")  # idle: a task a or b failed goes to another of theirs first
    for who in (a, a, a, a, b, b):  # a: two tasks of the first job, then of the second
        task = claim(farm, who)
        assert task is not None
        fail(farm, who, task)

    def listed(**params: object) -> list[tuple[str, int]]:
        answer = farm.client.get("/api/admin/blocklist", params=params, headers=farm.admin)
        assert answer.status_code == 200, answer.text
        return [(e["worker"], e["job_id"]) for e in answer.json()]

    assert sorted(listed()) == sorted([("a", first), ("a", second), ("b", first)])
    assert sorted(listed(job_id=first)) == [("a", first), ("b", first)]
    assert listed(job_id=second) == [("a", second)]
    third = submit(farm, "1-1")
    assert listed(job_id=third) == [], "a job with no entries"
    unknown = farm.client.get(
        "/api/admin/blocklist", params={"job_id": third + 100}, headers=farm.admin
    )
    assert unknown.status_code == 404, "no job at all is not a job with no entries"
    assert unknown.json()["detail"] == f"job {third + 100} not found"
    for bad in ("abc", "1.5", "", "1e3", "99999999999999999999999"):
        answer = farm.client.get("/api/admin/blocklist", params={"job_id": bad}, headers=farm.admin)
        assert answer.status_code == 400, (bad, answer.status_code, answer.text)
        assert "job_id" in answer.json()["detail"] or "out of range" in answer.json()["detail"]
    user = add_user(farm, "mallory")
    refused = farm.client.get("/api/admin/blocklist", params={"job_id": first}, headers=user)
    assert refused.status_code == 403


def test_a_worker_blocklisted_from_renders_still_makes_the_video(strict_farm: Farm) -> None:
    """A blocklist entry bars a worker from one task type of a job, not the whole job:
    the job's video still goes to the one worker that makes videos, instead of the job
    staying active forever with its video queued and nobody taking it."""
    farm = strict_farm
    video = {"codec": "h264", "container": "mp4"}
    job_id = submit(farm, "1-4", max_attempts=5, video=video)
    encoder = runner(farm, "encoder", types=["render", "video"])
    renderer = runner(farm, "renderer")
    for _ in range(2):  # the threshold is 2: blocklisted from the job's render tasks
        fail(farm, encoder, claimed(farm, encoder))
    entries = farm.client.get("/api/admin/blocklist", headers=farm.admin).json()
    assert [(e["worker"], e["task_type"]) for e in entries] == [("encoder", "render")]
    assert claim(farm, encoder) is None, "no render task, and the video waits for the renders"
    while (task := claim(farm, renderer)) is not None:
        assert task["type"] == "render"
        finish(farm, renderer, task)

    made = claim(farm, encoder)

    assert made is not None, "the only worker that makes videos gets the job's video"
    assert (made["job_id"], made["type"]) == (job_id, "video")
    state = job(farm, job_id)
    assert [t["status"] for t in state["tasks"] if t["type"] == "video"] == ["active"]


CANNOT_CUT = "frame {}: cannot cut the tile out of frame_000{}.png: cannot write empty image"


def test_job_fails_when_no_worker_is_left_and_says_what_went_wrong(strict_farm: Farm) -> None:
    """The job's reason names the cause, not only that every worker was blocklisted."""
    farm = strict_farm
    job_id = submit(farm, "1-4", max_attempts=5)
    a, b = runner(farm, "a"), runner(farm, "b")
    first, second = claimed(farm, a), claimed(farm, b)
    fail(farm, a, first, CANNOT_CUT.format(1, 1))
    fail(farm, b, second, CANNOT_CUT.format(2, 2))
    swapped_a, swapped_b = claimed(farm, a), claimed(farm, b)  # each takes the other's
    assert (swapped_a["task_id"], swapped_b["task_id"]) == (second["task_id"], first["task_id"])
    fail(farm, a, swapped_a, CANNOT_CUT.format(2, 2))  # a: 2 tasks failed, blocklisted
    assert job(farm, job_id)["status"] == "active", "b may still run the job"
    fail(farm, b, swapped_b, CANNOT_CUT.format(1, 1))  # b too: nobody left

    state = job(farm, job_id)
    assert state["status"] == "failed"
    nobody = "no worker left that may run it (2 blocklisted, last: b; none other available)"
    assert state["status_reason"] == (
        f"task 0 failed: {nobody}; its last error: {CANNOT_CUT.format(1, 1)}"
    )
    errors = [t["last_error"] for t in state["tasks"]]
    assert errors[1] == f"{nobody}; its last error: {CANNOT_CUT.format(2, 2)}"
    never_failed = f"{nobody}; the job's last render error: {CANNOT_CUT.format(1, 1)}"
    assert errors[2:] == [never_failed] * 2, "what blocklisted the workers"


def test_a_job_failed_for_want_of_workers_says_so_under_a_failure_share(
    tmp_path: Path,
) -> None:
    """With a failure share, tasks may fail on their own before the workers are
    blocklisted; what fails the job is that nobody is left, and its reason says that,
    not the first task's own error."""
    settings = make_settings(tmp_path / "data", job_failure_share=0.9)
    with TestClient(create_app(settings)) as client:
        farm = farm_for(client, settings)
        job_id = submit(farm, "1-10", max_attempts=1)
        s1, s2 = runner(farm, "s1"), runner(farm, "s2")
        for name, who in (("s1", s1), ("s2", s2)):
            for n in range(3):  # the default threshold: blocklisted after the third
                assert job(farm, job_id)["status"] != "failed"
                fail(farm, who, claimed(farm, who), f"{name}: CUDA error {n}")

        state = job(farm, job_id)
        assert state["status"] == "failed"
        nobody = "no worker left that may run it (2 blocklisted, last: s2; none other available)"
        assert state["status_reason"] == (
            f"task 6 failed: {nobody}; the job's last render error: s2: CUDA error 2"
        )
        assert state["tasks"][0]["last_error"] == "s1: CUDA error 0", "its own error stays"


def test_the_error_a_failed_job_quotes_is_one_bounded_line(strict_farm: Farm) -> None:
    farm = strict_farm
    job_id = submit(farm, "1-2", max_attempts=5)
    a, b = runner(farm, "a"), runner(farm, "b")
    blender = "Error: Python: Traceback (most recent call last):\n" + "  line\n" * 1000
    first, second = claimed(farm, a), claimed(farm, b)
    fail(farm, a, first, blender)
    fail(farm, b, second, blender)
    fail(farm, a, claimed(farm, a), blender)
    fail(farm, b, claimed(farm, b), blender)
    reason = job(farm, job_id)["status_reason"]
    assert reason.startswith("task 0 failed: no worker left that may run it (2 blocklisted")
    assert "; its last error: Error: Python: Traceback (most recent call last): line line" in reason
    assert "\n" not in reason and reason.endswith("…") and len(reason) < 500


def test_failure_share_lets_a_job_run_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", job_failure_share=0.5)
    with TestClient(create_app(settings)) as client:
        farm = farm_for(client, settings)
        job_id = submit(farm, "1-4", max_attempts=1)
        w = runner(farm, "w")
        assert fail(farm, w, claimed(farm, w))["job_status"] == "active"
        while (task := claim(farm, w)) is not None:
            finish(farm, w, task)
        state = job(farm, job_id)
        assert state["status"] == "failed", "a job with a failed task never ends completed"
        assert [t["status"] for t in state["tasks"]] == ["failed"] + ["completed"] * 3


def test_task_with_no_progress_times_out_and_is_retried(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", task_timeout=0.5, reaper_interval=0.1)
    with TestClient(create_app(settings)) as client:
        farm = farm_for(client, settings)
        time.sleep(0.6)  # past the manager's start-up grace
        job_id = submit(farm, "1-1")
        hung, healthy = runner(farm, "hung"), runner(farm, "healthy")
        task = claim(farm, hung)
        assert task is not None
        deadline = time.monotonic() + 10
        while job(farm, job_id)["tasks"][0]["status"] == "active" and time.monotonic() < deadline:
            time.sleep(0.1)
        state = job(farm, job_id)["tasks"][0]
        assert state["status"] == "queued" and "no progress" in state["last_error"]
        progress = farm.client.post(
            f"/api/runner/tasks/{task['task_id']}/progress", headers=hung, json={}
        )
        assert progress.json() == {"keep_going": False}, "the hung worker is told to stop"
        assert claimed(farm, healthy)["task_id"] == task["task_id"]


@pytest.mark.parametrize(
    ("task_timeout", "said"),
    [(25, "25 s"), (600, "10 min"), (1800, "30 min"), (5400, "1 h 30 min"), (90, "1 min 30 s")],
)
def test_the_no_progress_reason_says_the_timeout_in_readable_units(
    farm: Farm, task_timeout: float, said: str
) -> None:
    """Not `no progress for 0.416667 minutes`."""
    job_id = submit(farm, "1-1")
    w = runner(farm, "w")
    claimed(farm, w)
    manager = manager_of(farm)
    later = utcnow() + timedelta(seconds=task_timeout + 1)
    with manager.db.transaction() as session:
        clock = ReaperClock(later - timedelta(days=1))
        fail_stuck_tasks(session, later, task_timeout, clock, manager.policy, ReapReport())
    assert job(farm, job_id)["tasks"][0]["last_error"] == f"no progress for {said}"


# ------------------------------------------------------------------------- job control


def test_requeueing_the_failed_tasks_of_a_job_with_none_leaves_it_as_it_was(farm: Farm) -> None:
    """A completed job keeps its finish time: it was moved to the moment of a requeue
    that requeued nothing (and the job re-derived, and announced, for nothing)."""
    job_id = submit(farm, "1-2")
    w = runner(farm, "w")
    while (task := claim(farm, w)) is not None:
        finish(farm, w, task)
    done = job(farm, job_id)
    assert done["status"] == "completed" and done["finished_at"] is not None
    time.sleep(0.05)  # a finish time moved to now would differ from the one above
    again = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "requeue-failed"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["requeued"] == 0, "the answer says nothing was requeued"
    after = job(farm, job_id)
    assert (after["status"], after["finished_at"]) == ("completed", done["finished_at"])
    assert [t["status"] for t in after["tasks"]] == ["completed", "completed"]


def test_pause_resume_requeue_and_delete(farm: Farm) -> None:
    job_id = submit(farm, "1-3")
    w = runner(farm, "w")
    running = claim(farm, w)
    assert running is not None
    paused = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "pause"}
    )
    assert paused.json()["status"] == "paused"
    assert paused.json()["requeued"] is None, "only a requeue counts what it requeued"
    finish(farm, w, running)  # the running task may finish while paused
    assert claim(farm, w) is None, "no new task of a paused job starts"
    assert job(farm, job_id)["status"] == "paused"
    resumed = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "resume"}
    )
    assert resumed.json()["status"] == "active"
    while (task := claim(farm, w)) is not None:
        finish(farm, w, task)
    assert job(farm, job_id)["status"] == "completed"

    again = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "requeue-all"}
    )
    assert (again.json()["status"], again.json()["requeued"]) == ("queued", 3)
    assert [t["status"] for t in job(farm, job_id)["tasks"]] == ["queued"] * 3
    conflict = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "resume"}
    )
    assert conflict.status_code == 409

    blob_files = list((farm.data_dir / "blobs" / "sha256").rglob("*"))
    kept = submit(farm, "1-1")  # shares the same .blend blob
    gone = farm.client.delete(f"/api/jobs/{job_id}?purge=true", headers=farm.admin)
    assert gone.status_code == 204
    assert farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).status_code == 404
    assert job(farm, kept)["status"] == "queued"
    left = list((farm.data_dir / "blobs" / "sha256").rglob("*"))
    assert len(left) < len(blob_files), "the deleted job's frames are gone"
    blend = manager_of(farm).blobs
    assert any(blend.has(path.parent.name + path.name) for path in left), "the shared .blend stays"


def test_requeueing_a_paused_job_keeps_it_paused(farm: Farm) -> None:
    """Pause means no new task starts: a requeue (all tasks, or the failed and canceled
    ones) puts tasks back in the queue, but does not resume the job behind its owner's
    back."""
    job_id = submit(farm, "1-3")
    w = runner(farm, "w")
    finish(farm, w, claimed(farm, w))
    url = f"/api/jobs/{job_id}/actions"
    paused = farm.client.post(url, headers=farm.admin, json={"action": "pause"})
    assert paused.json()["status"] == "paused"

    again = farm.client.post(url, headers=farm.admin, json={"action": "requeue-all"})

    assert again.status_code == 200, again.text
    assert again.json()["status"] == "paused"
    assert [t["status"] for t in job(farm, job_id)["tasks"]] == ["queued"] * 3
    assert claim(farm, w) is None, "no task of a paused job starts"

    task = job(farm, job_id)["tasks"][1]
    canceled = farm.client.post(
        f"/api/jobs/{job_id}/tasks/{task['id']}/actions",
        headers=farm.admin,
        json={"action": "cancel"},
    )
    assert canceled.json()["status"] == "paused"
    failed_again = farm.client.post(url, headers=farm.admin, json={"action": "requeue-failed"})
    assert failed_again.json()["status"] == "paused"
    assert claim(farm, w) is None, "still paused"

    resumed = farm.client.post(url, headers=farm.admin, json={"action": "resume"})
    assert resumed.json()["status"] in ("queued", "active")
    assert claimed(farm, w)["job_id"] == job_id


def test_requeue_failed_only_reruns_failed_tasks(farm: Farm) -> None:
    job_id = submit(farm, "1-2", max_attempts=1)
    w = runner(farm, "w")
    finish(farm, w, claimed(farm, w))
    fail(farm, w, claimed(farm, w))
    assert job(farm, job_id)["status"] == "failed"
    again = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "requeue-failed"}
    )
    assert again.json()["requeued"] == 1, "the failed task, not the completed one"
    assert [t["status"] for t in job(farm, job_id)["tasks"]] == ["completed", "queued"]
    finish(farm, w, claimed(farm, w))
    assert job(farm, job_id)["status"] == "completed"


def test_a_task_ended_unfinished_counts_the_frames_it_stored(farm: Farm) -> None:
    """A task canceled or failed for good counts as done the frames it uploaded, as the
    job's page and its download show them: its last progress report lagged a frame
    uploaded since (a canceled 40-frame job said 12/40 and downloaded 14), and a
    failure zeroed it."""
    canceled = submit(farm, "1-4", chunk=4)
    w = runner(farm, "w")
    task = claimed(farm, w)
    for frame in (1, 2, 3):
        assert upload_frame(farm, w, task, frame, png_bytes()).status_code == 201
    progress = f"/api/runner/tasks/{task['task_id']}/progress"
    assert farm.client.post(progress, headers=w, json={"frames_done": 1}).status_code == 200
    assert job(farm, canceled)["frames_done"] == 1, "frames 2 and 3 not reported yet"
    assert farm.client.delete(f"/api/jobs/{canceled}", headers=farm.admin).status_code == 200
    after = job(farm, canceled)
    assert (after["status"], after["frames_done"]) == ("canceled", 3)
    assert after["tasks"][0]["frames_done"] == 3

    one = submit(farm, "1-4", chunk=2)
    task = claimed(farm, w)
    assert upload_frame(farm, w, task, task["frames"][0], png_bytes()).status_code == 201
    url = f"/api/jobs/{one}/tasks/{task['task_id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "cancel"}).status_code == 200
    assert [t["frames_done"] for t in job(farm, one)["tasks"]] == [1, 0]

    failing = submit(farm, "1-2", chunk=2, max_attempts=1, priority=100)  # ahead of `one`
    task = claimed(farm, w)
    assert task["job_id"] == failing
    assert upload_frame(farm, w, task, 1, png_bytes()).status_code == 201
    fail(farm, w, task)
    after = job(farm, failing)
    assert (after["status"], after["frames_done"]) == ("failed", 1)


def test_tasks_failed_because_no_worker_is_left_count_the_frames_they_stored(
    strict_farm: Farm,
) -> None:
    """The other way a task fails for good: every worker blocklisted, the job's queued
    tasks fail at once. One of them had stored a frame in an earlier attempt; the job
    says 1 frame done, as its files list and download have it (it said 0)."""
    farm = strict_farm
    job_id = submit(farm, "1-4", chunk=2, max_attempts=5)
    w, x = runner(farm, "w"), runner(farm, "x")
    a = claimed(farm, w)
    assert upload_frame(farm, w, a, a["frames"][0], png_bytes()).status_code == 201
    b = claimed(farm, x)
    fail(farm, w, a)
    fail(farm, x, b)
    fail(farm, w, claimed(farm, w))  # w has failed two tasks: blocklisted
    fail(farm, x, claimed(farm, x))  # x too: nobody is left, the tasks fail for good
    after = job(farm, job_id)
    assert after["status"] == "failed"
    assert [(t["status"], t["frames_done"]) for t in after["tasks"]] == [
        ("failed", 1),
        ("failed", 0),
    ]
    assert after["frames_done"] == 1


def test_two_stuck_tasks_of_a_job_that_fails_at_the_first_time_out_together(farm: Farm) -> None:
    """Two hung Blenders on one job with one attempt each: the first timeout fails the
    job, which cancels the other task. The reaper passed by it; it tried to fail a
    canceled task, which rolled the whole step back at every pass, so neither task
    ever timed out and the job stayed active with two hung workers."""
    job_id = submit(farm, "1-2", chunk=1, max_attempts=1)
    claimed(farm, runner(farm, "w1"))
    claimed(farm, runner(farm, "w2"))
    manager = manager_of(farm)
    task_timeout = 60.0
    later = utcnow() + timedelta(seconds=task_timeout + 1)
    with manager.db.transaction() as session:
        clock = ReaperClock(later - timedelta(days=1))
        fail_stuck_tasks(session, later, task_timeout, clock, manager.policy, ReapReport())
    after = job(farm, job_id)
    assert after["status"] == "failed"
    assert sorted(t["status"] for t in after["tasks"]) == ["canceled", "failed"]


def test_the_time_a_frame_takes_leaves_out_a_task_canceled_after_a_lagging_report(
    farm: Farm,
) -> None:
    """Every frame takes 10 s. Task A reported 1 frame (10 s) and stored 2, then is
    canceled: it counts 2 frames done, which its 10 s do not cover, so the job's time a
    frame is the completed task's 10 s (it said 7.5)."""
    job_id = submit(farm, "1-6", chunk=2)
    w1, w2 = runner(farm, "w1"), runner(farm, "w2")
    a, b = claimed(farm, w1), claimed(farm, w2)

    def report(who: dict[str, str], task: dict[str, Any], done: int, seconds: float) -> None:
        url = f"/api/runner/tasks/{task['task_id']}/progress"
        body = {"frames_done": done, "render_seconds": seconds}
        assert farm.client.post(url, headers=who, json=body).status_code == 200

    upload_frames(farm, w1, a)
    report(w1, a, 1, 10.0)
    report(w2, b, 2, 20.0)
    finish(farm, w2, b)
    claimed(farm, w2)  # the job goes on
    url = f"/api/jobs/{job_id}/tasks/{a['task_id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "cancel"}).status_code == 200
    after = job(farm, job_id)
    assert after["tasks"][0]["frames_done"] == 2
    assert after["seconds_per_frame"] == 10.0


def video_runner(farm: Farm, name: str) -> dict[str, str]:
    """A runner that renders and makes videos (scripted: the manager never checks)."""
    return runner(farm, name, types=["render", "video"])


def test_a_frame_of_a_failed_job_with_a_video_requeued_brings_back_what_the_video_needs(
    farm: Farm,
) -> None:
    """Frame 0 fails for good: the job fails, frames 1-2 and the video are canceled.
    Requeueing frame 0 requeues the video that depends on it and the frames the video
    waits for: the job runs to its video. The video waited for ever for the canceled
    frames, the job active with nothing to hand out."""
    job_id = submit(farm, "1-3", chunk=1, video=True, max_attempts=1)
    w = video_runner(farm, "w")
    first = claimed(farm, w)
    fail(farm, w, first)
    assert job(farm, job_id)["status"] == "failed"
    url = f"/api/jobs/{job_id}/tasks/{first['task_id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "requeue"}).status_code == 200
    tasks = job(farm, job_id)["tasks"]
    assert [t["status"] for t in tasks] == ["queued"] * 4, tasks
    assert tasks[1]["last_error"] == "a task that depends on it runs again"
    for _ in range(3):
        finish(farm, w, claimed(farm, w))
    assert claimed(farm, w)["type"] == "video", "the video is handed out, not waiting"


@pytest.fixture
def share_farm(tmp_path: Path) -> Iterator[Farm]:
    """Blocklisted from a job at two failed tasks; a job fails once half its tasks did."""
    settings = make_settings(tmp_path / "data", blocklist_threshold=2, job_failure_share=0.5)
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


def test_tasks_failed_as_no_worker_is_left_cancel_the_video_waiting_for_them(
    share_farm: Farm,
) -> None:
    """Half a job's frames done, both workers blocklisted: the other frames fail for good
    (no worker left), under the failure share the job still runs, and the video that
    waited for them is canceled saying which. It stayed queued for ever, the job active."""
    farm = share_farm
    job_id = submit(farm, "1-10", chunk=1, video=True, max_attempts=5)
    w, x = video_runner(farm, "w"), video_runner(farm, "x")
    for _ in range(5):
        finish(farm, w, claimed(farm, w))
    for _ in range(2):  # each fails two different tasks: both blocklisted
        held = [(who, claimed(farm, who)) for who in (w, x)]
        for who, task in held:
            fail(farm, who, task)
    after = job(farm, job_id)
    video = after["tasks"][-1]
    assert video["type"] == "video" and video["status"] == "canceled", video
    assert "it depends on is failed" in video["last_error"], video
    assert after["status"] == "failed", after
    assert [t["status"] for t in after["tasks"] if t["status"] in ("queued", "active")] == []


def test_a_completed_frame_requeued_after_no_worker_was_left_runs_the_job_again(
    share_farm: Farm,
) -> None:
    """The job above, failed because no worker was left; a person requeues a completed
    frame. The failed frames the video needs come back with it, and the blocklist that
    kept everyone from them is cleared, as a job's requeue clears it: the job runs. They
    waited for ever, the job active, nobody allowed to take them and nothing said."""
    farm = share_farm
    job_id = submit(farm, "1-10", chunk=1, video=True, max_attempts=5)
    w, x = video_runner(farm, "w"), video_runner(farm, "x")
    first = claimed(farm, w)
    finish(farm, w, first)
    for _ in range(4):
        finish(farm, w, claimed(farm, w))
    for _ in range(2):
        held = [(who, claimed(farm, who)) for who in (w, x)]
        for who, task in held:
            fail(farm, who, task)
    assert job(farm, job_id)["status"] == "failed"
    url = f"/api/jobs/{job_id}/tasks/{first['task_id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "requeue"}).status_code == 200
    after = job(farm, job_id)
    assert after["status"] in ("queued", "active"), after
    assert [t["status"] for t in after["tasks"]].count("queued") == 7  # 1 + 5 failed + video
    assert farm.client.get("/api/admin/blocklist", headers=farm.admin).json() == []
    assert claimed(farm, w)["job_id"] == job_id


def test_task_actions(farm: Farm) -> None:
    job_id = submit(farm, "1-2")
    tasks = job(farm, job_id)["tasks"]
    url = f"/api/jobs/{job_id}/tasks/{tasks[1]['id']}/actions"
    canceled = farm.client.post(url, headers=farm.admin, json={"action": "cancel"})
    assert canceled.status_code == 200
    w = runner(farm, "w")
    finish(farm, w, claimed(farm, w))
    assert claim(farm, w) is None
    assert job(farm, job_id)["status"] == "canceled", "nothing left to run, one task canceled"
    farm.client.post(url, headers=farm.admin, json={"action": "requeue"})
    finish(farm, w, claimed(farm, w))
    assert job(farm, job_id)["status"] == "completed"


def test_canceled_and_requeued_tasks_say_why(farm: Farm) -> None:
    """`last_error` of a task that is not done says why it went back to the queue or was
    canceled, not an older, unrelated reason (nor nothing)."""
    me = farm.client.get("/api/auth/me", headers=farm.admin).json()["user"]["name"]
    w = runner(farm, "w")

    held_id = submit(farm, "1-2")
    task = claimed(farm, w)
    released = farm.client.post(f"/api/runner/tasks/{task['task_id']}/release", headers=w, json={})
    assert released.status_code == 200, released.text
    assert job(farm, held_id)["tasks"][0]["last_error"] == "worker shutting down"
    url = f"/api/jobs/{held_id}/tasks/{task['task_id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "cancel"}).is_success
    assert job(farm, held_id)["tasks"][0]["last_error"] == f"canceled by {me}"
    assert farm.client.post(url, headers=farm.admin, json={"action": "requeue"}).is_success
    assert job(farm, held_id)["tasks"][0]["last_error"] == f"requeued by {me}"

    assert farm.client.delete(f"/api/jobs/{held_id}", headers=farm.admin).is_success
    state = job(farm, held_id)
    assert [t["status"] for t in state["tasks"]] == ["canceled", "canceled"]
    assert [t["last_error"] for t in state["tasks"]] == [f"canceled by {me}"] * 2

    failing = submit(farm, "1-3", max_attempts=1)
    fail(farm, w, claimed(farm, w), "out of memory")
    state = job(farm, failing)
    assert state["status"] == "failed"
    assert [t["last_error"] for t in state["tasks"]] == [
        "out of memory",
        "canceled: the job failed",
        "canceled: the job failed",
    ]
    requeued = farm.client.post(
        f"/api/jobs/{failing}/actions", headers=farm.admin, json={"action": "requeue-failed"}
    )
    assert requeued.status_code == 200, requeued.text
    assert [t["last_error"] for t in job(farm, failing)["tasks"]] == [f"requeued by {me}"] * 3


def test_a_job_ended_by_canceling_one_task_says_which_and_by_whom(farm: Farm) -> None:
    """A job whose other tasks completed ends `canceled` because one task was canceled:
    its reason names that task and who canceled it (not the video canceled with it)."""
    me = farm.client.get("/api/auth/me", headers=farm.admin).json()["user"]["name"]
    job_id = submit(farm, "1-4", chunk=2, video={"codec": "h264", "container": "mp4"})
    first, _, video = job(farm, job_id)["tasks"]
    assert video["type"] == "video"
    url = f"/api/jobs/{job_id}/tasks/{first['id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "cancel"}).is_success
    w = runner(farm, "w", types=["render", "video"])
    finish(farm, w, claimed(farm, w))
    assert claim(farm, w) is None
    state = job(farm, job_id)
    assert state["status"] == "canceled"
    assert state["status_reason"] == f"task 0 canceled by {me}"
    assert state["tasks"][2]["last_error"] == "task 0 it depends on is canceled"
    listed = farm.client.get("/api/jobs", headers=farm.admin).json()
    assert next(j for j in listed if j["id"] == job_id)["status_reason"] == state["status_reason"]

    # Running it again (requeue) clears the reason with the status.
    assert farm.client.post(url, headers=farm.admin, json={"action": "requeue"}).is_success
    assert (job(farm, job_id)["status"], job(farm, job_id)["status_reason"]) == ("active", None)

    # The task a person canceled, not one canceled for want of it, even at a lower index.
    waits = submit(farm, "1-2")
    dependent, dependency = job(farm, waits)["tasks"]
    with manager_of(farm).db.transaction() as session:
        session.add(TaskDependency(task_id=dependent["id"], depends_on_id=dependency["id"]))
    url = f"/api/jobs/{waits}/tasks/{dependency['id']}/actions"
    assert farm.client.post(url, headers=farm.admin, json={"action": "cancel"}).is_success
    state = job(farm, waits)
    assert [t["status"] for t in state["tasks"]] == ["canceled", "canceled"]
    assert (state["status"], state["status_reason"]) == ("canceled", f"task 1 canceled by {me}")


def test_dependencies_wait_and_propagate_failure(farm: Farm) -> None:
    job_id = submit(farm, "1-2", max_attempts=1)
    tasks = job(farm, job_id)["tasks"]
    with manager_of(farm).db.transaction() as session:
        session.add(TaskDependency(task_id=tasks[0]["id"], depends_on_id=tasks[1]["id"]))
    a, b = runner(farm, "a"), runner(farm, "b")
    first = claim(farm, a)
    assert first is not None and first["task_id"] == tasks[1]["id"], "the dependency runs first"
    assert claim(farm, b) is None, "the dependent task waits"
    fail(farm, a, first)
    state = job(farm, job_id)
    assert state["tasks"][0]["status"] == "canceled"
    assert "depends on" in state["tasks"][0]["last_error"]


# ---------------------------------------------------------------------- worker control


def test_drain_finishes_the_task_then_stops(farm: Farm) -> None:
    submit(farm, "1-3")
    w = runner(farm, "w")
    worker_id = runners(farm)["w"]["id"]
    task = claimed(farm, w)
    assert act(farm, worker_id, "drain")["status"] == "draining"
    finish(farm, w, task)
    assert claim(farm, w) is None
    assert runners(farm)["w"]["status"] == "disabled"
    assert act(farm, worker_id, "enable")["status"] == "idle"
    assert claim(farm, w) is not None


def test_disable_now_requeues_the_running_task(farm: Farm) -> None:
    job_id = submit(farm, "1-1")
    w, other = runner(farm, "w"), runner(farm, "other")
    worker_id = runners(farm)["w"]["id"]
    task = claim(farm, w)
    assert task is not None
    assert act(farm, worker_id, "disable", when="now")["status"] == "disabled"
    beat = farm.client.post(
        "/api/runner/heartbeat", headers=w, json={"current_task_id": task["task_id"]}
    )
    assert beat.json() == {"status": "disabled", "abort_task_ids": [task["task_id"]]}
    assert job(farm, job_id)["tasks"][0]["attempts"] == 1
    assert claimed(farm, other)["task_id"] == task["task_id"]
    assert claim(farm, w) is None


def test_drain_now_requeues_the_running_task_and_stops(farm: Farm) -> None:
    """`now` aborts the running task whatever the change: a drained worker has nothing
    left to finish, so it stops taking work at once."""
    job_id = submit(farm, "1-2", max_attempts=1)  # a failure would fail the task
    w, other = runner(farm, "w"), runner(farm, "other")
    worker_id = runners(farm)["w"]["id"]
    task = claimed(farm, w)

    assert act(farm, worker_id, "drain", when="now")["status"] == "disabled"

    beat = farm.client.post(
        "/api/runner/heartbeat", headers=w, json={"current_task_id": task["task_id"]}
    )
    assert beat.json()["abort_task_ids"] == [task["task_id"]], "the worker is told to stop"
    aborted = job(farm, job_id)["tasks"][0]
    assert aborted["status"] == "queued" and aborted["last_error"] == "worker w was drained"
    assert claimed(farm, other)["task_id"] == task["task_id"], "requeued, not failed"
    assert claim(farm, w) is None, "it takes no more work"


def always_asleep(when: str) -> dict[str, object]:
    """A sleep schedule whose one window covers every hour of every day, applied `when`."""
    everyday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    window = {"days": everyday, "start": "00:00", "end": "24:00"}
    return {"timezone": "UTC", "windows": [window], "when": when}


def test_sleep_schedule(farm: Farm) -> None:
    submit(farm, "1-2")
    w = runner(farm, "w")
    worker_id = runners(farm)["w"]["id"]
    task = claim(farm, w)
    assert task is not None
    schedule = always_asleep("now")
    url = f"/api/admin/runners/{worker_id}/sleep-schedule"
    asleep = farm.client.put(url, headers=farm.admin, json=schedule).json()
    assert asleep["status"] == "asleep"
    assert claim(farm, w) is None
    assert all(t["status"] == "queued" for t in job(farm, task["job_id"])["tasks"])
    bad = farm.client.put(url, headers=farm.admin, json={**schedule, "timezone": "Mars/Base"})
    assert bad.status_code == 400
    awake = farm.client.put(url, headers=farm.admin, json={"windows": []}).json()
    assert awake["status"] == "idle" and awake["sleep_schedule"] is None
    assert claim(farm, w) is not None


def test_sleep_after_task_lets_the_running_task_finish(farm: Farm) -> None:
    job_id = submit(farm, "1-2")
    w = runner(farm, "w")
    worker_id = runners(farm)["w"]["id"]
    task = claim(farm, w)
    assert task is not None
    schedule = always_asleep("after-task")
    url = f"/api/admin/runners/{worker_id}/sleep-schedule"
    assert farm.client.put(url, headers=farm.admin, json=schedule).json()["status"] == "asleep"
    running = job(farm, job_id)["tasks"][0]
    assert running["status"] == "active" and running["worker"] == "w", "not aborted"
    finish(farm, w, task)
    assert claim(farm, w) is None, "asleep: no new task"
    assert [t["status"] for t in job(farm, job_id)["tasks"]] == ["completed", "queued"]


def test_sleep_windows_overnight_and_time_zones() -> None:
    schedule = SleepSchedule.model_validate(
        {
            "timezone": "Europe/Paris",
            "windows": [{"days": ["mon"], "start": "22:00", "end": "06:00"}],
        }
    )
    # Monday 2026-11-23 23:00 in Paris is 22:00 UTC; Tuesday 05:00 Paris is 04:00 UTC.
    monday_late = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert in_sleep_window(schedule, monday_late)
    assert in_sleep_window(schedule, monday_late + timedelta(hours=6))
    assert not in_sleep_window(schedule, monday_late + timedelta(hours=8))
    assert not in_sleep_window(schedule, monday_late - timedelta(hours=2))
    assert not in_sleep_window(schedule, monday_late + timedelta(days=1))


def test_task_row_count_is_stable(farm: Farm) -> None:
    """Claims change statuses only: no task is duplicated or lost by the rules above."""
    job_id = submit(farm, "1-10")
    w = runner(farm, "w")
    while (task := claim(farm, w)) is not None:
        finish(farm, w, task)
    with manager_of(farm).db.transaction() as session:
        assert session.query(Task).filter(Task.job_id == job_id).count() == 10


def test_a_restarted_worker_gives_back_what_it_held(farm: Farm) -> None:
    job_id = submit(farm, "1-1")
    w = runner(farm, "w")
    task = claim(farm, w)
    assert task is not None
    # Killed mid-task and started again: its first heartbeat says it holds nothing.
    beat = farm.client.post("/api/runner/heartbeat", headers=w, json={"starting": True})
    assert beat.status_code == 200
    state = job(farm, job_id)["tasks"][0]
    assert state["status"] == "queued" and "restarted" in state["last_error"]
    assert claimed(farm, w)["task_id"] == task["task_id"]


def test_worker_prefers_the_job_it_holds_at_equal_priority(farm: Farm) -> None:
    older = submit(farm, "1-2")
    held = submit(farm, "1-2")
    w = runner(farm, "w")
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0, "prefer_job": held}, headers=w)
    assert answer.json()["job_id"] == held, "its session is warm: no Blender start-up"
    urgent = submit(farm, "1-1", priority=90)
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0, "prefer_job": held}, headers=w)
    assert answer.json()["job_id"] == urgent, "priority still comes first"
    assert older != held


# ----------------------------------------------------------------- hot-path reports


def test_progress_is_recorded_only_for_the_holder(farm: Farm) -> None:
    job_id = submit(farm, "1-2", chunk=2)
    w, other = runner(farm, "w"), runner(farm, "other")
    task = claim(farm, w)
    assert task is not None
    url = f"/api/runner/tasks/{task['task_id']}/progress"
    body = {"frames_done": 9, "frame": 2, "sample": 3, "samples_total": 8,
            "render_seconds": 1.5, "peak_memory_bytes": 5000}  # fmt: skip
    too_many = farm.client.post(url, headers=w, json=body)
    assert too_many.status_code == 400, "never more frames done than the task has"
    body["frames_done"] = 2
    assert farm.client.post(url, headers=w, json=body).json() == {"keep_going": True}
    lower = {"sample": 4, "samples_total": 8, "peak_memory_bytes": 10}
    assert farm.client.post(url, headers=w, json=lower).json() == {"keep_going": True}
    state = job(farm, job_id)["tasks"][0]
    assert state["frames_done"] == 2
    assert state["frame"] == 2, "a report without a frame keeps the last one"
    assert (state["sample"], state["samples_total"]) == (4, 8)
    assert state["render_seconds"] == 1.5
    assert state["peak_memory_bytes"] == 5000, "the peak is the highest reported"
    stranger = farm.client.post(url, headers=other, json={"frames_done": 0})
    assert stranger.json() == {"keep_going": False}
    assert job(farm, job_id)["tasks"][0]["frames_done"] == 2


def test_deleting_a_worker_requeues_its_task_and_refuses_its_secret(farm: Farm) -> None:
    job_id = submit(farm, "1-1")
    w, other = runner(farm, "w"), runner(farm, "other")
    worker_id = runners(farm)["w"]["id"]
    task = claim(farm, w)
    assert task is not None
    # Its secret was just used, so this manager remembers it: deleting must forget it.
    gone = farm.client.delete(f"/api/admin/runners/{worker_id}", headers=farm.admin)
    assert gone.status_code == 204
    assert "w" not in runners(farm)
    state = job(farm, job_id)["tasks"][0]
    assert state["status"] == "queued" and "deleted" in state["last_error"]
    late = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=w)
    assert late.status_code == 401
    beat = farm.client.post("/api/runner/heartbeat", headers=w, json={})
    assert beat.status_code == 401
    assert claimed(farm, other)["task_id"] == task["task_id"]


def _upload(farm: Farm, who: dict[str, str], task: dict[str, Any], frame: int, data: bytes) -> int:
    answer: httpx.Response = farm.client.post(
        f"/api/runner/files/{task['job_id']}/upload",
        headers=who,
        data={"task_id": str(task["task_id"]), "frame": str(frame)},
        files={"file": (f"f{frame}.png", data, "image/png")},
    )
    return answer.status_code


def _stored_frame(farm: Farm, job_id: int, frame: int) -> bytes:
    outputs = [
        f for f in farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
        if f["kind"] == "output" and f["frame"] == frame
    ]  # fmt: skip
    assert len(outputs) == 1, "a frame is stored exactly once"
    answer: httpx.Response = farm.client.get(
        f"/api/jobs/{job_id}/outputs/{frame}", headers=farm.admin
    )
    assert answer.status_code == 200
    assert hashlib.sha256(answer.content).hexdigest() == outputs[0]["sha256"]
    return answer.content


def test_duplicate_uploads_never_corrupt_the_stored_frame(farm: Farm) -> None:
    job_id = submit(farm, "1-1")
    w = runner(farm, "w")
    task = claim(farm, w)
    assert task is not None
    red, blue = png_bytes(colour="red"), png_bytes(colour="blue")
    truncated = blue[: len(blue) // 2]
    assert _upload(farm, w, task, 1, red) == 201
    assert _upload(farm, w, task, 1, truncated) == 400, "an incomplete frame is refused"
    assert _stored_frame(farm, job_id, 1) == red, "and the stored one is untouched"
    # The same frame arriving several times at once (a retried upload racing the first,
    # a late worker): each answer is about a whole file, and what is stored is one of
    # the complete ones, in full.
    barrier = threading.Barrier(6)

    def send(data: bytes) -> int:
        barrier.wait()
        return _upload(farm, w, task, 1, data)

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(send, [red, blue, truncated, blue, truncated, red]))
    assert sorted(codes) == [201, 201, 201, 201, 400, 400]
    assert _stored_frame(farm, job_id, 1) in (red, blue)
    assert _upload(farm, w, task, 1, blue) == 201
    assert _stored_frame(farm, job_id, 1) == blue, "the last complete upload wins"
    finish(farm, w, task)
    assert job(farm, job_id)["status"] == "completed"


def test_a_worker_that_signed_off_gets_nothing_through_its_abandoned_poll(farm: Farm) -> None:
    """A stopping worker signs off while its long poll is still open on the manager (it
    just stops reading it): work queued after that is not handed to the gone worker
    through that poll, and the poll ends at its next look instead of being held for the
    rest of its wait (the worker waits for its answer before it exits)."""
    leaver = runner(farm, "leaver")
    registered = runners(farm)["leaver"]["last_heartbeat"]
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(
            farm.client.get, "/api/runner/tasks", params={"wait": 60}, headers=leaver
        )
        # The poll's first look marks the worker seen: then it is waiting for work.
        deadline = time.monotonic() + 10
        while runners(farm)["leaver"]["last_heartbeat"] == registered:
            assert time.monotonic() < deadline, "the poll never looked for work"
            time.sleep(0.02)
        assert farm.client.post("/api/runner/sign-off", headers=leaver).status_code == 204
        job_id = submit(farm, "1-1")  # wakes the waiting poll
        answer = poll.result(timeout=30)  # not the 60 s asked for: it ended
    assert answer.status_code == 204, answer.text
    task = job(farm, job_id)["tasks"][0]
    assert (task["status"], task["worker"]) == ("queued", None)
    assert runners(farm)["leaver"]["status"] == "offline"


def test_a_failed_jobs_reason_is_one_bounded_line_of_its_tasks_error(farm: Farm) -> None:
    """The task keeps its whole error (Blender's output may be a page); the job's reason,
    shown on one line in `farmhand jobs` and the web list, quotes it on one line."""
    job_id = submit(farm, "1-1", max_attempts=1)
    w = runner(farm, "w")
    page = "Error: Python: Traceback (most recent call last):\n" + "  line\n" * 1000
    fail(farm, w, claimed(farm, w), reason=page)
    detail = job(farm, job_id)
    reason = detail["status_reason"]
    assert detail["status"] == "failed"
    assert reason.startswith("task 0 failed: Error: Python: Traceback")
    assert "\n" not in reason and len(reason) < 400, reason
    assert detail["tasks"][0]["last_error"] == page, "the task's own error stays whole"
