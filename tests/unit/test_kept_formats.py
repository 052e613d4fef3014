"""Which scene formats are rendered as they are: one list the driver (inside Blender, no
farmhand imports) and the rest of the farm must agree on."""

from __future__ import annotations

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest

from farmhand.manager.api.runner import OUTPUT_EXTENSIONS
from farmhand.shared.images import FORMAT_OF_SUFFIX, KEPT_FORMATS, rendered_format
from farmhand.worker.blender.process import DRIVER


def driver_extensions() -> dict[str, str]:
    stand_in = types.ModuleType("bpy")
    stand_in.app = SimpleNamespace(handlers=SimpleNamespace(persistent=lambda f: f))  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("farmhand_driver_formats", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "bpy", stand_in)
        spec.loader.exec_module(module)
    return dict(module.EXTENSIONS)


def test_the_driver_keeps_exactly_the_formats_the_farm_says_it_keeps() -> None:
    extensions = driver_extensions()
    assert set(extensions) == KEPT_FORMATS
    for extension in extensions.values():
        assert extension in OUTPUT_EXTENSIONS, f"the manager refuses {extension} frames"
        assert extension in FORMAT_OF_SUFFIX, f"{extension} frames cannot be verified"


@pytest.mark.parametrize(
    ("scene", "frames"),
    [("TIFF", "TIFF"), ("WEBP", "WEBP"), ("BMP", "BMP"), ("OPEN_EXR", "OPEN_EXR"),
     ("TARGA", "PNG"), ("JPEG2000", "PNG"), ("DPX", "PNG"), ("FFMPEG", "PNG")],
)  # fmt: skip
def test_formats_the_farm_cannot_check_are_rendered_as_png(scene: str, frames: str) -> None:
    assert rendered_format(scene) == frames
