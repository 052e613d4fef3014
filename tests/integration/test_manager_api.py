"""The manager's REST API driven as a worker and a person would, with no Blender.

Workers here are scripted HTTP calls; the real worker with real Blender is covered in
test_farm_end_to_end.py.
"""

from __future__ import annotations

import threading
import time
import zipfile
from io import BytesIO
from typing import Any

from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import (
    FAKE_BLEND,
    Farm,
    make_settings,
    png_bytes,
    post_stand_in,
    upload_frames,
)


def submit(farm: Farm, frames: str = "1-4", chunk: int = 2, **settings: Any) -> int:
    start, end = frames.split("-")
    body = {"frame_start": int(start), "frame_end": int(end), "chunk_size": chunk, **settings}
    answer = post_stand_in(farm.client, farm.admin, **body)
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"] == f"/api/jobs/{answer.json()['id']}"
    assert int(answer.headers["Retry-After"]) > 0
    return int(answer.json()["id"])


def claim(farm: Farm, runner: dict[str, str]) -> dict[str, Any] | None:
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    if answer.status_code == 204:
        return None
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def render_task(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> None:
    upload_frames(farm, runner, task)
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=runner,
        json={"frames": task["frames"], "log_lines": ["rendered"]},
    )
    assert answer.status_code == 200, answer.text


def test_job_runs_to_completion_and_outputs_download(farm: Farm) -> None:
    job_id = submit(farm, "1-5", chunk=2)
    runner = farm.register_runner()
    seen_frames: list[int] = []
    while (task := claim(farm, runner)) is not None:
        assert task["files"][0]["path"] == "scene.blend"
        got = farm.client.get(f"/api/runner/files/{job_id}/scene.blend", headers=runner)
        assert got.content == FAKE_BLEND
        seen_frames += task["frames"]
        render_task(farm, runner, task)
    assert seen_frames == [1, 2, 3, 4, 5], "tasks come in frame order"

    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert job["status"] == "completed"
    assert job["progress"] == 100.0
    assert [t["status"] for t in job["tasks"]] == ["completed"] * 3

    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    outputs = [f for f in files if f["kind"] == "output"]
    assert [f["path"] for f in outputs] == [f"frames/{n:04d}.png" for n in range(1, 6)]
    one = farm.client.get(
        f"/api/jobs/{job_id}/files/{outputs[0]['id']}/download", headers=farm.admin
    )
    assert one.content == png_bytes()

    archive = farm.client.get(f"/api/jobs/{job_id}/outputs.zip", headers=farm.admin)
    assert archive.status_code == 200
    names = zipfile.ZipFile(BytesIO(archive.content)).namelist()
    assert names == [f"frames/{n:04d}.png" for n in range(1, 6)]


def test_priority_then_age_then_frame_order(farm: Farm) -> None:
    low = submit(farm, "1-2", chunk=1, priority=10)
    high = submit(farm, "1-2", chunk=1, priority=90)
    also_high = submit(farm, "1-1", chunk=1, priority=90)
    runner = farm.register_runner()
    order = []
    while (task := claim(farm, runner)) is not None:
        order.append((task["job_id"], task["frames"]))
        render_task(farm, runner, task)
    assert order == [(high, [1]), (high, [2]), (also_high, [1]), (low, [1]), (low, [2])]


def test_failed_task_is_retried_then_fails_the_job(farm: Farm) -> None:
    job_id = submit(farm, "1-2", chunk=1, max_attempts=2)
    runner = farm.register_runner()
    for attempt in (1, 2):
        task = claim(farm, runner)
        assert task is not None and task["frames"] == [1] and task["attempt"] == attempt
        answer = farm.client.post(
            f"/api/runner/tasks/{task['task_id']}/fail",
            headers=runner,
            json={"reason": "Error: No camera found in scene", "log_lines": ["boom"]},
        )
        assert answer.status_code == 200
    assert answer.json() == {"task_status": "failed", "job_status": "failed"}
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert job["status"] == "failed"
    assert "No camera" in job["status_reason"]
    assert [t["status"] for t in job["tasks"]] == ["failed", "canceled"]
    task_id = job["tasks"][0]["id"]
    log = farm.client.get(f"/api/jobs/{job_id}/tasks/{task_id}/log", headers=farm.admin).text
    assert "No camera" in log and "boom" in log
    assert claim(farm, runner) is None, "nothing of a failed job is handed out"


