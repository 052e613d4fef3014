"""Merging a tiled still's tiles: placed edge to edge whatever their uneven sizes, and a
tile missing or of the wrong size refused with a reason rather than a seam; in PNG and
in OpenEXR (every channel, its pixel type and the compression kept), and the cut of a
tile's overlap before it; a cancel stops a merge between tiles, with no frame written."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import OpenEXR
import pytest
from PIL import Image

from farmhand.cli.jobs_cmd import Failed, tile_grid
from farmhand.shared.images import ImageError, verify_image
from farmhand.shared.schemas import TileFile, TileGrid, TileSpec
from farmhand.worker.blender.events import FrameSaved
from farmhand.worker.blender.process import _cut_out_tile
from farmhand.worker.cache import BlobCache
from farmhand.worker.merge import (
    MergeCanceled,
    MergeError,
    MergeWork,
    merge,
    merge_tiles,
    merged_suffix,
)

# A 5x3 frame in 2 columns (2 and 3 wide) and 2 rows (1 and 2 high), one colour a tile.
WIDTHS, HEIGHTS = (2, 3), (1, 2)
COLOURS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (9, 9, 9)}


def tiles(
    tmp_path: Path, sizes: dict[tuple[int, int], tuple[int, int]] | None = None
) -> dict[tuple[int, int], Path]:
    made: dict[tuple[int, int], Path] = {}
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
    stray = {**tiles(tmp_path), (0, 2): tmp_path / "r0c0.png"}
    with pytest.raises(MergeError, match=r"outside the 2x2 grid \(row, column\): \[\(0, 2\)\]"):
        merge_tiles(stray, (2, 2), out)
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


# OpenEXR: a 5x3 frame in the same 2x2 grid; every pixel's value is its place in the
# frame (y * 10 + x), so a tile pasted one pixel off shows as a wrong value.
def exr_tiles(
    tmp_path: Path,
    dtype: str = "float16",
    sizes: dict[tuple[int, int], tuple[int, int]] | None = None,
    extra: dict[tuple[int, int], str] | None = None,
) -> dict[tuple[int, int], Path]:
    """Tiles with R, G, B, A and a float32 `ViewLayer.Depth.Z` pass (a multilayer file's
    channel name); `extra` adds a channel to a tile."""
    made = {}
    for row, column in COLOURS:
        width, height = (sizes or {}).get((row, column), (WIDTHS[column], HEIGHTS[row]))
        left, top = sum(WIDTHS[:column]), sum(HEIGHTS[:row])
        ys, xs = np.mgrid[top : top + height, left : left + width]
        value = (ys * 10 + xs).astype(dtype)
        channels = {c: value + offset for offset, c in enumerate("RGBA")}
        channels["ViewLayer.Depth.Z"] = (value * 0.5).astype(np.float32)
        if (name := (extra or {}).get((row, column))) is not None:
            channels[name] = value
        header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage}
        path = tmp_path / f"r{row}c{column}.exr"
        OpenEXR.File(header, channels).write(str(path))
        made[(row, column)] = path
    return made


def read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    file = OpenEXR.File(str(path), separate_channels=True)
    return file.header(), {name: c.pixels for name, c in file.channels().items()}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_exr_tiles_are_placed_edge_to_edge_with_every_channel_kept(
    tmp_path: Path, dtype: str
) -> None:
    out = tmp_path / "frame.exr"
    assert merge_tiles(exr_tiles(tmp_path, dtype), (2, 2), out) == (5, 3)
    header, channels = read(out)
    ys, xs = np.mgrid[0:3, 0:5]
    expected = (ys * 10 + xs).astype(dtype)
    assert sorted(channels) == ["A", "B", "G", "R", "ViewLayer.Depth.Z"]
    for offset, name in enumerate("RGBA"):
        assert channels[name].dtype == np.dtype(dtype), "half stays half, float float"
        assert np.array_equal(channels[name], expected + offset), name
    assert channels["ViewLayer.Depth.Z"].dtype == np.float32
    assert np.array_equal(channels["ViewLayer.Depth.Z"], (expected * 0.5).astype(np.float32))
    assert header["compression"] == OpenEXR.PIZ_COMPRESSION, "the tiles' compression"
    for window in ("dataWindow", "displayWindow"):
        assert [list(corner) for corner in header[window]] == [[0, 0], [4, 2]]


def test_an_exr_grid_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "frame.exr"
    some = exr_tiles(tmp_path)
    del some[(0, 1)]
    with pytest.raises(MergeError, match=r"missing \(row, column\): \[\(0, 1\)\]"):
        merge_tiles(some, (2, 2), out)
    with pytest.raises(MergeError, match="r1c1 is 3x1, but its column is 3 wide and its row 2"):
        merge_tiles(exr_tiles(tmp_path, sizes={(1, 1): (3, 1)}), (2, 2), out)
    with pytest.raises(MergeError, match=r"r1c1 has the channels .*ViewLayer.Normal.X"):
        merge_tiles(exr_tiles(tmp_path, extra={(1, 1): "ViewLayer.Normal.X"}), (2, 2), out)
    (tmp_path / "half").mkdir()
    half = exr_tiles(tmp_path / "half", "float16")
    half[(1, 1)] = exr_tiles(tmp_path, "float32")[(1, 1)]
    with pytest.raises(MergeError, match=r"r1c1 has the channels A \(float32\)"):
        merge_tiles(half, (2, 2), out)
    png = tiles(tmp_path)
    with pytest.raises(MergeError, match=r"r0c0 is r0c0.png, but the frame is a .exr"):
        merge_tiles(png, (2, 2), out)
    assert not out.exists()


def cut_event(path: Path, crop: tuple[int, int, int, int], size: tuple[int, int]) -> FrameSaved:
    return FrameSaved(frame=7, path=path, seconds=1.0, width=size[0], height=size[1], crop=crop)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_an_exr_tile_is_cut_out_of_its_overlap_with_every_channel_kept(
    tmp_path: Path, dtype: str
) -> None:
    """As Blender writes a border render cropped to the border: 6x5 pixels with data and
    display window at (0, 0); the tile is the 3x2 at (2, 1)."""
    ys, xs = np.mgrid[0:5, 0:6]
    value = (ys * 10 + xs).astype(dtype)
    path = tmp_path / "frame_0007.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "BlenderMultiChannel": "Blender V2.55.1 and newer"}  # fmt: skip
    channels = {"ViewLayer.Combined.R": value, "ViewLayer.Combined.A": value + 1}
    OpenEXR.File(header, channels).write(str(path))
    _cut_out_tile(cut_event(path, (2, 1, 6, 5), (3, 2)))
    header, cut = read(path)
    assert np.array_equal(cut["ViewLayer.Combined.R"], value[1:3, 2:5])
    assert np.array_equal(cut["ViewLayer.Combined.A"], value[1:3, 2:5] + 1)
    assert {c.dtype for c in cut.values()} == {np.dtype(dtype)}
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION
    assert header["BlenderMultiChannel"] == "Blender V2.55.1 and newer", "metadata kept"
    assert [list(corner) for corner in header["dataWindow"]] == [[0, 0], [2, 1]]
    assert verify_image(path, 3, 2).format == "OPEN_EXR"
    with pytest.raises(ImageError, match="rendered 3x2, not 6x5"):
        _cut_out_tile(cut_event(path, (2, 1, 6, 5), (3, 2)))  # not the border asked for


def test_a_png_tile_is_cut_out_as_before(tmp_path: Path) -> None:
    path = tmp_path / "frame_0007.png"
    image = Image.new("RGBA", (6, 5), (0, 0, 0, 255))
    image.putpixel((2, 1), (255, 0, 0, 255))
    image.save(path)
    _cut_out_tile(cut_event(path, (2, 1, 6, 5), (3, 2)))
    with Image.open(path) as tile:
        assert tile.size == (3, 2) and tile.getpixel((0, 0)) == (255, 0, 0, 255)


# Canceling: the merge asks before each tile it downloads or pastes, and before it writes.
def merge_work(
    tmp_path: Path, cancel: threading.Event, cancel_after: int | None = None
) -> tuple[MergeWork, list[str], list[str]]:
    """A merge of the PNG `tiles`, served from memory and checking `cancel`, which the
    fetch sets after `cancel_after` downloads; the work, the tiles fetched, the lines
    logged."""
    (tmp_path / "made").mkdir()
    served: dict[str, bytes] = {}
    tile_files = []
    for (row, column), made in tiles(tmp_path / "made").items():
        data = made.read_bytes()
        path = f"tiles/0007/r{row}c{column}.png"
        served[path] = data
        sha = hashlib.sha256(data).hexdigest()
        tile_files.append(
            TileFile(
                path=path, sha256=sha, size=len(data), row=row, column=column, rows=2, columns=2
            )
        )
    fetched: list[str] = []
    lines: list[str] = []

    def fetch(tile: TileFile, dest: Path) -> None:
        fetched.append(tile.path)
        dest.write_bytes(served[tile.path])
        if len(fetched) == cancel_after:
            cancel.set()  # as the reporter does when the manager says keep_going: false

    cache = BlobCache(tmp_path / "cache")
    work = MergeWork(tile_files, tmp_path / "work", cache, fetch, cancel.is_set, lines.append)
    return work, fetched, lines


def test_a_merge_fetches_through_the_cache_and_says_what_it_does(tmp_path: Path) -> None:
    work, fetched, lines = merge_work(tmp_path, threading.Event())
    out = tmp_path / "work" / "frame.png"
    assert merge(work, out) == (5, 3)
    assert len(fetched) == 4
    assert lines == [
        "fetching 4 tiles",
        f"tiles ready: 4 downloaded ({sum(t.size for t in work.tiles)} bytes), 0 from the cache",
        "pasting 4 tiles into a 5x3 frame",
    ]


def test_a_merge_canceled_while_fetching_stops_before_the_next_tile(tmp_path: Path) -> None:
    work, fetched, lines = merge_work(tmp_path, threading.Event(), cancel_after=1)
    out = tmp_path / "work" / "frame.png"
    with pytest.raises(MergeCanceled):
        merge(work, out)
    assert len(fetched) == 1, "no tile is downloaded after the cancel"
    assert lines == ["fetching 4 tiles"]
    assert not out.exists()
    assert not issubclass(MergeCanceled, MergeError), "a canceled merge is not a failed one"


@pytest.mark.parametrize("kind", ["png", "exr"])
def test_a_merge_canceled_while_pasting_writes_no_frame(tmp_path: Path, kind: str) -> None:
    made = tiles(tmp_path) if kind == "png" else exr_tiles(tmp_path)
    asked: list[int] = []

    def canceled() -> bool:
        asked.append(1)
        return len(asked) > 2  # asked before each tile: two are pasted, then it stops

    out = tmp_path / f"frame.{kind}"
    with pytest.raises(MergeCanceled):
        merge_tiles(made, (2, 2), out, canceled)
    assert len(asked) == 3
    assert not out.exists()


def tile_file(path: str, row: int = 0, column: int = 0) -> TileFile:
    return TileFile(path=path, sha256="0" * 64, size=1, row=row, column=column, rows=2, columns=2)


def test_the_frame_is_merged_in_the_tiles_format_and_mixed_formats_are_refused(
    tmp_path: Path,
) -> None:
    """A still keeping the .blend's format has PNG or EXR tiles, as its scene writes: the
    tiles, not the job, name the frame's format, and tiles in both are no frame (the
    manager refuses them; the merge again, before fetching any)."""
    exr = [tile_file("tiles/0007/r0c0.exr"), tile_file("tiles/0007/r0c1.EXR", column=1)]
    assert merged_suffix(exr) == ".exr"
    assert merged_suffix([tile_file("tiles/0007/r0c0.png")]) == ".png"
    mixed = [tile_file("tiles/0007/r0c0.png"), tile_file("tiles/0007/r0c1.exr", column=1)]
    with pytest.raises(MergeError, match=r"different formats \(\.exr, \.png\)"):
        merged_suffix(mixed)
    with pytest.raises(MergeError, match=r"not \.tif"):
        merged_suffix([tile_file("tiles/0007/r0c0.tif")])
    with pytest.raises(MergeError, match="no tiles"):
        merged_suffix([])

    fetched: list[str] = []
    work = MergeWork(
        mixed, tmp_path / "work", BlobCache(tmp_path / "cache"), lambda t, _: fetched.append(t.path)
    )
    with pytest.raises(MergeError, match="different formats"):
        merge(work, tmp_path / "work" / "frame.png")
    assert fetched == [], "refused before a tile is downloaded"
    one_format = [tile_file("tiles/0007/r0c0.exr")]
    work = MergeWork(one_format, tmp_path / "w2", BlobCache(tmp_path / "c2"), lambda t, _: None)
    with pytest.raises(MergeError, match=r"the tiles are \.exr files, but the frame is a \.png"):
        merge(work, tmp_path / "w2" / "frame.png")


def test_a_png_and_an_exr_tile_make_no_frame(tmp_path: Path) -> None:
    """Tiles of both formats handed to `merge_tiles` directly: refused, whichever the
    frame is, and nothing written."""
    (tmp_path / "exr").mkdir()
    mixed = {**tiles(tmp_path), (1, 1): exr_tiles(tmp_path / "exr")[(1, 1)]}
    for out in (tmp_path / "frame.png", tmp_path / "frame.exr"):
        with pytest.raises(MergeError, match=r"but the frame is a \.(png|exr)"):
            merge_tiles(mixed, (2, 2), out)
        assert not out.exists()


def test_two_tiles_for_one_place_make_no_frame(tmp_path: Path) -> None:
    """Tiles of two frames handed to one merge (a manager bug) would paste one over the
    other without a word: the merge refuses them before fetching any."""
    twice = [
        tile_file("tiles/0007/r0c0.png"),
        tile_file("tiles/0007/r0c1.png", column=1),
        tile_file("tiles/0008/r0c0.png"),
    ]
    fetched: list[str] = []
    work = MergeWork(
        twice, tmp_path / "work", BlobCache(tmp_path / "cache"), lambda t, _: fetched.append(t.path)
    )
    with pytest.raises(MergeError, match=r"two tiles for row 0, column 0: tiles/0007/r0c0\.png"):
        merge(work, tmp_path / "work" / "frame.png")
    assert fetched == [], "refused before a tile is downloaded"
