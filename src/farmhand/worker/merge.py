"""A `merge` task: a tiled still's tiles, placed edge to edge, as its one frame.

Each tile task rendered part of the frame, cropped to whole pixels (the driver's
`apply_tile`): column widths and row heights differ by at most a pixel, and every tile
of a column is as wide, every tile of a row as high. That is checked here rather than
assumed: a tile of the wrong size (a Blender that placed the border differently) fails
the merge with a readable reason instead of a frame with a seam or a gap. The tiles come
through the worker's blob cache, like the frames of a video.

The frame is written in the tiles' format (`merged_suffix`, from the tiles' paths): PNG
with Pillow, or OpenEXR with every part (Blender 5 writes a multilayer EXR with passes
as a part a pass), channel, pixel type and the compression of the tiles
(`worker/exr.py`), unless that compression is lossy (DWAA, B44, ...): the frame is then
written with ZIP, not compressed a second time, and the log says so. Which formats a
job's tiles may be is `tile_extensions`; for a job keeping the .blend's format that is
either, as the scene writes, so the tiles, not the job, say which. Tiles in more than one
format, or whose parts or channels differ, are refused like tiles of the wrong size.

A merge of a large still (dozens of big EXR tiles) takes a while, so it asks
`MergeWork.canceled` before each tile it downloads or pastes and before it writes the
frame: a job canceled or paused meanwhile, or a worker stopping, ends it there with
`MergeCanceled` (not a `MergeError`: nothing is wrong with the tiles, and the task must
not be failed for it) and no frame written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from PIL import Image

from farmhand.shared.images import ImageError, verify_image
from farmhand.shared.schemas import TILE_SUFFIXES, TaskFile, TileFile
from farmhand.worker.cache import BlobCache, CacheError, materialise

if TYPE_CHECKING:
    from farmhand.worker.exr import ExrImage


class MergeError(Exception):
    """The tiles do not make a frame (missing, misfit, unreadable): the task fails."""


class MergeCanceled(Exception):
    """`MergeWork.canceled` said stop: the merge ended early, no frame was written."""


def _never() -> bool:
    return False


def _ignore(_line: str) -> None:
    return None


@dataclass
class MergeWork:
    """One merge task's inputs; `canceled` and `on_log` may be called often, from the
    merging thread, and must return quickly."""

    tiles: list[TileFile]
    work_dir: Path
    """Emptied, then holds `tiles/` and the merged frame."""
    cache: BlobCache
    fetch: Callable[[TileFile, Path], object]
    """Download one tile of the job to a path."""
    canceled: Callable[[], bool] = _never
    """True once the merge should stop (the task was taken away, the worker is stopping);
    asked between tiles, so a cancel waits for one tile at most."""
    on_log: Callable[[str], None] = _ignore
    """A line for the task's log: what the merge is doing, while it does it."""


def grid_of(tiles: list[TileFile]) -> tuple[int, int]:
    """(rows, columns) of the still the tiles belong to."""
    if not tiles:
        raise MergeError("the still has no tiles to merge")
    grids = {(tile.rows, tile.columns) for tile in tiles}
    if len(grids) != 1:
        raise MergeError(f"the tiles belong to different grids: {sorted(grids)}")
    # Two tiles for one place (tiles of two frames of a range, say) would leave one of
    # them silently pasted over by the other: no frame is better than a wrong one.
    places: dict[tuple[int, int], str] = {}
    for tile in tiles:
        other = places.setdefault((tile.row, tile.column), tile.path)
        if other != tile.path:
            raise MergeError(
                f"two tiles for row {tile.row}, column {tile.column}: {other} and {tile.path}"
            )
    return grids.pop()


