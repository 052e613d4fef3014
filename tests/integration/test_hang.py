"""A real worker kills a real Blender that goes silent, and the task is retried.

A hung Blender (a deadlock, a stuck GPU driver) prints nothing and computes nothing.
Here the test stops a rendering Blender with SIGSTOP, which is exactly that: no output,
no CPU time, no exit. The worker kills it at the task timeout (SIGTERM, which a stopped
process does not act on, then SIGKILL), fails the attempt with `no output and no CPU use
for ...`, and the manager retries the task. (A silent Blender that computes is left to
render: tests/unit/test_blender_slow_render.py.)
(Letting a long frame run into the timeout no longer shows a hang: the bpy module now
reports Cycles' samples as it goes, like Blender's executables.)
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from farmhand.localfarm import descendants, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _blender_drivers(worker_pid: int) -> list[int]:
    """The worker's Blender processes (the bpy module runs the driver script)."""
    found = []
    for pid in descendants(worker_pid)[1:]:
        try:
            if b"driver.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:  # it ended while we looked
            continue
    return found


class StopEveryBlender(threading.Thread):
    """SIGSTOPs every Blender the worker starts from now on (each attempt starts one)."""

    def __init__(self, worker_pid: int) -> None:
        super().__init__(daemon=True)
        self.worker_pid = worker_pid
        self.stopped: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for pid in _blender_drivers(self.worker_pid):
                if pid not in self.stopped:
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)


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
        worker = farm.start_worker("w1", "--task-timeout", "3", blender="bpy")
        assert worker.process is not None
        with farm.client() as client:
            job_id = client.submit_blend(blend, JobSettings(max_attempts=2)).id

            def rendering() -> bool:
                # Only once a task is out: the worker's start-up device check is a
                # Blender too, and is not the one to hang.
                return client.get_job(job_id).tasks[0].worker is not None

            wait_for(rendering, 120, f"the task to start\n{farm.logs()}")
            hangs = StopEveryBlender(worker.process.pid)
            hangs.start()

            def failed() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status is JobStatus.FAILED else None

            try:
                job = wait_for(failed, 240, f"the job to fail twice\n{farm.logs()}")
            finally:
                hangs.done.set()
                hangs.join()
            task = job.tasks[0]
            assert task.attempts == 2, "retried after the first timeout"
            assert task.last_error is not None
            assert task.last_error.startswith("no output and no CPU use for 3 seconds"), (
                task.last_error
            )
            log = client.task_log(job_id, task.id)
            assert log.count("FAILED: no output and no CPU use for 3 seconds") == 2
            assert len(hangs.stopped) == 2, "a hung Blender for each attempt"
            assert _blender_drivers(worker.process.pid) == [], "both were killed"
