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

from farmhand.manager.api import blendinfo
from farmhand.scenes import make_scene, run_builder
from farmhand.shared.images import verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameSaved
from farmhand.worker.blender.process import RenderRequest, RenderResult, render
from tests.integration.conftest import Farm

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
