"""A video of multilayer OpenEXR frames, rendered for real by Blender 3.4 and 5.0.

ffmpeg 5 reads neither kind of Blender's multilayer EXR: Blender 3.4's (one part, the
picture as `ViewLayer.Combined.R`, ...; ffmpeg exits 1 without a word unless told the
layer) nor Blender 5.0's (a part a pass; "Not yet implemented in FFmpeg" even with the
layer), so every such job's video task failed with "ffmpeg failed". The worker now reads
each frame's Combined pass itself and pipes it to ffmpeg as the scene shows it. The
scenes here use Blender's Standard view, the sRGB curve, so the video's first frame must
look like the sRGB of the EXR's Combined pixels (worked out here from the file, not with
farmhand's code) and like the video of the same scene rendered as a single-layer EXR,
with and without Depth, Normal and Mist passes. (Other views and several view layers:
test_video_scene_look.py.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import OpenEXR
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, VideoSettings
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian ffmpeg)"),
]

WIDTH, HEIGHT = 64, 36

_MULTILAYER = """
import sys
import bpy
argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
source, single, plain, passes = argv
bpy.ops.wm.open_mainfile(filepath=source)
scene = bpy.context.scene
scene.view_settings.view_transform = "Standard"
bpy.ops.wm.save_as_mainfile(filepath=single, copy=True)
settings = scene.render.image_settings
if hasattr(settings, "media_type"):  # Blender 5 offers the format only then
    settings.media_type = "MULTI_LAYER_IMAGE"
settings.file_format = "OPEN_EXR_MULTILAYER"
bpy.ops.wm.save_as_mainfile(filepath=plain, copy=True)
layer = scene.view_layers[0]
layer.use_pass_z = layer.use_pass_normal = layer.use_pass_mist = True
bpy.ops.wm.save_as_mainfile(filepath=passes, copy=True)
"""


def scenes(tmp_path: Path, install: BlenderInstall, name: str) -> dict[str, Path]:
    """The scene saved by `install` as a single-layer EXR, and as a multilayer one
    without and with passes, all in the Standard view."""
    folder = tmp_path / name
    source = make_scene(
        folder / "source.blend", install=install, width=WIDTH, height=HEIGHT, frames="1-3",
        samples=2, output_format="OPEN_EXR",
    )  # fmt: skip
    made = {kind: folder / f"{kind}.blend" for kind in ("single", "plain", "passes")}
    script = folder / "multilayer.py"
    script.write_text(_MULTILAYER)
    paths = [str(source), *(str(path) for path in made.values())]
    if install.kind == "module":
        command = [sys.executable, str(script), *paths]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", "--python-exit-code", "1",
                   "--python", str(script), "--", *paths]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return made


def submit(farm: LocalFarm, blend: Path, name: str, blender_version: str | None) -> int:
    settings = JobSettings(
        frame_start=1, frame_end=3, chunk_size=3, name=name, video=VideoSettings(crf=0),
        blender_version=blender_version,
    )  # fmt: skip
    with farm.client() as client:
        return client.submit_blend(blend, settings).id


def finished(farm: LocalFarm, job_id: int) -> JobDetail:
    def done() -> JobDetail | None:
        with farm.client() as client:
            job = client.get_job(job_id)
        return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

    return wait_for(done, 600, f"job {job_id} to finish\n{farm.logs()}")


def first_frame(video: Path) -> npt.NDArray[np.int16]:
    """The video's first frame as decoded RGB."""
    png = video.with_suffix(".png")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(png)],
        check=True,
    )
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def combined_in_srgb(exr: Path) -> npt.NDArray[np.int16]:
    """The Combined pass of a multilayer EXR, in whichever part, as 8-bit sRGB."""
    parts = OpenEXR.File(str(exr), separate_channels=True).parts
    [channels] = [p.channels for p in parts if "ViewLayer.Combined.R" in p.channels]
    colour = [channels[f"ViewLayer.Combined.{c}"].pixels for c in "RGB"]
    linear: npt.NDArray[np.float64] = np.clip(np.stack(colour, axis=-1).astype(np.float64), 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    rounded: npt.NDArray[np.int16] = np.round(srgb * 255).astype(np.int16)
    return rounded


def parts_of(exr: Path) -> list[str]:
    return [part.name() for part in OpenEXR.File(str(exr)).parts]


def test_videos_of_blender_34_and_50_multilayer_exr_look_like_the_single_layer_one(
    tmp_path: Path, blender_executable: BlenderInstall, blender_module: BlenderInstall
) -> None:
    blends = {
        "3.4": scenes(tmp_path, blender_executable, "b34"),
        "5.0": scenes(tmp_path, blender_module, "b50"),
    }
    pins = {"3.4": "<4", "5.0": None}  # a file saved by 5.0 opens only in 5
    results: dict[tuple[str, str], tuple[JobDetail, Path, str]] = {}
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w34", blender=blender_executable.path)
        farm.start_worker("w50", blender="bpy")
        jobs = {
            (version, kind): submit(farm, blend, f"{version}-{kind}", pins[version])
            for version, made in blends.items()
            for kind, blend in made.items()
        }
        for key, job_id in jobs.items():
            job = finished(farm, job_id)
            assert job.status is JobStatus.COMPLETED, f"{key}: {job.status_reason}"
            out = tmp_path / "out" / "-".join(key)
            with farm.client() as client:
                client.download_outputs(job_id, out)
                (video_task,) = [t for t in job.tasks if t.type == "video"]
                log = client.task_log(job_id, video_task.id)
            results[key] = (job, out, log)

    for version in blends:
        single_video = first_frame(results[version, "single"][1] / "video.mp4")
        assert single_video.shape == (HEIGHT, WIDTH, 3)
        for kind in ("plain", "passes"):
            _, out, log = results[version, kind]
            exr = out / "frames" / "0001.exr"
            video = first_frame(out / "video.mp4")
            where = f"Blender {version}, multilayer {kind}"
            if kind == "passes" and version == "5.0":
                assert len(parts_of(exr)) == 4, "Blender 5 wrote a part a pass"
            # h264 halves the colours' resolution (4:2:0): the cube's edges differ by
            # more, the whole frame by about 1 of 255.
            expected = combined_in_srgb(exr)
            assert np.abs(video - expected).mean() < 4, f"{where}: the Combined pass in sRGB"
            assert np.abs(video - single_video).mean() < 2, f"{where}: as the single-layer video"
            assert "reads each frame's picture itself" in log, f"{where}: the log says so"
            assert "ViewLayer.Combined R, G, B" in log, f"{where}: and which channels"
