"""The whole farm for real: a manager and workers as processes, real Blender, real SQLite.

These are the scenarios of the core-farm issue: every frame comes back from two
workers; a worker killed with SIGKILL mid-task; the manager restarted mid-job; a scene
that cannot render; a scene that tries to run its own Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farmhand.localfarm import Child, LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

WIDTH, HEIGHT = 64, 48
BLENDER = "bpy"
"""Scenes are built with the bpy module (Blender 5.0), so workers render with it too."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(
        tmp_path_factory.mktemp("scene") / "anim.blend",
        "animated",
        width=WIDTH,
        height=HEIGHT,
        frames="1-12",
        samples=2,
    )


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene whose frames take seconds: there is time to act while Blender runs."""
    return make_scene(
        tmp_path_factory.mktemp("slow") / "slow.blend",
        "slow",
        width=320,
        height=240,
        frames="1-50",
        samples=64,
    )


def finished(farm: LocalFarm, job_id: int) -> JobDetail | None:
    with farm.client() as client:
        job = client.get_job(job_id)
    return (
        job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED) else None
    )


def submit(
    farm: LocalFarm, blend: Path, frames: tuple[int, int], chunk: int, **extra: object
) -> int:
    settings = JobSettings(frame_start=frames[0], frame_end=frames[1], chunk_size=chunk, **extra)
    with farm.client() as client:
        return client.submit_blend(blend, settings).id


def check_frames(
    farm: LocalFarm, job_id: int, frames: range, dest: Path, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> None:
    """Every frame downloads, exactly once, as a valid image of the scene's size."""
    with farm.client() as client:
        outputs = [f for f in client.list_files(job_id) if f.kind == "output"]
        assert sorted(f.frame for f in outputs if f.frame is not None) == list(frames)
        client.download_outputs(job_id, dest)
    images = sorted(dest.rglob("*.png"))
    assert len(images) == len(frames)
    for image in images:
        verify_image(image, *size)


def test_two_workers_render_every_frame(tmp_path: Path, scene: Path) -> None:
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender=BLENDER)
        farm.start_worker("w2", blender=BLENDER)
        job_id = submit(farm, scene, (1, 8), chunk=1)
        job = wait_for(lambda: finished(farm, job_id), 300, "the job to finish")
        assert job.status is JobStatus.COMPLETED, job.status_reason
        assert job.frames_done == job.frames_total == 8
        assert {task.worker for task in job.tasks} == {"w1", "w2"}, "both workers rendered"
        check_frames(farm, job_id, range(1, 9), tmp_path / "out")


def test_worker_killed_mid_task_is_requeued(tmp_path: Path, scene: Path) -> None:
    with local_farm(tmp_path, heartbeat_timeout=3.0) as farm:
        farm.start_manager()
        victim = farm.start_worker("victim", blender=BLENDER)

        job_id = submit(farm, scene, (1, 6), chunk=3)

        def victim_busy() -> bool:
            with farm.client() as client:
                return any(
                    t.worker == "victim" and t.status == "active"
                    for t in client.get_job(job_id).tasks
                )

        wait_for(victim_busy, 120, "the victim to start a task")
        victim.kill()
        farm.start_worker("survivor", blender=BLENDER)
        job = wait_for(lambda: finished(farm, job_id), 300, "the job to finish")
        assert job.status is JobStatus.COMPLETED, job.status_reason
        requeued = [t for t in job.tasks if t.attempts > 1]
        assert requeued, "the killed worker's task ran again"
        assert all(t.worker == "survivor" for t in requeued)
        check_frames(farm, job_id, range(1, 7), tmp_path / "out")


def test_manager_restart_mid_job_loses_nothing(tmp_path: Path, slow: Path) -> None:
    with local_farm(tmp_path) as farm:
        manager = farm.start_manager()
        farm.start_worker("w1", blender=BLENDER)
        # Frames of a second or so: the restart lands while the job is half done.
        job_id = submit(farm, slow, (1, 6), chunk=2, samples=16)

        def some_done() -> bool:
            with farm.client() as client:
                job = client.get_job(job_id)
            return 0 < job.frames_done < job.frames_total

        wait_for(some_done, 120, "the first frames")
        manager.stop()
        time.sleep(2)
        farm.start_manager()
        job = wait_for(lambda: finished(farm, job_id), 300, "the job to finish")
        assert job.status is JobStatus.COMPLETED, job.status_reason
        check_frames(farm, job_id, range(1, 7), tmp_path / "out", size=(320, 240))


