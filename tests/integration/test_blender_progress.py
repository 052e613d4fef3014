"""Live progress and Blender fit through the API: what a worker reports is what a person
sees on `GET /api/jobs/{id}` and in the CLI's line, and a job that no online worker's
Blender (or device) fits waits with a reason instead of going to one that would fail.
"""

from __future__ import annotations

from typing import Any

from farmhand.cli.jobs_cmd import live_line
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import JobDetail
from tests.integration.conftest import Farm, post_stand_in, submit_stand_in
from tests.integration.test_manager_api import claim

BLEND_50 = b"BLENDER17-01v0500REND" + b"\x00" * 64
"""Starts like a .blend saved by Blender 5.0 (uncompressed)."""
MB = 1024 * 1024
FRAMES: dict[str, Any] = {"frame_start": 1, "frame_end": 4, "chunk_size": 2}
"""The jobs here: frames 1-4, two a task."""


def runner(farm: Farm, name: str, versions: list[str], device: str = "CPU") -> dict[str, str]:
    caps = {"blender_versions": versions, "device": device}
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


def detail(farm: Farm, job_id: int) -> JobDetail:
    answer = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    return JobDetail.model_validate(answer.json())


def test_a_frame_in_progress_shows_its_sample_memory_and_time_left(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, **FRAMES)
    worker = runner(farm, "w1", ["3.4.1"])
    task = claim(farm, worker)
    assert task is not None and task["frames"] == [1, 2]
    assert task["blender_saved"] == "3.4"
    assert task["task_timeout"] == 1800.0, "the worker enforces the manager's timeout"
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/progress",
        headers=worker,
        json={
            "frames_done": 1,
            "frame": 2,
            "sample": 5,
            "samples_total": 10,
            "render_seconds": 4.0,
            "peak_memory_bytes": 500 * MB,
        },
    )
    assert answer.json() == {"keep_going": True}

    job = detail(farm, job_id)
    running = job.tasks[0]
    assert running.progress == 75.0, "one frame done and half of the next"
    assert (running.frame, running.sample, running.samples_total) == (2, 5, 10)
    assert running.render_seconds == 4.0
    assert running.peak_memory_bytes == 500 * MB
    assert running.eta_seconds == 2.0, "half a frame left at 4 s a frame"
    assert job.seconds_per_frame == 4.0
    assert job.eta_seconds == 12.0, "three frames left at 4 s, one worker"
    assert job.peak_memory_bytes == 500 * MB
    assert job.blender_saved == "3.4"
    line = live_line(job)
    assert "frame 2 sample 5/10" in line
    assert "peak 500.0 MB" in line
    assert "eta 12s" in line


def test_a_50_file_waits_with_a_reason_until_a_50_worker_comes(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, blend=BLEND_50, **FRAMES)
    old = runner(farm, "old", ["3.4.1"])
    assert claim(farm, old) is None, "Blender 3.4 cannot open a 5.0 file"
    job = detail(farm, job_id)
    assert job.blender_saved == "5.0"
    assert job.status == "queued"
    assert job.status_reason is not None
    assert "Blender 5.0 or newer" in job.status_reason and "3.4.1" in job.status_reason
    assert "Blender 5.0 or newer" in live_line(job)
    listed = farm.client.get("/api/jobs", headers=farm.admin).json()
    assert "Blender 5.0 or newer" in next(j for j in listed if j["id"] == job_id)["status_reason"]

    new = runner(farm, "new", ["3.4.1", "5.0.1"])
    task = claim(farm, new)
    assert task is not None and task["job_id"] == job_id
    assert task["blender_saved"] == "5.0"
    assert detail(farm, job_id).status_reason is None


def test_a_job_asks_for_a_version_range(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, blender_version=">=3.0,<4", **FRAMES)
    new = runner(farm, "new", ["5.0.1"])
    assert claim(farm, new) is None
    assert detail(farm, job_id).status_reason == (
        "waiting: the job needs Blender 3.4 or newer in the range >=3.0,<4; "
        "the online workers have 5.0.1"
    )
    old = runner(farm, "old", ["3.4.1"])
    task = claim(farm, old)
    # The job's range, narrowed to the series its first render pinned it to.
    assert task is not None and task["blender_version"] == ">=3.0,<4,==3.4"


def test_a_job_for_a_device_goes_only_to_workers_on_it(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, device="OPTIX", **FRAMES)
    cpu = runner(farm, "cpu", ["5.0.1"])
    assert claim(farm, cpu) is None
    assert "no worker renders on OPTIX" in (detail(farm, job_id).status_reason or "")
    optix = runner(farm, "optix", ["5.0.1"], device="OPTIX")
    assert claim(farm, optix) is not None


def test_a_bad_version_range_is_a_clear_4xx(farm: Farm) -> None:
    answer = post_stand_in(farm.client, farm.admin, blender_version="newest please")
    assert answer.status_code in (400, 422)
    assert "not a version range" in answer.text
