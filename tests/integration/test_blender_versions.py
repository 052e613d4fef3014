"""Several Blender versions on a real farm: a file goes only to a Blender that can open it.

A .blend saved by Blender 5.0 (the bpy module) cannot be opened by Blender 3.4; a worker
that has only 3.4 must never get it, and the job must say why it waits. A file saved by
3.4 opens in both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.localfarm import local_farm
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]
SETTINGS = JobSettings(frame_start=1, frame_end=2, chunk_size=1)


def test_a_50_file_waits_for_a_50_worker_and_a_34_file_goes_to_either(
    blender_module: BlenderInstall,
    blender_executable: BlenderInstall,
    animated_blend: Path,
    animated_blend_34: Path,
    tmp_path: Path,
) -> None:
    assert blender_executable.path is not None
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("only34", "--blender", f"3.4={blender_executable.path}")
        with farm.client() as client:
            new = client.submit_blend(animated_blend, SETTINGS).id
            old = client.submit_blend(animated_blend_34, SETTINGS).id

            def finished(job_id: int) -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

            done = wait_for(lambda: finished(old), 240, f"the 3.4 file's job\n{farm.logs()}")
            assert done.status is JobStatus.COMPLETED, f"{done.status_reason}\n{farm.logs()}"
            assert done.blender_saved == "3.4"
            assert {task.worker for task in done.tasks} == {"only34"}

            waiting = client.get_job(new)
            assert waiting.blender_saved == "5.0"
            assert waiting.status is JobStatus.QUEUED
            assert all(task.attempts == 0 for task in waiting.tasks), "3.4 got a 5.0 file"
            assert waiting.status_reason is not None
            assert "Blender 5.0 or newer" in waiting.status_reason
            assert "3.4.1" in waiting.status_reason

            # A worker offering both Blenders takes it, and renders it with 5.0.
            farm.start_worker(
                "both",
                "--blender",
                "5.0=bpy",
                "--blender",
                f"3.4={blender_executable.path}",
            )
            done = wait_for(lambda: finished(new), 240, f"the 5.0 file's job\n{farm.logs()}")
            assert done.status is JobStatus.COMPLETED, f"{done.status_reason}\n{farm.logs()}"
            assert {task.worker for task in done.tasks} == {"both"}
            assert done.status_reason is None
            runners = {r.name: r for r in client.list_runners()}
            assert sorted(runners["both"].capabilities.blender_versions) == sorted(
                [blender_module.version, blender_executable.version]
            )
        logs = list((tmp_path / "farm" / "workers" / "both" / "logs").glob(f"job-{new}-*.log"))
        text = "".join(log.read_text() for log in logs)
        # One Blender session served both tasks: one `ready`, from 5.0.
        assert '"version": "5.0' in text and '"version": "3.4' not in text
