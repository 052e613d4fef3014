"""Tiled stills for real: one frame split into tiles rendered by two workers in real
Blender, merged into one PNG, compared with the same frame rendered whole.

The frame is 61x47 so the tiles are uneven (columns of 20 and 21 pixels): an
off-by-one in the border or the merge shows as a seam or a shifted row. Cycles renders
each pixel from the same random sequence whether it renders the frame or a part of it
(the scene has a fixed seed and no denoising), so the merged frame matches the whole one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TileGrid
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

WIDTH, HEIGHT = 61, 47
FRAME = 2


def finished(farm: LocalFarm, job_id: int) -> JobDetail | None:
    with farm.client() as client:
        job = client.get_job(job_id)
    done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
    return job if job.status in done else None


def render_and_fetch(farm: LocalFarm, blend: Path, dest: Path, **settings: object) -> JobDetail:
    with farm.client() as client:
        job_id = client.submit_blend(
            blend,
            JobSettings(frame_start=FRAME, frame_end=FRAME, **settings),  # type: ignore[arg-type]
        ).id
    job = wait_for(lambda: finished(farm, job_id), 300, f"job {job_id} to finish")
    assert job.status == JobStatus.COMPLETED, [(t.index, t.last_error) for t in job.tasks]
    with farm.client() as client:
        client.download_outputs(job_id, dest)
    return job


def assert_same_picture(merged: Path, whole: Path) -> None:
    with Image.open(merged) as a, Image.open(whole) as b:
        assert a.size == b.size == (WIDTH, HEIGHT)
        difference = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA"))
        worst = max(high for _low, high in difference.getextrema())  # type: ignore[union-attr]
    assert worst <= 2, f"the merged frame differs from the whole one by up to {worst}/255"


@pytest.mark.parametrize("blender", ["bpy", "executable"])
def test_a_tiled_still_matches_the_frame_rendered_whole(
    blender: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    install: BlenderInstall = request.getfixturevalue(
        "blender_module" if blender == "bpy" else "blender_executable"
    )
    # A scene rendered by Blender 3.4 must be saved by 3.4.
    blend = make_scene(
        tmp_path / "still.blend", "animated", install=install,
        width=WIDTH, height=HEIGHT, frames="1-3", samples=4,
    )  # fmt: skip
    worker_blender = "bpy" if blender == "bpy" else str(install.path)
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("t1", blender=worker_blender)
        farm.start_worker("t2", blender=worker_blender)
        tiled = render_and_fetch(
            farm, blend, tmp_path / "tiled", name="tiled", tiles=TileGrid(columns=3, rows=2)
        )
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
