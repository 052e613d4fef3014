"""Merging a tiled still's tiles: placed edge to edge whatever their uneven sizes, and a
tile missing or of the wrong size refused with a reason rather than a seam."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from farmhand.cli.jobs_cmd import Failed, tile_grid
from farmhand.shared.schemas import TileGrid, TileSpec
from farmhand.worker.merge import MergeError, merge_tiles

# A 5x3 frame in 2 columns (2 and 3 wide) and 2 rows (1 and 2 high), one colour a tile.
WIDTHS, HEIGHTS = (2, 3), (1, 2)
COLOURS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (9, 9, 9)}


def tiles(tmp_path: Path, sizes: dict[tuple[int, int], tuple[int, int]] | None = None) -> dict:
    made = {}
    for (row, column), colour in COLOURS.items():
        size = (sizes or {}).get((row, column), (WIDTHS[column], HEIGHTS[row]))
        path = tmp_path / f"r{row}c{column}.png"
        Image.new("RGB", size, colour).save(path)
        made[(row, column)] = path
    return made


def test_tiles_are_placed_edge_to_edge(tmp_path: Path) -> None:
    out = tmp_path / "frame.png"
    assert merge_tiles(tiles(tmp_path), (2, 2), out) == (5, 3)
    with Image.open(out) as frame:
        for (row, column), colour in COLOURS.items():
            left, top = sum(WIDTHS[:column]), sum(HEIGHTS[:row])
            for x in range(left, left + WIDTHS[column]):
                for y in range(top, top + HEIGHTS[row]):
                    assert frame.getpixel((x, y)) == colour, (x, y)


def test_a_missing_or_misfit_tile_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "frame.png"
    some = tiles(tmp_path)
    del some[(1, 1)]
    with pytest.raises(MergeError, match=r"missing \(row, column\): \[\(1, 1\)\]"):
        merge_tiles(some, (2, 2), out)
    with pytest.raises(MergeError, match="r1c1 is 4x2, but its column is 3 wide"):
        merge_tiles(tiles(tmp_path, {(1, 1): (4, 2)}), (2, 2), out)
    with pytest.raises(MergeError, match=r"missing \(row, column\): \[\(2, 0\), \(2, 1\)\]"):
        merge_tiles(tiles(tmp_path), (3, 2), out)  # a whole row missing is no smaller frame
    assert not out.exists()


def test_the_cli_reads_columns_by_rows() -> None:
    assert tile_grid("4x3") == TileGrid(columns=4, rows=3)
    assert tile_grid(None) is None
    for bad, said in (("4", "COLUMNSxROWS"), ("ax2", "COLUMNSxROWS"), ("1x1", "at least 2")):
        with pytest.raises(Failed, match=said):
            tile_grid(bad)


def test_tiles_are_counted_left_to_right_then_down() -> None:
    spec = {"frame": 1, "columns": 3, "rows": 2}
    assert TileSpec(column=0, row=0, **spec).label == "tile 1 of 6"
    assert TileSpec(column=2, row=0, **spec).label == "tile 3 of 6"
    assert TileSpec(column=0, row=1, **spec).label == "tile 4 of 6"
