"""A tile grid finer than the frame fails every tile at once, saying why, before any
rendering: driver.py imported with a stand-in `bpy` (its pure parts only).

Before, a 16x12 px frame cut into 4x16 tiles rendered empty tiles, and the one task
whose error said anything useful reported `cannot write empty image` from the cut.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from farmhand.worker.blender.process import DRIVER


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    stand_in = types.ModuleType("bpy")
    stand_in.app = SimpleNamespace(handlers=SimpleNamespace(persistent=lambda f: f))  # type: ignore[attr-defined]
    stand_in.data = SimpleNamespace()  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("farmhand_driver_tile_grid", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "bpy", stand_in)
        spec.loader.exec_module(module)
    yield module


def tile(column: int, row: int, columns: int, rows: int) -> dict[str, int]:
    return {"column": column, "row": row, "columns": columns, "rows": rows, "overlap": 0}


@pytest.mark.parametrize("row", [0, 1, 15])
def test_more_rows_than_pixels_fails_every_tile_with_the_frame_size(driver: Any, row: int) -> None:
    """Row 1 of 16 over 12 px would be empty, row 0 would not: every tile of the grid
    fails alike, so each task says the same, useful thing."""
    render = SimpleNamespace(use_border=False)
    with pytest.raises(ValueError) as raised:
        driver.apply_tile(render, 16, 12, tile(0, row, 4, 16))
    assert str(raised.value) == (
        "the frame is 16x12 px: 16 rows of tiles would make tiles under 1 px high; "
        "use at most 12 rows"
    )
    assert render.use_border is False, "nothing of the render was changed"


def test_more_columns_than_pixels_fails_with_the_width(driver: Any) -> None:
    render = SimpleNamespace(use_border=False)
    with pytest.raises(
        ValueError,
        match=r"^the frame is 3x12 px: 4 columns of tiles would "
        r"make tiles under 1 px wide; use at most 3 columns$",
    ):
        driver.apply_tile(render, 3, 12, tile(2, 0, 4, 2))


def test_a_grid_of_one_pixel_tiles_is_rendered(driver: Any) -> None:
    """As many rows as pixels is the finest grid there is, and it works."""
    render = SimpleNamespace()
    width, height, crop = driver.apply_tile(render, 16, 12, tile(3, 11, 4, 12))
    assert (width, height) == (4, 1)
    assert crop == [0, 0, 4, 1]
    assert render.use_border and render.use_crop_to_border
