"""The worker's outbox with real processes: a manager and a worker, real Blender (bpy).

1. The manager dies mid-task: the worker renders the rest of the task anyway, keeps the
   frames on disk, and delivers them when the manager is back; nothing is rendered twice.
2. The worker is killed after rendering but before delivering (the manager was down):
   started again, it delivers from its outbox; the task is not rendered again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

BLENDER = "bpy"
FRAMES = 3
WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames of a few seconds: the manager goes down after the first frame has started
    (reported within `progress_interval`, 0.75 s) and well before it is delivered."""
    return make_scene(
        tmp_path_factory.mktemp("outbox") / "slow.blend",
        "slow",
        width=WIDTH,
        height=HEIGHT,
        frames=f"1-{FRAMES}",
        samples=32,
    )


def _job(farm: LocalFarm, job_id: int) -> JobDetail:
    with farm.client() as client:
        return client.get_job(job_id)


def _start_and_go_dark(farm: LocalFarm, scene: Path) -> tuple[int, Path]:
    """A one-task job; the manager is SIGKILLed while the worker renders its first frame.

    Returns the job id and the task's outbox outcome file, which appears once the worker
    has finished rendering with nobody to report to.
    """
    farm.start_manager()
    farm.start_worker("w", blender=BLENDER)
    settings = JobSettings(frame_start=1, frame_end=FRAMES, chunk_size=FRAMES)
    with farm.client() as client:
        job_id = client.submit_blend(scene, settings).id

    def rendering() -> int | None:
        # `frame` is reported once Blender has started a frame, so the worker holds the
        # job's files: killing the manager any earlier (while the .blend still downloads)
        # leaves the worker nothing to render while it is gone.
        task = _job(farm, job_id).tasks[0]
        started = task.status == "active" and task.frame is not None
        return task.id if started and task.frames_done == 0 else None

    task_id = wait_for(rendering, 120, "the worker to start rendering")
    assert farm.manager is not None
    farm.manager.kill()
    farm.children.remove(farm.manager)
    outcome = farm.root / "workers" / "w" / "outbox" / f"task-{task_id}" / "outcome.json"
    wait_for(outcome.exists, 180, "the worker to finish rendering while the manager is down")
    return job_id, outcome


def _check_done_once(farm: LocalFarm, job_id: int, dest: Path) -> None:
    def finished() -> JobDetail | None:
        job = _job(farm, job_id)
        return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

    job = wait_for(finished, 120, "the job to finish")
    assert job.status is JobStatus.COMPLETED, job.status_reason
    (task,) = job.tasks
    assert task.attempts == 1, "the task was rendered once, by the first attempt"
    with farm.client() as client:
        outputs = [f for f in client.list_files(job_id) if f.kind == "output"]
        frames = sorted((f.frame for f in outputs), key=lambda frame: frame or 0)  # None first
        assert frames == list(range(1, FRAMES + 1))
        written = client.download_outputs(job_id, dest)
    assert len(written) == FRAMES
    for path in written:
        verify_image(path, WIDTH, HEIGHT)


def test_frames_rendered_while_the_manager_is_down_are_delivered(
    tmp_path: Path, scene: Path
) -> None:
    with local_farm(tmp_path) as farm:
        job_id, outcome = _start_and_go_dark(farm, scene)
        assert (outcome.parent / "frames").is_dir(), "the frames wait on disk"
        farm.start_manager()
        _check_done_once(farm, job_id, tmp_path / "out")
        wait_for(lambda: not outcome.parent.exists(), 30, "the outbox to be emptied")


def test_a_worker_killed_before_delivering_delivers_after_restart(
    tmp_path: Path, scene: Path
) -> None:
    with local_farm(tmp_path) as farm:
        job_id, outcome = _start_and_go_dark(farm, scene)
        (worker,) = [c for c in farm.children if c.name == "w"]
        worker.kill()  # rendered, never delivered: only the outbox knows
        farm.children.remove(worker)
        saved = (outcome.parent / "saved.txt").read_text().split("\n")
        assert len([line for line in saved if line]) == FRAMES
        farm.start_manager()
        restarted = farm.start_worker("w", blender=BLENDER)
        _check_done_once(farm, job_id, tmp_path / "out")
        assert not outcome.parent.exists(), "the outbox is emptied once delivered"
        assert "frames delivered and task completed" in restarted.tail(200)
