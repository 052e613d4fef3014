"""Legitimate but unusual scene settings, rendered by real Blenders (bpy 5.0 and 3.4).

Each scene is the 64x36 animated test scene (Cycles, 2 samples) with a few settings
changed in Blender and saved again (`scene_tweak.py`), as an artist would have them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.localfarm import local_farm
from farmhand.manager.api import blendinfo
from farmhand.scenes import make_scene, run_builder
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameSaved
from farmhand.worker.blender.process import RenderRequest, RenderResult, render
from tests.integration.conftest import Farm
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.blender
WIDTH, HEIGHT = 64, 36
BLENDERS = ["blender_module", "blender_executable"]
TWEAK = Path(__file__).with_name("scene_tweak.py")


def tweaked_scene(install: BlenderInstall, out: Path, settings: list[tuple[str, Any]]) -> Path:
    """The animated scene (frames 1-3) saved by `install` with `settings` changed."""
    base = make_scene(
        out.with_name(out.stem + "-base.blend"), "animated", install=install,
        width=WIDTH, height=HEIGHT, frames="1-3", samples=2,
    )  # fmt: skip
    run_builder(install, TWEAK, [str(base), str(out), json.dumps(settings)], out, out.name)
    return out


def do_render(
    install: BlenderInstall, blend: Path, out: Path, frames: list[int], **extra: Any
) -> tuple[RenderResult, list[Event]]:
    events: list[Event] = []
    request = RenderRequest(blend, frames, out, **extra)
    result = render(install, request, log_path=out / "blender.log", on_event=events.append)
    return result, events


@pytest.mark.parametrize("fixture", BLENDERS)
def test_the_scenes_frame_step_is_read_for_the_submit_form(
    fixture: str, request: pytest.FixtureRequest, farm: Farm, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The web form pre-fills the step from `POST /api/blend-info`: a scene rendering
    every 3rd frame must not be offered as every frame."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = tweaked_scene(install, tmp_path / "step.blend", [("frame_step", 3)])
    monkeypatch.setattr(blendinfo, "blenders", lambda: [install])
    client: TestClient = farm.client
    answer = client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("step.blend", blend.read_bytes(), "application/octet-stream")},
    )
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert (info["frame_start"], info["frame_end"], info["frame_step"]) == (1, 3, 3)
    plain = make_scene(tmp_path / "plain.blend", install=install, width=WIDTH, height=HEIGHT,
                       frames="1-3", samples=2)  # fmt: skip
    answer = client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("plain.blend", plain.read_bytes(), "application/octet-stream")},
    )
    assert answer.json()["frame_step"] == 1


def border(
    min_x: float, max_x: float, min_y: float, max_y: float, crop: bool = True
) -> list[tuple[str, Any]]:
    return [
        ("render.use_border", True), ("render.use_crop_to_border", crop),
        ("render.border_min_x", min_x), ("render.border_max_x", max_x),
        ("render.border_min_y", min_y), ("render.border_max_y", max_y),
    ]  # fmt: skip


@pytest.mark.parametrize("fixture", BLENDERS)
def test_a_render_border_cropped_to_its_region_renders_the_cropped_frames(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """As `blender -b -a` writes them: only the border's pixels (Blender truncates each
    edge: 64 x 0.1-0.7 is pixels 6-44, 36 x 0.33-0.9 is 11-32), every frame accepted.
    Without crop the frame keeps its size; a tile of a still replaces the border."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    cases = {
        "quarter": (border(0.25, 0.75, 0.25, 0.75), (32, 18)),
        "odd": (border(0.1, 0.7, 0.33, 0.9), (38, 21)),
        "uncropped": (border(0.25, 0.75, 0.25, 0.75, crop=False), (WIDTH, HEIGHT)),
    }
    for name, (settings, size) in cases.items():
        blend = tweaked_scene(install, tmp_path / f"{name}.blend", settings)
        result, _ = do_render(install, blend, tmp_path / name, [1, 2])
        assert result.ok, f"{name}: {result.error}"
        for frame in (1, 2):
            assert verify_image(result.frames[frame]).width == size[0], name
            assert verify_image(result.frames[frame]).height == size[1], name
    tile = {"column": 1, "row": 0, "columns": 2, "rows": 2, "overlap": 0}
    result, _ = do_render(install, tmp_path / "odd.blend", tmp_path / "tile", [1], tile=tile)
    assert result.ok, result.error
    assert (verify_image(result.frames[1]).width, verify_image(result.frames[1]).height) == (
        WIDTH // 2,
        HEIGHT // 2,
    )