def merged_suffix(tiles: list[TileFile]) -> str:
    """The format the frame is merged in: the tiles' (`.png` or `.exr`), which must all be
    in one. The manager records only tiles of one format for a still; this refuses mixed
    ones anyway, before any is fetched, rather than fail on the first misfit tile after
    downloading the rest (or paste a PNG into an EXR)."""
    suffixes = {PurePosixPath(tile.path).suffix.lower() for tile in tiles}
    if not suffixes:
        raise MergeError("the still has no tiles to merge")
    if len(suffixes) > 1:
        raise MergeError(
            f"the tiles are in different formats ({', '.join(sorted(suffixes))}): "
            f"one still's tiles must all be PNG or all OpenEXR to be merged"
        )
    [suffix] = suffixes
    if suffix not in TILE_SUFFIXES:
        raise MergeError(f"a tiled still is merged as .png or .exr, not {suffix or 'no suffix'}")
    return suffix


def _check(canceled: Callable[[], bool]) -> None:
    if canceled():
        raise MergeCanceled("the merge was canceled")


def fetch_tiles(work: MergeWork) -> dict[tuple[int, int], Path]:
    """The tiles on disk, by (row, column); MergeCanceled before the next download once
    `work.canceled` says so."""
    by_path = {tile.path: tile for tile in work.tiles}
    files = [TaskFile(path=t.path, sha256=t.sha256, size=t.size) for t in work.tiles]

    def download(file: TaskFile, dest: Path) -> None:
        _check(work.canceled)
        work.fetch(by_path[file.path], dest)

    _check(work.canceled)
    work.on_log(f"fetching {len(files)} tiles")
    try:
        report = materialise(work.cache, work.work_dir, files, download)
    except (CacheError, OSError) as error:
        raise MergeError(f"cannot fetch the tiles: {error}") from error
    work.on_log(
        f"tiles ready: {report.downloaded_files} downloaded ({report.downloaded_bytes} bytes), "
        f"{report.cached_files} from the cache"
    )
    return {(t.row, t.column): work.work_dir / t.path for t in work.tiles}


def merge_tiles(
    tiles: dict[tuple[int, int], Path],
    grid: tuple[int, int],
    output: Path,
    canceled: Callable[[], bool] = _never,
    on_log: Callable[[str], None] = _ignore,
) -> tuple[int, int]:
    """Write the frame the tiles of a `grid` (rows, columns) make to `output`, in the
    format its suffix names (.png or .exr, which every tile must be); its width and
    height. MergeCanceled, with `output` not written, once `canceled` says so (asked
    before each tile is pasted and before the frame is written)."""
    rows, columns = grid
    missing = [(r, c) for r in range(rows) for c in range(columns) if (r, c) not in tiles]
    if missing:
        raise MergeError(f"tiles missing (row, column): {missing[:10]}")
    outside = sorted(p for p in tiles if not (0 <= p[0] < rows and 0 <= p[1] < columns))
    if outside:
        raise MergeError(f"tiles outside the {columns}x{rows} grid (row, column): {outside[:10]}")
    suffix = output.suffix.lower()
    if suffix not in TILE_SUFFIXES:
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
    on_log(f"pasting {len(tiles)} tiles into a {sum(widths)}x{sum(heights)} frame")
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".exr":
        _paste_exr(tiles, widths, heights, output, canceled, on_log)
    else:
        frame = _paste(tiles, widths, heights, canceled)
        _check(canceled)
        frame.save(output, format="PNG")
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
    tiles: dict[tuple[int, int], Path],
    widths: list[int],
    heights: list[int],
    canceled: Callable[[], bool],
) -> Image.Image:
    """The frame, each tile pasted at the sum of the widths left of it and the heights
    above it, in the first tile's mode."""
    try:
        with Image.open(tiles[(0, 0)]) as first:
            mode = first.mode
        frame = Image.new(mode, (sum(widths), sum(heights)))
        for (row, column), path in tiles.items():
            _check(canceled)
            with Image.open(path) as tile:
                place = (sum(widths[:column]), sum(heights[:row]))
                frame.paste(tile if tile.mode == mode else tile.convert(mode), place)
    except (OSError, ValueError) as error:  # Pillow: unreadable or truncated
        raise MergeError(f"a tile is not readable: {error}") from error
    return frame


