"""A video of OpenEXR frames looks like Blender's own PNG frames of the scene.

Two things made it look otherwise, with scenes rendered for real by Blender 3.4 and 5.0:

- Which view layer. A scene with the view layers `ViewLayer` and `Second` renders a
  multilayer EXR with both; Blender 3.4's file holds them in one part, where OpenEXR
  sorts the channels by name, and the video showed `Second`, the alphabetically first,
  while Blender saves (and the job page's thumbnail shows) `ViewLayer`, the scene's
  first. Here `Second` renders everything red.
- Which colour transform. The video put the EXR's linear light through the plain sRGB
  curve, while Blender saves a PNG through the scene's view transform (Filmic in 3.4,
  AgX in 5.0) and exposure: other contrast, other highlights.

The worker's Blender now opens the job's scene for the video, takes its first rendering
view layer and saves each picture through its colour management. The reference is
Blender's own PNG of the same frame, rendered from the same saved scene (without dither,
so it is the exact display values): the video's first frame must match it within what
h264's halved colour resolution loses, and the plain sRGB curve must not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import OpenEXR
import pytest
from PIL import Image

from farmhand.localfarm import local_farm
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
VERSIONS = ("3.4", "5.0")

_SCENES = """
import sys
import bpy
argv = sys.argv[sys.argv.index("--") + 1 :]
source, layers_blend, layers_png, view_blend, view_png = argv


def exr(scene, file_format):
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5 offers the format only then
        settings.media_type = "MULTI_LAYER_IMAGE" if "MULTI" in file_format else "IMAGE"
    settings.file_format = file_format


def png_of(scene, path):
    # Blender's own PNG of frame 1, as exact display values: no dither noise.
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    scene.render.dither_intensity = 0
    scene.frame_set(1)
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


bpy.ops.wm.open_mainfile(filepath=source)
scene = bpy.context.scene
red = bpy.data.materials.new("Red")
red.diffuse_color = (1, 0, 0, 1)
if red.node_tree is not None:
    for node in red.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            node.inputs["Base Color"].default_value = (1, 0, 0, 1)
second = scene.view_layers.new("Second")
second.material_override = red
exr(scene, "OPEN_EXR_MULTILAYER")
bpy.ops.wm.save_as_mainfile(filepath=layers_blend, copy=True)
png_of(scene, layers_png)

bpy.ops.wm.open_mainfile(filepath=source)
scene = bpy.context.scene
scene.view_settings.exposure = 1.5  # past 1.0 in the sky: sRGB clips, the view does not
exr(scene, "OPEN_EXR")
bpy.ops.wm.save_as_mainfile(filepath=view_blend, copy=True)
png_of(scene, view_png)
"""


@dataclass
class Made:
    """One job's scene, Blender's PNG of its frame 1, and what the farm made of it."""

    blend: Path
    png: Path
    exr: Path | None = None
    video: Path | None = None
    thumbnail: bytes = b""
    log: str = ""


def build(tmp_path: Path, install: BlenderInstall, name: str) -> dict[str, Made]:
    folder = tmp_path / name
    source = make_scene(
        folder / "source.blend", install=install, width=WIDTH, height=HEIGHT, frames="1-2",
        samples=2,
    )  # fmt: skip
    made = {
        kind: Made(folder / f"{kind}.blend", folder / f"{kind}.png") for kind in ("layers", "view")
    }
    script = folder / "scenes.py"
    script.write_text(_SCENES)
    paths = [str(source)] + [str(p) for m in made.values() for p in (m.blend, m.png)]
    if install.kind == "module":
        command = [sys.executable, str(script), "--", *paths]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", "--python-exit-code", "1",
                   "--python", str(script), "--", *paths]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return made


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory,
    blender_executable: BlenderInstall,
    blender_module: BlenderInstall,
) -> Iterator[dict[tuple[str, str], Made]]:
    """Each scene of each Blender rendered by a farm with a video: a 3.4 and a 5.0
    worker, each job tagged for its own (video tasks go to any worker with ffmpeg)."""
    tmp_path = tmp_path_factory.mktemp("scene-look")
    scenes = {"3.4": build(tmp_path, blender_executable, "b34"),
              "5.0": build(tmp_path, blender_module, "b50")}  # fmt: skip
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w34", "--tag", "b34", blender=blender_executable.path)
        farm.start_worker("w50", "--tag", "b50", blender="bpy")
        jobs: dict[tuple[str, str], int] = {}
        with farm.client() as client:
            for version, made in scenes.items():
                for kind, scene in made.items():
                    settings = JobSettings(
                        frame_start=1, frame_end=1, name=f"{version}-{kind}",
                        video=VideoSettings(crf=0),
                        required_tags=["b34" if version == "3.4" else "b50"],
                    )  # fmt: skip
                    jobs[version, kind] = client.submit_blend(scene.blend, settings).id
            results: dict[tuple[str, str], Made] = {}
            for (version, kind), job_id in jobs.items():

                def finished(job_id: int = job_id) -> JobDetail | None:
                    job = client.get_job(job_id)
                    done = (JobStatus.COMPLETED, JobStatus.FAILED)
                    return job if job.status in done else None

                job = wait_for(finished, 600, f"job {version}-{kind}\n{farm.logs()}")
                assert job.status is JobStatus.COMPLETED, f"{job.status_reason}\n{farm.logs()}"
                out = tmp_path / "out" / f"{version}-{kind}"
                files = {f.path: f for f in client.list_files(job_id)}
                result = scenes[version][kind]
                frame = files["frames/0001.exr"]
                result.exr = client.download_file(job_id, frame.id, out / "0001.exr")
                result.video = client.download_file(
                    job_id, files["video.mp4"].id, out / "video.mp4"
                )
                result.thumbnail = httpx.get(
                    f"{farm.url}/api/jobs/{job_id}/files/{frame.id}/thumbnail",
                    headers={"Authorization": f"Bearer {farm.admin_token}"},
                ).content
                (video_task,) = [t for t in job.tasks if t.type == "video"]
                result.log = client.task_log(job_id, video_task.id)
                results[version, kind] = result
    yield results


def first_frame(video: Path) -> npt.NDArray[np.float64]:
    """The video's first frame as decoded RGB, 0-255."""
    png = video.with_suffix(".png")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(png)],
        check=True,
    )
    return rgb(png)