@pytest.mark.parametrize("fixture", BLENDERS)
def test_tiff_webp_and_bmp_scenes_render_in_their_own_format(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A job that keeps the .blend's format gets the scene's TIFF (8 or 16 bits), WebP or
    BMP frames, verified, not 8-bit PNG; a format the farm cannot check (Targa) is PNG."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    cases = {
        "tiff8": ([("render.image_settings.file_format", "TIFF"),
                   ("render.image_settings.color_depth", "8")], ".tif", "TIFF", 8),
        "tiff16": ([("render.image_settings.file_format", "TIFF"),
                    ("render.image_settings.color_depth", "16")], ".tif", "TIFF", 16),
        "webp": ([("render.image_settings.file_format", "WEBP")], ".webp", "WEBP", 8),
        "bmp": ([("render.image_settings.file_format", "BMP")], ".bmp", "BMP", 8),
        "targa": ([("render.image_settings.file_format", "TARGA")], ".png", "PNG", 8),
    }  # fmt: skip
    for name, (settings, suffix, kind, bits) in cases.items():
        blend = tweaked_scene(install, tmp_path / f"{name}.blend", settings)
        result, events = do_render(install, blend, tmp_path / name, [1])
        assert result.ok, f"{name}: {result.error}"
        frame = result.frames[1]
        assert frame.suffix == suffix, name
        assert verify_image(frame, WIDTH, HEIGHT).format == kind, name
        if kind == "TIFF":
            assert tiff_bits(frame) == bits, name
        saved = next(e for e in events if isinstance(e, FrameSaved))
        assert saved.preview is not None and verify_image(saved.preview).format == "JPEG"


def tiff_bits(path: Path) -> int:
    """Bits a sample of a TIFF (Pillow reads 16-bit RGB(A) as 8-bit modes)."""
    with Image.open(path) as image:
        bits = image.tag_v2.get(258, (8,))  # type: ignore[attr-defined]
    return int(bits[0] if isinstance(bits, tuple) else bits)


STEREO = [("render.use_multiview", True), ("render.views_format", "STEREO_3D")]


