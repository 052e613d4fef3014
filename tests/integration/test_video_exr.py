"""A video of OpenEXR frames looks as the frames do in Blender, not dark.

EXR frames hold scene-linear light. ffmpeg used to encode those values as they were, so
a background of 0.2 linear, which Blender shows as 124 of 255, came out as 51: the whole
video far darker than the frames on the job page. The worker now shows them through the
scene's colour management, here Blender's Standard view transform, which is the sRGB
curve (other views: tests/integration/test_video_scene_look.py), and says so in the
task's log.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from PIL import Image, ImageChops, ImageStat

from farmhand.localfarm import local_farm
from farmhand.scenes import BUILDER, run_builder
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, VideoSettings
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian ffmpeg)"),
]

WIDTH, HEIGHT = 64, 48


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-sized images' RGB, 0-255."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_a_video_of_exr_frames_looks_like_blenders_own_view_of_them(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    blend = tmp_path / "exr.blend"
    options = ["--out", str(blend), "--frames", "1-2", "--samples", "2",
               "--width", str(WIDTH), "--height", str(HEIGHT),
               "--output-format", "OPEN_EXR", "--view-transform", "Standard"]  # fmt: skip
    run_builder(blender_module, BUILDER, options, blend, "the EXR scene")
    settings = JobSettings(frame_start=1, frame_end=2, chunk_size=1, video=VideoSettings())
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        with farm.client() as client:
            job_id = client.submit_blend(blend, settings).id

            def finished() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

            job = wait_for(finished, 300, f"the EXR video job\n{farm.logs()}")
            assert job.status is JobStatus.COMPLETED, f"{job.status_reason}\n{farm.logs()}"
            files = {f.path: f for f in client.list_files(job_id)}
            assert "frames/0001.exr" in files
            video = client.download_file(job_id, files["video.mp4"].id, tmp_path / "video.mp4")
            # Blender's own view of frame 1, through the scene's colour management.
            preview = client.download_file(
                job_id, files["previews/0001.jpg"].id, tmp_path / "preview.jpg"
            )
            exr = client.download_file(job_id, files["frames/0001.exr"].id, tmp_path / "f.exr")
            (video_task,) = [t for t in job.tasks if t.type == "video"]
            log = client.task_log(job_id, video_task.id)

    first = tmp_path / "first.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(first)],
        check=True,
    )
    shown = Image.open(preview)
    encoded = Image.open(first)
    assert encoded.size == shown.size == (WIDTH, HEIGHT), "the preview is the full frame"
    # The dark video differed by about 20 of 255 on average (60 on the sky); h264 and
    # the JPEG preview each lose a little (about 3).
    assert difference(encoded, shown) < 8, "the video's frame looks as Blender shows it"
    assert "Standard view, look None, exposure 0" in log, "the log says which view it shows"
    # Standard is the sRGB curve: the frame is what that curve makes of the EXR's light.
    channels = OpenEXR.File(str(exr), separate_channels=True).parts[0].channels
    linear = np.clip(np.stack([channels[c].pixels for c in "RGB"], axis=-1), 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    expected = np.asarray(srgb * 255, dtype=np.float64)
    assert np.abs(np.asarray(encoded.convert("RGB"), np.float64) - expected).mean() < 3