def rgb(image: Path | bytes) -> npt.NDArray[np.float64]:
    with Image.open(BytesIO(image) if isinstance(image, bytes) else image) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.float64)


def srgb_of(exr: Path, layer: str) -> npt.NDArray[np.float64]:
    """A layer of an EXR (`` for a single-layer one) through the plain sRGB curve, 0-255:
    worked out here from the file, not with farmhand's code."""
    dot = f"{layer}." if layer else ""
    for part in OpenEXR.File(str(exr), separate_channels=True).parts:
        if f"{dot}R" in part.channels:
            colour = [part.channels[f"{dot}{c}"].pixels for c in "RGB"]
    linear = np.clip(np.stack(colour, axis=-1).astype(np.float64), 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.asarray(srgb * 255)


def differ(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Mean absolute difference of two RGB images, 0-255."""
    assert a.shape == b.shape == (HEIGHT, WIDTH, 3)
    return float(np.abs(a - b).mean())


# h264 halves the colour's resolution (4:2:0): the video's frame differs from any
# reference by about 1-2 of 255 on average, more along the cube's edges.
CLOSE = 3.0


@pytest.mark.parametrize("version", VERSIONS)
def test_the_video_of_two_view_layers_shows_the_scenes_first(
    rendered: dict[tuple[str, str], Made], version: str
) -> None:
    made = rendered[version, "layers"]
    assert made.video is not None and made.exr is not None
    video, blender = first_frame(made.video), rgb(made.png)
    second = srgb_of(made.exr, "Second.Combined")
    # What the file alone suggests differs: Blender 3.4's one part sorts `Second` first.
    assert differ(second, blender) > 20, "the Second layer is red, the picture is not"
    assert differ(video, blender) < CLOSE, f"Blender {version}: the video shows ViewLayer"
    assert "ViewLayer.Combined R, G, B" in made.log, "and its log says which channels"
    assert "view layer ViewLayer first" in made.log
    thumbnail = rgb(made.thumbnail)
    assert differ(thumbnail, blender) < CLOSE + 2, "the thumbnail (Blender's preview, JPEG) too"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_video_of_exr_frames_shows_the_scenes_view_transform(
    rendered: dict[tuple[str, str], Made], version: str
) -> None:
    made = rendered[version, "view"]
    assert made.video is not None and made.exr is not None
    video, blender = first_frame(made.video), rgb(made.png)
    view = "Filmic" if version == "3.4" else "AgX"
    # The plain sRGB curve of the same pixels is visibly another picture.
    assert differ(srgb_of(made.exr, ""), blender) > 10, f"{view} is not the sRGB curve"
    assert differ(video, blender) < CLOSE, f"Blender {version}: the video is {view}'s"
    assert f"{view} view, look None, exposure 1.5" in made.log, "its log says which view"