def test_cancel_tells_the_worker_to_stop(farm: Farm) -> None:
    job_id = submit(farm, "1-3", chunk=1)
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task is not None
    progress = f"/api/runner/tasks/{task['task_id']}/progress"
    assert farm.client.post(progress, headers=runner, json={}).json() == {"keep_going": True}
    assert farm.client.delete(f"/api/jobs/{job_id}", headers=farm.admin).json()["status"] == (
        "canceled"
    )
    assert farm.client.post(progress, headers=runner, json={}).json() == {"keep_going": False}
    beat = farm.client.post(
        "/api/runner/heartbeat", headers=runner, json={"current_task_id": task["task_id"]}
    )
    assert beat.json()["abort_task_ids"] == [task["task_id"]]
    late = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1]}
    )
    assert late.status_code == 409
    assert claim(farm, runner) is None


def test_complete_without_outputs_is_refused(farm: Farm) -> None:
    submit(farm, "1-1", chunk=1)
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task is not None
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1]}
    )
    assert answer.status_code == 409
    assert "no output" in answer.json()["detail"]


def test_upload_of_a_non_image_is_refused(farm: Farm) -> None:
    submit(farm, "1-1", chunk=1)
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task is not None
    answer = farm.client.post(
        f"/api/runner/files/{task['job_id']}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("frame_0001.png", png_bytes()[:40], "image/png")},
    )
    assert answer.status_code == 400
    assert "not a readable image" in answer.json()["detail"]


def test_two_workers_never_get_the_same_task(farm: Farm) -> None:
    submit(farm, "1-40", chunk=1)
    runners = [farm.register_runner(f"w{n}") for n in range(4)]
    got: list[int] = []
    lock = threading.Lock()

    def grab(runner: dict[str, str]) -> None:
        while (task := claim(farm, runner)) is not None:
            with lock:
                got.append(int(task["task_id"]))

    threads = [threading.Thread(target=grab, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 40
    assert len(set(got)) == 40


def test_silent_worker_goes_offline_and_its_task_is_requeued(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data", heartbeat_timeout=0.5, reaper_interval=0.1)
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]
        time.sleep(0.6)  # past the manager's start-up grace
        job_id = submit(farm, "1-1", chunk=1)
        silent = farm.register_runner("silent")
        task = claim(farm, silent)
        assert task is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            runners = client.get("/api/admin/runners", headers=farm.admin).json()
            if runners[0]["status"] == "offline":
                break
            time.sleep(0.1)
        assert runners[0]["status"] == "offline"
        job = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
        assert job["tasks"][0]["status"] == "queued"
        assert "stopped responding" in job["tasks"][0]["last_error"]
        other = farm.register_runner("other")
        retry = claim(farm, other)
        assert retry is not None and retry["task_id"] == task["task_id"]


def test_state_survives_a_manager_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]
        job_id = submit(farm, "1-2", chunk=1)
        runner = farm.register_runner()
        first = claim(farm, runner)
        assert first is not None
    with TestClient(create_app(settings)) as client:
        farm.client = client
        render_task(farm, runner, first)  # the runner's secret still works
        second = claim(farm, runner)
        assert second is not None
        render_task(farm, runner, second)
        job = client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
        assert job["status"] == "completed"


def test_release_requeues_without_counting_a_failure(farm: Farm) -> None:
    submit(farm, "1-1", chunk=1, max_attempts=1)
    runner = farm.register_runner()
    task = claim(farm, runner)
    assert task is not None
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=runner, json={}
    )
    assert answer.json()["task_status"] == "queued"
    again = claim(farm, runner)
    assert again is not None and again["task_id"] == task["task_id"]
