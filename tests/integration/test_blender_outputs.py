"""Outputs on a real farm: EXR frames, Blender-made previews, File Output node files.

A real worker (bpy 5.0) renders an EXR job whose scene has a compositor File Output node
and the Filmic view: every frame arrives with Blender's JPEG preview and the node's file,
the job shows its last frame, and the web UI's thumbnail of an EXR frame is Blender's
preview (Filmic), not farmhand's plain sRGB reading of the EXR.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageChops, ImageStat

from farmhand.localfarm import local_farm
from farmhand.manager.web.thumbnails import exr_preview
from farmhand.scenes import BUILDER, run_builder
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two RGB images, 0-255."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_exr_job_keeps_previews_passes_and_its_last_frame(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    blend = tmp_path / "shot.blend"
    options = ["--out", str(blend), "--frames", "1-2", "--samples", "2", "--width", "64",
               "--height", "48", "--file-output", "/home/anna/passes/",
               "--view-transform", "Filmic"]  # fmt: skip
    run_builder(blender_module, BUILDER, options, blend, "the EXR scene")
    settings = JobSettings(frame_start=1, frame_end=2, output_format="OPEN_EXR")
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        with farm.client() as client:
            job_id = client.submit_blend(blend, settings).id

            def finished() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

            job = wait_for(finished, 240, f"the EXR job\n{farm.logs()}")
            assert job.status is JobStatus.COMPLETED, f"{job.status_reason}\n{farm.logs()}"
            files = client.list_files(job_id)
            by_kind: dict[str, list[str]] = {}
            for f in files:
                by_kind.setdefault(f.kind, []).append(f.path)
            assert sorted(by_kind["output"]) == ["frames/0001.exr", "frames/0002.exr"]
            assert sorted(by_kind["preview"]) == ["previews/0001.jpg", "previews/0002.jpg"]
            assert sorted(by_kind["pass"]) == [
                "passes/00-File_Output/beauty_Image0001.png",
                "passes/00-File_Output/beauty_Image0002.png",
            ]
            assert job.last_frame is not None and job.last_frame.kind == "output"
            assert job.last_preview is not None
            assert job.last_preview.frame == job.last_frame.frame

            exr = next(f for f in files if f.path == "frames/0001.exr")
            jpg = next(f for f in files if f.path == "previews/0001.jpg")
            exr_path = client.download_file(job_id, exr.id, tmp_path / "f.exr")
            jpg_path = client.download_file(job_id, jpg.id, tmp_path / "p.jpg")
            thumb = httpx.get(
                f"{farm.url}/api/jobs/{job_id}/files/{exr.id}/thumbnail",
                headers={"Authorization": f"Bearer {farm.admin_token}"},
            )
            assert thumb.status_code == 200
        shown = Image.open(BytesIO(thumb.content))
        blender_made = Image.open(jpg_path)
        plain = exr_preview(exr_path)
        assert difference(shown, blender_made) < 4, "the thumbnail is Blender's preview"
        assert difference(shown, plain) > difference(shown, blender_made) + 4
