"""A `merge` task: a tiled still's tiles, placed edge to edge, as its one frame.

Each tile task rendered part of the frame, cropped to whole pixels (the driver's
`apply_tile`): column widths and row heights differ by at most a pixel, and every tile
of a column is as wide, every tile of a row as high. That is checked here rather than
assumed: a tile of the wrong size (a Blender that placed the border differently) fails
the merge with a readable reason instead of a frame with a seam or a gap. The tiles come
through the worker's blob cache, like the frames of a video.

The frame is written in the tiles' format, which is the job's (`tile_extension`): PNG
with Pillow, or OpenEXR with every channel, pixel type and the compression of the tiles
(`worker/exr.py`); tiles whose channels differ are refused like tiles of the wrong size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from farmhand.shared.images import ImageError, verify_image
from farmhand.shared.schemas import TaskFile, TileFile
from farmhand.worker.cache import BlobCache, CacheError, materialise

if TYPE_CHECKING:
    from farmhand.worker.exr import ExrImage


class MergeError(Exception):
    pass


@dataclass
class MergeWork:
    tiles: list[TileFile]
    work_dir: Path
    """Emptied, then holds `tiles/` and the merged frame."""
    cache: BlobCache
    fetch: Callable[[TileFile, Path], object]
    """Download one tile of the job to a path."""


def grid_of(tiles: list[TileFile]) -> tuple[int, int]:
    """(rows, columns) of the still the tiles belong to."""
    if not tiles:
        raise MergeError("the still has no tiles to merge")
    grids = {(tile.rows, tile.columns) for tile in tiles}
    if len(grids) != 1:
        raise MergeError(f"the tiles belong to different grids: {sorted(grids)}")
    return grids.pop()


def fetch_tiles(work: MergeWork) -> dict[tuple[int, int], Path]:
    """The tiles on disk, by (row, column)."""
    by_path = {tile.path: tile for tile in work.tiles}
    files = [TaskFile(path=t.path, sha256=t.sha256, size=t.size) for t in work.tiles]
    try:
        materialise(
            work.cache, work.work_dir, files, lambda f, dest: work.fetch(by_path[f.path], dest)
        )
    except (CacheError, OSError) as error:
        raise MergeError(f"cannot fetch the tiles: {error}") from error
    return {(t.row, t.column): work.work_dir / t.path for t in work.tiles}


def merge_tiles(
    tiles: dict[tuple[int, int], Path], grid: tuple[int, int], output: Path
) -> tuple[int, int]:
    """Write the frame the tiles of a `grid` (rows, columns) make to `output`, in the
    format its suffix names (.png or .exr, which every tile must be); its width and
    height."""
    rows, columns = grid
    missing = [(r, c) for r in range(rows) for c in range(columns) if (r, c) not in tiles]
    if missing:
        raise MergeError(f"tiles missing (row, column): {missing[:10]}")
    outside = sorted(p for p in tiles if not (0 <= p[0] < rows and 0 <= p[1] < columns))
    if outside:
        raise MergeError(f"tiles outside the {columns}x{rows} grid (row, column): {outside[:10]}")
    suffix = output.suffix.lower()
    if suffix not in (".png", ".exr"):
        raise MergeError(f"a tiled still is merged as .png or .exr, not {suffix}")
    for (row, column), path in sorted(tiles.items()):
        if path.suffix.lower() != suffix:
            raise MergeError(f"tile r{row}c{column} is {path.name}, but the frame is a {suffix}")
    # Sizes come from the headers; each tile is decoded once, when it is pasted (the
    # manager verified every tile when it was uploaded; a broken one still fails here).
    sizes = {place: _size(path) for place, path in tiles.items()}
    widths = [sizes[(0, c)][0] for c in range(columns)]
    heights = [sizes[(r, 0)][1] for r in range(rows)]
    for (row, column), size in sizes.items():
        if size != (widths[column], heights[row]):
            raise MergeError(
                f"tile r{row}c{column} is {size[0]}x{size[1]}, but its column is "
                f"{widths[column]} wide and its row {heights[row]} high"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".exr":
        _paste_exr(tiles, widths, heights, output)
    else:
        _paste(tiles, widths, heights).save(output, format="PNG")
    return sum(widths), sum(heights)


def _size(path: Path) -> tuple[int, int]:
    try:
        if path.suffix.lower() == ".exr":  # the header and offset table, not the pixels
            info = verify_image(path)
            return info.width, info.height
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, ValueError) as error:  # ImageError is a ValueError
        raise MergeError(f"tile {path.name} is not readable: {error}") from error


def _paste(
    tiles: dict[tuple[int, int], Path], widths: list[int], heights: list[int]
) -> Image.Image:
    """The frame, each tile pasted at the sum of the widths left of it and the heights
    above it, in the first tile's mode."""
    try:
        with Image.open(tiles[(0, 0)]) as first:
            mode = first.mode
        frame = Image.new(mode, (sum(widths), sum(heights)))
        for (row, column), path in tiles.items():
            with Image.open(path) as tile:
                place = (sum(widths[:column]), sum(heights[:row]))
                frame.paste(tile if tile.mode == mode else tile.convert(mode), place)
    except (OSError, ValueError) as error:  # Pillow: unreadable or truncated
        raise MergeError(f"a tile is not readable: {error}") from error
    return frame


def _paste_exr(
    tiles: dict[tuple[int, int], Path], widths: list[int], heights: list[int], output: Path
) -> None:
    """Write the EXR frame: each channel an array of the whole frame, of the first
    tile's pixel type, each tile's pixels copied in at its place; the first tile's header
    (compression, metadata). One tile is in memory at a time, besides the frame."""
    # Here, not at the top: every `farmhand` command imports the worker (through its
    # CLI), and numpy with OpenEXR would slow them all and weigh on the manager.
    import numpy as np

    from farmhand.worker.exr import ExrImage, read_exr, write_exr

    frame: ExrImage | None = None
    layout: dict[str, str] = {}
    for (row, column), path in sorted(tiles.items()):
        try:
            tile = read_exr(path)
        except ImageError as error:
            raise MergeError(f"a tile is not readable: {error}") from error
        if frame is None:
            layout = tile.layout
            shape = (sum(heights), sum(widths))
            frame = ExrImage(
                tile.header, {n: np.zeros(shape, p.dtype) for n, p in tile.channels.items()}
            )
        elif tile.layout != layout:
            raise MergeError(
                f"tile r{row}c{column} has the channels {_describe(tile.layout)}, "
                f"but r0c0 has {_describe(layout)}"
            )
        left, top = sum(widths[:column]), sum(heights[:row])
        for name, pixels in tile.channels.items():
            frame.channels[name][top : top + heights[row], left : left + widths[column]] = pixels
    assert frame is not None  # the grid has at least one tile: checked by the caller
    try:
        write_exr(frame, output)
    except ImageError as error:
        raise MergeError(f"cannot write the merged frame: {error}") from error


def _describe(layout: dict[str, str]) -> str:
    """`A (float16), B (float16), ...`: a channel set as a person reads it."""
    return ", ".join(f"{name} ({kind})" for name, kind in layout.items())


def merge(work: MergeWork, output: Path) -> tuple[int, int]:
    """Fetch the tiles and merge them into `output`; MergeError says why not."""
    return merge_tiles(fetch_tiles(work), grid_of(work.tiles), output)
