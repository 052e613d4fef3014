"""Tiled stills for real: a frame (or each frame of a range) split into tiles rendered by
two workers in real Blender, merged into a PNG or OpenEXR frame, compared with the same
frame rendered whole.

The frame is 61x47 so the tiles are uneven (columns of 20 and 21 pixels): an
off-by-one in the border or the merge shows as a seam or a shifted row. Cycles renders
each pixel from the same random sequence whether it renders the frame or a part of it
(the scene has a fixed seed and no denoising), so the merged frame matches the whole one.
Each tile is rendered with an overlap and cut down, so the cut is checked too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np
import OpenEXR
import pytest
from PIL import Image, ImageChops

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.manager.web.thumbnails import exr_preview
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TileGrid
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.farmhand_cli import cli
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

WIDTH, HEIGHT = 61, 47
FRAME = 2


def finished(farm: LocalFarm, job_id: int) -> JobDetail | None:
    with farm.client() as client:
        job = client.get_job(job_id)
    done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
    return job if job.status in done else None


def render_and_fetch(
    farm: LocalFarm, blend: Path, dest: Path, last: int = FRAME, **settings: object
) -> JobDetail:
    """Render frames `FRAME` to `last` of `blend` with `settings`, wait, download them."""
    with farm.client() as client:
        job_id = client.submit_blend(
            blend,
            JobSettings(frame_start=FRAME, frame_end=last, **settings),
        ).id
    return fetch_when_done(farm, job_id, dest)


def fetch_when_done(farm: LocalFarm, job_id: int, dest: Path) -> JobDetail:
    """Wait for job `job_id` to complete and download its outputs into `dest`."""
    job = wait_for(lambda: finished(farm, job_id), 300, f"job {job_id} to finish")
    assert job.status == JobStatus.COMPLETED, [(t.index, t.last_error) for t in job.tasks]
    with farm.client() as client:
        client.download_outputs(job_id, dest)
    return job


@contextmanager
def two_worker_farm(
    tmp_path: Path, blender: str, request: pytest.FixtureRequest, scene_format: str = "PNG"
) -> Iterator[tuple[LocalFarm, Path]]:
    """A manager, two workers of `blender` ("bpy": the 5.0 module; "executable":
    Debian's 3.4) and the 61x47 scene saved by that Blender (3.4 renders only what 3.4
    saved), set to write `scene_format`."""
    install: BlenderInstall = request.getfixturevalue(
        "blender_module" if blender == "bpy" else "blender_executable"
    )
    blend = make_scene(
        tmp_path / "still.blend", "animated", install=install,
        width=WIDTH, height=HEIGHT, frames="1-3", samples=4, output_format=scene_format,
    )  # fmt: skip
    worker_blender = "bpy" if blender == "bpy" else str(install.path)
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender=worker_blender)
        farm.start_worker("w2", blender=worker_blender)
        yield farm, blend


def worst_difference(merged: Path, whole: Path, size: tuple[int, int]) -> int:
    with Image.open(merged) as a, Image.open(whole) as b:
        assert a.size == b.size == size
        difference = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA"))
        # An RGBA image's extrema: a (low, high) pair a band, never one pair.
        extrema = cast("tuple[tuple[int, int], ...]", difference.getextrema())
        return max(high for _low, high in extrema)


def assert_same_picture(merged: Path, whole: Path) -> None:
    worst = worst_difference(merged, whole, (WIDTH, HEIGHT))
    assert worst <= 2, f"the merged frame differs from the whole one by up to {worst}/255"


@pytest.mark.parametrize("blender", ["bpy", "executable"])
def test_a_tiled_still_matches_the_frame_rendered_whole(
    blender: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with two_worker_farm(tmp_path, blender, request) as (farm, blend):
        # Tiles render past their edges (the default 32 pixels, most of this small frame,
        # or 5) and are cut down before the merge: a cut one pixel off shows here.
        overlap = 32 if blender == "bpy" else 5
        grid = TileGrid(columns=3, rows=2, overlap=overlap)
        tiled = render_and_fetch(farm, blend, tmp_path / "tiled", name="tiled", tiles=grid)
        whole = render_and_fetch(farm, blend, tmp_path / "whole", name="whole")

    tiles = [t for t in tiled.tasks if t.tile is not None]
    assert sorted((t.tile.row, t.tile.column) for t in tiles if t.tile) == [
        (r, c) for r in range(2) for c in range(3)
    ]
    [merge] = [t for t in tiled.tasks if t.type == "merge"]
    assert merge.frames == [FRAME] and merge.status == "completed"
    assert (tiled.frames_done, tiled.frames_total, tiled.progress) == (1, 1, 100.0)
    [merged] = sorted((tmp_path / "tiled").rglob("*.png"))
    [reference] = sorted((tmp_path / "whole").rglob("*.png"))
    assert_same_picture(merged, reference)
    assert whole.tasks[0].tile is None


def test_a_range_in_tiles_matches_each_frame_rendered_whole(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Frames 2 and 3 (the scene moves between them), each in 2x1 tiles, submitted as a
    person would (`farmhand submit --frames 2-3 --tiles 2x1`): each merged frame is that
    frame's own tiles, equal to the frame rendered whole, not the other frame's."""
    with two_worker_farm(tmp_path, "executable", request) as (farm, blend):
        submitted = cli(
            farm, "submit", str(blend), "--name", "tiled-range", "--frames", "2-3",
            "--tiles", "2x1", "--tile-overlap", "5",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        with farm.client() as client:
            [job_id] = [job.id for job in client.list_jobs() if job.name == "tiled-range"]
        tiled = fetch_when_done(farm, job_id, tmp_path / "tiled")
        render_and_fetch(farm, blend, tmp_path / "whole", last=FRAME + 1, name="whole")

    assert [(t.type, t.frames, t.tile and t.tile.frame) for t in tiled.tasks] == [
        ("render", [], 2), ("render", [], 2), ("merge", [2], None),
        ("render", [], 3), ("render", [], 3), ("merge", [3], None),
    ]  # fmt: skip
    assert (tiled.frames_done, tiled.frames_total, tiled.progress) == (2, 2, 100.0)
    merged = sorted((tmp_path / "tiled").rglob("*.png"))
    whole = sorted((tmp_path / "whole").rglob("*.png"))
    assert len(merged) == len(whole) == 2, (merged, whole)
    for ours, theirs in zip(merged, whole, strict=True):
        assert_same_picture(ours, theirs)
    assert worst_difference(merged[0], merged[1], (WIDTH, HEIGHT)) > 2, "the frames differ"


def exr_difference(merged: Path, whole: Path) -> float:
    """The largest difference of any channel's pixel between two EXRs that must have the
    same channels, pixel types, size and compression."""
    a, b = (OpenEXR.File(str(p), separate_channels=True) for p in (merged, whole))
    assert a.header()["compression"] == b.header()["compression"]
    ours, theirs = a.channels(), b.channels()
    assert sorted(ours) == sorted(theirs), "every channel of the whole frame, no other"
    worst = 0.0
    for name, channel in theirs.items():
        assert channel.pixels.shape == (HEIGHT, WIDTH)
        assert ours[name].pixels.dtype == channel.pixels.dtype, f"{name}: pixel type kept"
        difference = np.abs(ours[name].pixels.astype(np.float64) - channel.pixels)
        worst = max(worst, float(difference.max()))
    return worst


@pytest.mark.parametrize(
    ("blender", "output_format"),
    [("bpy", "OPEN_EXR"), ("bpy", "OPEN_EXR_MULTILAYER"), ("executable", "OPEN_EXR")],
)
def test_a_tiled_still_in_openexr_matches_the_frame_rendered_whole(
    blender: str, output_format: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As the PNG test, in float: the tiles are cut and merged with every channel (a
    multilayer file's `ViewLayer.Combined.*` too) and its pixel type kept."""
    with two_worker_farm(tmp_path, blender, request) as (farm, blend):
        grid = TileGrid(columns=3, rows=2, overlap=5)
        tiled, whole = tmp_path / "tiled", tmp_path / "whole"
        render_and_fetch(farm, blend, tiled, name="tiled", tiles=grid, output_format=output_format)
        render_and_fetch(farm, blend, whole, name="whole", output_format=output_format)
    [merged] = sorted((tmp_path / "tiled").rglob("*.exr"))
    [reference] = sorted((tmp_path / "whole").rglob("*.exr"))
    # Cycles with the scene's fixed seed renders a pixel from the same samples whether
    # it renders the frame or a border of it, and nothing in between rounds: measured,
    # the merged frame equals the whole one bit for bit (Blender 3.4 and 5.0). The
    # tolerance only allows for float noise; a tile one pixel off differs by ~0.1-1.
    worst = exr_difference(merged, reference)
    assert worst <= 1e-5, f"the merged EXR differs from the whole one by up to {worst}"
    # No Blender preview comes with a merged frame: its thumbnail is made from the EXR,
    # a multilayer one's Combined pass too.
    assert exr_preview(merged).size == (WIDTH, HEIGHT)


def test_a_tiled_still_keeping_the_scenes_openexr_is_merged_as_exr(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A job without `output_format` keeps the .blend's: a scene that writes OpenEXR gets
    EXR tiles and an EXR frame in its own pixel type, not 8-bit PNG, equal to the frame
    rendered whole from the same scene."""
    in_exr = two_worker_farm(tmp_path, "executable", request, scene_format="OPEN_EXR")
    with in_exr as (farm, blend):
        grid = TileGrid(columns=2, rows=2, overlap=5)
        tiled = render_and_fetch(farm, blend, tmp_path / "tiled", name="tiled", tiles=grid)
        render_and_fetch(farm, blend, tmp_path / "whole", name="whole")
    assert tiled.settings.output_format is None
    assert not list((tmp_path / "tiled").rglob("*.png")), "no PNG made of the scene's EXR"
    [merged] = sorted((tmp_path / "tiled").rglob("*.exr"))
    [reference] = sorted((tmp_path / "whole").rglob("*.exr"))
    channels = OpenEXR.File(str(merged), separate_channels=True).channels()
    assert {c.pixels.dtype for c in channels.values()} <= {np.dtype("float16"), np.dtype("float32")}
    worst = exr_difference(merged, reference)
    assert worst <= 1e-5, f"the merged EXR differs from the whole one by up to {worst}"


def test_the_overlap_keeps_denoising_seams_out_of_the_merged_frame(
    tmp_path: Path, blender_module: BlenderInstall
) -> None:
    """With the denoiser on, a tile denoised alone differs from the whole frame near its
    edges; rendered with the overlap, the merged frame matches the whole one far more
    closely (measured: 16/255 at worst without overlap, 5/255 with 32 pixels)."""
    size = (200, 150)
    blend = make_scene(
        tmp_path / "denoised.blend", "animated", install=blender_module,
        width=size[0], height=size[1], frames="1-3", samples=16,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]);"
         " bpy.context.scene.cycles.use_denoising = True; bpy.ops.wm.save_mainfile()", str(blend)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("d1", blender="bpy")
        farm.start_worker("d2", blender="bpy")
        render_and_fetch(farm, blend, tmp_path / "whole", name="whole")
        for overlap in (0, 32):
            grid = TileGrid(columns=4, rows=3, overlap=overlap)
            render_and_fetch(farm, blend, tmp_path / f"o{overlap}", name=f"o{overlap}", tiles=grid)
    [whole] = (tmp_path / "whole").rglob("*.png")
    [bare] = (tmp_path / "o0").rglob("*.png")
    [overlapped] = (tmp_path / "o32").rglob("*.png")
    without, with_overlap = (worst_difference(m, whole, size) for m in (bare, overlapped))
    assert with_overlap <= 8, f"seams of up to {with_overlap}/255 despite the overlap"
    assert with_overlap < without, (with_overlap, without)