def test_unrenderable_scene_fails_with_blenders_error(tmp_path: Path) -> None:
    broken = make_scene(tmp_path / "no-camera.blend", "no-camera", width=WIDTH, height=HEIGHT)
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender=BLENDER)
        job_id = submit(farm, broken, (1, 2), chunk=2, max_attempts=2)
        job = wait_for(lambda: finished(farm, job_id), 180, "the job to fail")
        assert job.status is JobStatus.FAILED
        assert job.tasks[0].attempts == 2, "retried before giving up"
        assert "camera" in (job.status_reason or "").lower()
        with farm.client() as client:
            log = client.task_log(job_id, job.tasks[0].id)
        assert "camera" in log.lower(), "Blender's own error is in the task log"


def test_scene_python_never_runs_on_a_worker(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = make_scene(
        tmp_path / "autoexec.blend", "autoexec", width=WIDTH, height=HEIGHT, marker=marker
    )
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender=BLENDER)
        job_id = submit(farm, evil, (1, 1), chunk=1)
        job = wait_for(lambda: finished(farm, job_id), 180, "the job to finish")
        assert job.status is JobStatus.COMPLETED, job.status_reason
    assert not marker.exists(), "the .blend's embedded script ran on the worker"


def blender_processes(worker: Child) -> list[int]:
    """Pids of the Blender drivers a worker process started (its children)."""
    assert worker.process is not None
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == worker.process.pid and "driver.py" in cmdline:
            pids.append(int(proc.name))
    return pids


def active_task_of(farm: LocalFarm, job_id: int, worker: str) -> bool:
    with farm.client() as client:
        return any(
            t.worker == worker and t.status == "active" for t in client.get_job(job_id).tasks
        )


def test_cancel_stops_blender_within_seconds(tmp_path: Path, slow: Path) -> None:
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        worker = farm.start_worker("w1", blender=BLENDER)
        job_id = submit(farm, slow, (1, 50), chunk=50)
        wait_for(lambda: active_task_of(farm, job_id, "w1"), 120, "the render to start")
        wait_for(lambda: blender_processes(worker), 60, "Blender to run")
        with farm.client() as client:
            assert client.cancel_job(job_id).status is JobStatus.CANCELED
        wait_for(lambda: not blender_processes(worker), 10, "Blender to be stopped")
        # The worker is free again: a new job is picked up.
        second = submit(farm, slow, (1, 1), chunk=1, samples=1)
        job = wait_for(lambda: finished(farm, second), 120, "the next job")
        assert job.status is JobStatus.COMPLETED


def test_sigterm_gives_the_task_back(tmp_path: Path, slow: Path) -> None:
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        worker = farm.start_worker("w1", blender=BLENDER)
        job_id = submit(farm, slow, (1, 50), chunk=50, max_attempts=1)
        wait_for(lambda: active_task_of(farm, job_id, "w1"), 120, "the render to start")
        blenders = wait_for(lambda: blender_processes(worker), 60, "Blender to run")
        worker.stop(timeout=20)
        assert worker.process is not None and worker.process.returncode == 0
        assert not [pid for pid in blenders if Path(f"/proc/{pid}").exists()], (
            "Blender left running"
        )
        with farm.client() as client:
            job = client.get_job(job_id)
            runners = client._request("GET", "/api/admin/runners").json()
        assert job.status is JobStatus.QUEUED, "back in the queue, not failed"
        assert job.tasks[0].status == "queued"
        assert [r["status"] for r in runners] == ["offline"]


def test_cli_submit_wait_downloads_every_frame(tmp_path: Path, scene: Path) -> None:
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender=BLENDER)
        env = {**os.environ, "FARMHAND_URL": farm.url, "FARMHAND_TOKEN": farm.admin_token}
        out = tmp_path / "frames"
        result = subprocess.run(
            [sys.executable, "-m", "farmhand", "submit", str(scene), "--frames", "1-4",
             "--chunk", "2", "--wait", "--output", str(out)],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        images = sorted(out.rglob("*.png"))
        assert len(images) == 4
        for image in images:
            verify_image(image, WIDTH, HEIGHT)
        listing = subprocess.run(
            [sys.executable, "-m", "farmhand", "jobs"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert "completed" in listing.stdout
