"""A tiled still whose scene has a compositor File Output node, on a real farm (bpy 5.0).

Each tile's Blender writes the node's file too, a piece of a pass that no merge puts
together; the manager refuses files "for a frame" of a tile task (it owns no frames), so
a worker that sent them failed every tile. The tiles render and merge; no pass is kept,
and each tile's log says why in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.localfarm import local_farm
from farmhand.scenes import BUILDER, run_builder
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TileGrid
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.uploads import TILE_FILES_NOT_KEPT
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

WIDTH, HEIGHT = 64, 48


def test_a_tiled_still_with_a_file_output_node_renders_and_merges(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    blend = tmp_path / "comp.blend"
    options = ["--out", str(blend), "--frames", "1-1", "--samples", "2",
               "--width", str(WIDTH), "--height", str(HEIGHT),
               "--file-output", "/home/anna/passes/"]  # fmt: skip
    run_builder(blender_module, BUILDER, options, blend, "the scene with a File Output node")
    settings = JobSettings(frame_start=1, frame_end=1, tiles=TileGrid(columns=2, rows=1))
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        with farm.client() as client:
            job_id = client.submit_blend(blend, settings).id

            def finished() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

            job = wait_for(finished, 240, f"the tiled job\n{farm.logs()}")
            assert job.status is JobStatus.COMPLETED, [(t.index, t.last_error) for t in job.tasks]
            assert all(t.attempts == 1 for t in job.tasks), "no tile failed first"
            kinds = sorted((f.kind, f.path) for f in client.list_files(job_id) if f.kind != "input")
            assert [k for k in kinds if k[0] not in ("tile",)] == [("output", "frames/0001.png")]
            assert len([k for k in kinds if k[0] == "tile"]) == 2
            tiles = [t for t in job.tasks if t.tile is not None]
            for tile in tiles:
                log = client.task_log(job_id, tile.id)
                assert log.count(TILE_FILES_NOT_KEPT) == 1, log[-2000:]
            written = client.download_outputs(job_id, tmp_path / "out")
    [frame] = written
    verify_image(frame, WIDTH, HEIGHT)