@pytest.mark.parametrize("fixture", BLENDERS)
def test_stereo_scenes_render_both_views(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Individual views: the left view is the frame (with Blender's preview of it), the
    right one goes with it as `views/0001_R.png`; a Stereo 3D image (side by side) is one
    picture twice as wide. A still in tiles is refused, saying why."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    individual = tweaked_scene(
        install, tmp_path / "individual.blend",
        [*STEREO, ("render.image_settings.views_format", "INDIVIDUAL")],
    )  # fmt: skip
    result, events = do_render(install, individual, tmp_path / "individual", [1, 2])
    assert result.ok, result.error
    for event in (e for e in events if isinstance(e, FrameSaved)):
        assert event.path.name == f"frame_{event.frame:04d}.png"
        assert verify_image(event.path, WIDTH, HEIGHT).format == "PNG"
        assert [p.relative_to(tmp_path / "individual").as_posix() for p in event.extras] == [
            f"views/{event.frame:04d}_R.png"
        ]
        verify_image(event.extras[0], WIDTH, HEIGHT)
        assert event.preview is not None and verify_image(event.preview).format == "JPEG"
    assert sorted(result.frames) == [1, 2]
    combined = tweaked_scene(
        install, tmp_path / "combined.blend",
        [*STEREO, ("render.image_settings.views_format", "STEREO_3D"),
         ("render.image_settings.stereo_3d_format.display_mode", "SIDEBYSIDE")],
    )  # fmt: skip
    result, events = do_render(install, combined, tmp_path / "combined", [1])
    assert result.ok, result.error
    assert verify_image(result.frames[1], WIDTH * 2, HEIGHT).format == "PNG"
    saved = next(e for e in events if isinstance(e, FrameSaved))
    assert not saved.extras and saved.preview is not None
    tile = {"column": 0, "row": 0, "columns": 2, "rows": 1, "overlap": 0}
    result, _ = do_render(install, individual, tmp_path / "tile", [1], tile=tile)
    assert not result.ok and result.error is not None
    assert "stereo/multiview output is not supported in tiles" in result.error


@pytest.mark.parametrize("fixture", BLENDERS)
@pytest.mark.parametrize("views_format", ["INDIVIDUAL", "MULTIVIEW"])
def test_stereo_scenes_saved_as_multilayer_exr_render_both_views(
    fixture: str, views_format: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With Individual views a multilayer OpenEXR is written a file a view too
    (`frame_0001_L.exr`, `frame_0001_R.exr`): the left view is the frame (with Blender's
    preview of it), the right one goes with it as `views/0001_R.exr`; every task failed
    with 'frame_0001.exr does not exist'. With Multi-View (multilayer EXR offers no
    Stereo 3D) both views are in the frame's one file, every frame of the task: the JPEG
    preview's save must not leave the scene saving views as Individual."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = tweaked_scene(
        install, tmp_path / "stereo-exr.blend",
        [*STEREO, ("render.image_settings.media_type", "MULTI_LAYER_IMAGE"),
         ("render.image_settings.file_format", "OPEN_EXR_MULTILAYER"),
         ("render.image_settings.views_format", views_format)],
    )  # fmt: skip
    out = tmp_path / "out"
    result, events = do_render(install, blend, out, [1, 2])
    assert result.ok, result.error
    saved = [e for e in events if isinstance(e, FrameSaved)]
    assert [e.frame for e in saved] == [1, 2]
    for event in saved:
        assert event.path.name == f"frame_{event.frame:04d}.exr"
        verify_image(event.path, WIDTH, HEIGHT)
        extras = [p.relative_to(out).as_posix() for p in event.extras]
        if views_format == "INDIVIDUAL":
            assert extras == [f"views/{event.frame:04d}_R.exr"]
            verify_image(event.extras[0], WIDTH, HEIGHT)
        else:  # Multi-View: both views in the frame's one file
            assert extras == []
        assert event.preview is not None and verify_image(event.preview).format == "JPEG"
    assert sorted(result.frames) == [1, 2]


@pytest.mark.slow
def test_a_stereo_job_completes_with_both_views_downloadable(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    """On a real farm: every frame counts once (its left view), the right views are stored
    beside it as `passes/views/0001_R.png`, and the frame has Blender's preview."""
    blend = tweaked_scene(
        blender_module, tmp_path / "stereo.blend",
        [*STEREO, ("render.image_settings.views_format", "INDIVIDUAL")],
    )  # fmt: skip
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        with farm.client() as client:
            job_id = client.submit_blend(blend, JobSettings(frame_start=1, frame_end=2)).id

            def finished() -> JobDetail | None:
                job = client.get_job(job_id)
                return job if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) else None

            job = wait_for(finished, 240, f"the stereo job\n{farm.logs()}")
            assert job.status is JobStatus.COMPLETED, f"{job.status_reason}\n{farm.logs()}"
            files = {f.path: f for f in client.list_files(job_id)}
            assert {path for path, f in files.items() if f.kind in ("output", "pass")} == {
                "frames/0001.png", "frames/0002.png",
                "passes/views/0001_R.png", "passes/views/0002_R.png",
            }  # fmt: skip
            assert {"previews/0001.jpg", "previews/0002.jpg"} <= set(files)
            right = client.download_file(
                job_id, files["passes/views/0001_R.png"].id, tmp_path / "r.png"
            )
            assert verify_image(right, WIDTH, HEIGHT).format == "PNG"
