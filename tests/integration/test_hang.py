"""A real worker kills a real Blender that goes silent, and the task is retried.

The bpy module prints nothing while a frame renders, so a frame that takes longer than
the task timeout looks exactly like a hung Blender: the worker kills it at the timeout,
fails the attempt with `no progress for ...`, and the manager retries the task.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.localfarm import local_farm
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_a_silent_blender_is_killed_at_the_timeout_and_the_task_retried(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    blend = make_scene(
        tmp_path / "endless.blend",
        "slow",
        install=blender_module,
        width=320,
        height=240,
        frames="1-1",
        samples=100_000,
    )
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", "--task-timeout", "3", blender="bpy")
        with farm.client() as client:
            job_id = client.submit_blend(blend, JobSettings(max_attempts=2)).id

            def failed() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status is JobStatus.FAILED else None

            job = wait_for(failed, 240, f"the job to fail twice\n{farm.logs()}")
            task = job.tasks[0]
            assert task.attempts == 2, "retried after the first timeout"
            assert task.last_error is not None
            assert task.last_error.startswith("no progress for 3 seconds"), task.last_error
            log = client.task_log(job_id, task.id)
            assert log.count("FAILED: no progress for 3 seconds") == 2
