"""Persistent sessions with real Blenders: one start for many tasks, and the same pixels.

Both Blenders (the bpy module 5.0 and the 3.4 executable, each with a scene it built),
then a real worker process that renders a whole job in one Blender.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from farmhand.localfarm import local_farm
from farmhand.scenes import make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, Opened, Ready
from farmhand.worker.blender.process import RenderRequest, render
from farmhand.worker.blender.session import BlenderSession
from tests.conftest import SCENE_OPTIONS, SCENE_SIZE

pytestmark = pytest.mark.blender
WIDTH, HEIGHT = SCENE_SIZE
TASKS = [[1, 2], [3, 4], [5, 6], [7, 8]]
"""Four tasks of two frames: one job's chunks."""


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGBA").tobytes()


def session_then_fresh(install: BlenderInstall, blend: Path, tmp_path: Path, threads: int) -> None:
    """Render TASKS in one session (the 2nd with overrides that must not leak), then each
    task in a fresh Blender; the session started once and every frame is identical."""
    events: list[Event] = []
    session_frames: dict[int, Path] = {}
    with BlenderSession(install, threads=threads) as session:
        for number, frames in enumerate(TASKS):
            # The second task asks for JPEG at 50 %: the driver must put the file's
            # settings back, or the tasks after it would render small JPEGs.
            extra: dict[str, object] = (
                {"output_format": "JPEG", "resolution_percentage": 50} if number == 1 else {}
            )
            out = tmp_path / "session" / f"task-{number}"
            result = session.render(
                RenderRequest(blend, frames, out, threads=threads, **extra),  # type: ignore[arg-type]
                log_path=tmp_path / f"session-{number}.log",
                on_event=events.append,
            )
            assert result.ok, result.error
            if number == 1:
                for path in result.frames.values():
                    assert verify_image(path, WIDTH // 2, HEIGHT // 2).format == "JPEG"
            else:
                session_frames.update(result.frames)
    assert session.starts == 1
    assert sum(isinstance(e, Ready) for e in events) == 1, "one Blender start for four tasks"
    assert sum(isinstance(e, Opened) for e in events) == 1, "the .blend is loaded once"

    for number, frames in enumerate(TASKS):
        if number == 1:
            continue
        out = tmp_path / "fresh" / f"task-{number}"
        fresh = render(
            install,
            RenderRequest(blend, frames, out, threads=threads),
            log_path=tmp_path / f"fresh-{number}.log",
        )
        assert fresh.ok, fresh.error
        for frame in frames:
            verify_image(session_frames[frame], WIDTH, HEIGHT)
            assert pixels(session_frames[frame]) == pixels(fresh.frames[frame]), (
                f"frame {frame} differs between the session and a fresh Blender"
            )
    # the frames are real renders of a moving cube, not one image four times
    assert pixels(session_frames[1]) != pixels(session_frames[8])


def test_module_session_one_start_and_same_pixels_as_a_fresh_blender(
    blender_module: BlenderInstall, animated_blend: Path, tmp_path: Path
) -> None:
    session_then_fresh(blender_module, animated_blend, tmp_path, threads=2)


def test_executable_34_session_one_start_and_same_pixels_as_a_fresh_blender(
    blender_executable: BlenderInstall, animated_blend_34: Path, tmp_path: Path
) -> None:
    session_then_fresh(blender_executable, animated_blend_34, tmp_path, threads=1)


def test_a_worker_renders_a_whole_job_in_one_blender(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    """A real worker process: four chunks of one job, one Blender start in its task logs."""
    blend = make_scene(
        tmp_path / "anim.blend",
        "animated",
        install=blender_module,
        **{**SCENE_OPTIONS, "frames": "1-8"},  # type: ignore[arg-type]
    )
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        settings = JobSettings(frame_start=1, frame_end=8, chunk_size=2)
        with farm.client() as client:
            job_id = client.submit_blend(blend, settings).id
            deadline = time.monotonic() + 300
            while True:
                job = client.get_job(job_id)
                if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED):
                    break
                assert time.monotonic() < deadline, f"job not finished\n{farm.logs()}"
                time.sleep(0.2)
            assert job.status is JobStatus.COMPLETED, f"{job.status_reason}\n{farm.logs()}"
            outputs = [f for f in client.list_files(job_id) if f.kind == "output"]
            assert sorted(f.frame for f in outputs if f.frame is not None) == list(range(1, 9))
        task_logs = sorted((tmp_path / "farm" / "workers" / "w1" / "logs").glob("job-*.log"))
        assert len(task_logs) == 4
        text = [log.read_text() for log in task_logs]
        starts = sum(log.count('"event": "ready"') for log in text)
        assert starts == 1, "four chunks of one job, one Blender start"
        assert sum("started Blender" in log for log in text) == 1
        assert sum("reusing the session's Blender" in log for log in text) == 3