def _paste_exr(
    tiles: dict[tuple[int, int], Path],
    widths: list[int],
    heights: list[int],
    output: Path,
    canceled: Callable[[], bool],
    on_log: Callable[[str], None],
) -> None:
    """Write the EXR frame: the first tile's parts (one, or a pass a part from Blender 5),
    each channel an array of the whole frame of the first tile's pixel type, each
    tile's pixels copied in at its place; each part's header from the first tile
    (compression, metadata), but a lossy codec's part in ZIP (`exr.write_exr`), which
    the log says. One tile is in memory at a time, besides the frame."""
    # Here, not at the top: every `farmhand` command imports the worker (through its
    # CLI), and numpy with OpenEXR would slow them all and weigh on the manager.
    import numpy as np

    from farmhand.worker.exr import (
        LOSSLESS_COMPRESSION,
        ExrImage,
        ExrPart,
        compression_name,
        read_exr,
        rendered_lossy,
        write_exr,
    )

    frame: ExrImage | None = None
    layout: list[tuple[str, dict[str, str]]] = []
    for (row, column), path in sorted(tiles.items()):
        _check(canceled)
        try:
            tile = read_exr(path)
        except ImageError as error:
            raise MergeError(f"a tile is not readable: {error}") from error
        if frame is None:
            layout = tile.layout
            shape = (sum(heights), sum(widths))
            frame = ExrImage(
                [
                    ExrPart(
                        part.name,
                        part.header,
                        {n: np.zeros(shape, p.dtype) for n, p in part.channels.items()},
                    )
                    for part in tile.parts
                ]
            )
        elif tile.layout != layout:
            raise MergeError(
                f"tile r{row}c{column} has the channels {_describe(tile.layout)}, "
                f"but r0c0 has {_describe(layout)}"
            )
        left, top = sum(widths[:column]), sum(heights[:row])
        for into, part in zip(frame.parts, tile.parts, strict=True):
            for name, pixels in part.channels.items():
                into.channels[name][top : top + heights[row], left : left + widths[column]] = pixels
    assert frame is not None  # the grid has at least one tile: checked by the caller
    lossy = rendered_lossy(frame)
    if lossy:
        codecs = " and ".join(lossy)
        on_log(
            f"Blender compressed the tiles with {codecs}, which loses detail: the frame is "
            f"written with {compression_name(LOSSLESS_COMPRESSION)}, losslessly, so the merge "
            f"adds no loss, and differs from a whole render only within {codecs}'s own"
        )
    _check(canceled)
    try:
        write_exr(frame, output)
    except ImageError as error:
        raise MergeError(f"cannot write the merged frame: {error}") from error


def _describe(layout: list[tuple[str, dict[str, str]]]) -> str:
    """`A (float16), B (float16), ...`, each part's named first when there are several
    (`part ViewLayer.Depth: ViewLayer.Depth.Z (float32); ...`): as a person reads it."""
    described = [
        ", ".join(f"{name} ({kind})" for name, kind in channels.items())
        for _part, channels in layout
    ]
    if len(layout) == 1:
        return described[0]
    return "; ".join(
        f"part {part or '(unnamed)'}: {channels}"
        for (part, _), channels in zip(layout, described, strict=True)
    )


def merge(work: MergeWork, output: Path) -> tuple[int, int]:
    """Fetch the tiles and merge them into `output`, whose suffix must be the tiles' format
    (`merged_suffix`); MergeError says why not, MergeCanceled that `work.canceled` stopped
    it. The grid and the format are checked before any tile is fetched."""
    grid = grid_of(work.tiles)
    suffix = merged_suffix(work.tiles)
    if output.suffix.lower() != suffix:
        raise MergeError(f"the tiles are {suffix} files, but the frame is a {output.suffix}")
    return merge_tiles(fetch_tiles(work), grid, output, work.canceled, work.on_log)
