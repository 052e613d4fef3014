"""Blender 5's multilayer OpenEXR with passes, for real: a multi-part file (a part a
pass: `ViewLayer.Combined`, `ViewLayer.Depth`, `ViewLayer.Mist`, `ViewLayer.Normal`),
rendered whole and in 2x2 tiles by two bpy 5.0 workers, in half and in full float.

The frame is stored, downloaded and thumbnailed like any frame, and the merged frame is
the whole render part for part: the same parts in the same order, each with its
channels, pixel types and compression, equal bit for bit (Cycles with a fixed seed
renders a pixel from the same samples in a border as in the whole frame). The frame is
101x57, so the tiles are uneven (50 and 51 wide, 28 and 29 high).
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import OpenEXR
import pytest
from PIL import Image, ImageChops, ImageStat

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.manager.web.thumbnails import exr_preview
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TileGrid
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

WIDTH, HEIGHT = 101, 57
FRAME = 2
PARTS = ["ViewLayer.Combined", "ViewLayer.Depth", "ViewLayer.Mist", "ViewLayer.Normal"]

_PASSES = """
import bpy, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
settings = scene.render.image_settings
settings.media_type = "MULTI_LAYER_IMAGE"  # Blender 5 offers the format only then
settings.file_format = "OPEN_EXR_MULTILAYER"
settings.color_depth = sys.argv[2]
layer = scene.view_layers[0]
layer.use_pass_z = layer.use_pass_normal = layer.use_pass_mist = True
bpy.ops.wm.save_mainfile()
"""


def multilayer_scene(tmp_path: Path, install: BlenderInstall, depth: str) -> Path:
    """The 101x57 scene in multilayer OpenEXR at `depth` ("16": half, "32": full float)
    with Z, Normal and Mist passes, saved by Blender 5.0."""
    blend = make_scene(
        tmp_path / f"passes{depth}.blend", "animated", install=install, width=WIDTH,
        height=HEIGHT, frames="1-3", samples=2, output_format="OPEN_EXR",
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", _PASSES, str(blend), depth],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return blend


def render(farm: LocalFarm, blend: Path, dest: Path, name: str, **settings: Any) -> JobDetail:
    """Render frame `FRAME` of `blend`, keeping its format, and download its outputs."""
    with farm.client() as client:
        job_id = client.submit_blend(
            blend, JobSettings(frame_start=FRAME, frame_end=FRAME, name=name, **settings)
        ).id

    def finished() -> JobDetail | None:
        with farm.client() as client:
            job = client.get_job(job_id)
        done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
        return job if job.status in done else None

    job = wait_for(finished, 300, f"job {name} to finish\n{farm.logs()}")
    assert job.status == JobStatus.COMPLETED, [(t.index, t.last_error) for t in job.tasks]
    with farm.client() as client:
        client.download_outputs(job_id, dest)
    return job


def thumbnail_of_frame(farm: LocalFarm, job_id: int) -> Image.Image:
    """The web UI's thumbnail of the job's one frame, as the manager serves it."""
    with farm.client() as client:
        [frame] = [f for f in client.list_files(job_id) if f.kind == "output"]
    shown = httpx.get(
        f"{farm.url}/api/jobs/{job_id}/files/{frame.id}/thumbnail",
        headers={"Authorization": f"Bearer {farm.admin_token}"},
    )
    assert shown.status_code == 200, shown.text
    return Image.open(BytesIO(shown.content))


def assert_same_parts(merged: Path, whole: Path) -> None:
    """Part for part in order: name, compression, type, channels, pixel types, and every
    pixel's bits."""
    ours, theirs = (OpenEXR.File(str(p), separate_channels=True).parts for p in (merged, whole))
    assert [p.name() for p in ours] == [p.name() for p in theirs] == PARTS
    for a, b in zip(ours, theirs, strict=True):
        assert a.compression() == b.compression(), a.name()
        assert a.type() == b.type() == OpenEXR.scanlineimage
        assert sorted(a.channels) == sorted(b.channels), a.name()
        for name, channel in b.channels.items():
            mine, reference = a.channels[name].pixels, channel.pixels
            assert reference.shape == (HEIGHT, WIDTH)
            assert mine.dtype == reference.dtype, f"{name}: pixel type kept"
            bits = f"uint{reference.dtype.itemsize * 8}"
            differ = int(np.count_nonzero(mine.view(bits) != reference.view(bits)))
            assert differ == 0, f"{name}: {differ} pixels differ from the whole render"
        for attribute in ("BlenderMultiChannel", "colorInteropID"):
            assert a.header.get(attribute) == b.header.get(attribute), (a.name(), attribute)


def test_a_blender5_multilayer_exr_with_passes_renders_whole_and_in_tiles(
    tmp_path: Path, blender_module: BlenderInstall
) -> None:
    scenes = {depth: multilayer_scene(tmp_path, blender_module, depth) for depth in ("16", "32")}
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        farm.start_worker("w2", blender="bpy")
        for depth, blend in scenes.items():
            whole_dir, tiled_dir = tmp_path / f"whole{depth}", tmp_path / f"tiled{depth}"
            render(farm, blend, whole_dir, f"whole{depth}")
            grid = TileGrid(columns=2, rows=2, overlap=8)
            tiled = render(farm, blend, tiled_dir, f"tiled{depth}", tiles=grid)
            shown = thumbnail_of_frame(farm, tiled.id)

            [whole] = sorted(whole_dir.rglob("*.exr"))
            [merged] = sorted(tiled_dir.rglob("*.exr"))
            combined = OpenEXR.File(str(whole), separate_channels=True).parts[0].channels
            expected = "float16" if depth == "16" else "float32"
            assert combined["ViewLayer.Combined.R"].pixels.dtype == np.dtype(expected)
            assert_same_parts(merged, whole)
            # The merged frame has no Blender preview: its thumbnail is read from the EXR's
            # Combined part, not a placeholder, nor a Depth or Normal part.
            assert shown.size == (WIDTH, HEIGHT)
            plain = exr_preview(whole)
            difference = ImageChops.difference(shown.convert("RGB"), plain)
            assert max(ImageStat.Stat(difference).mean) < 4, "the Combined part's colours"
