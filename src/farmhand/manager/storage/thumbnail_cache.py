"""The thumbnail cache's layout, and what removes its files (the one home for both).

`<data-dir>/thumbnails/ab/<sha256>-<VERSION>-<size>.jpg` is a preview of the blob
`<sha256>` at most `size` pixels a side (`web/thumbnails.py` makes them), and
`thumbnails/placeholder-<VERSION>-<label>.jpg` the tile of a frame that cannot be shown.
Files are written under a temporary name (`.tmp-…`) and renamed into place.

The cache cannot grow without bound: a requested size is served as the next of a few
fixed `SIZES`, so a frame has at most one file per size; a blob's thumbnails go when its
file goes (`gc.remove_blob_files`); and garbage collection sweeps whatever is left:
thumbnails of blobs without a row, names the manager no longer makes (another recipe
version, a size outside `SIZES`) and abandoned temporary files. Only files older than the
grace period are swept, so a thumbnail being written, or made for a blob recorded after
the sweep read the rows, is never taken from under a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

VERSION = "v2"
"""Part of the cache file name: bump it when the thumbnail recipe changes."""

SIZES = (64, 128, 256, 512, 1024, 1600, 2048)
"""The sizes thumbnails are made at. 256 is the job page's grid (the default) and 1600
the large view of an EXR frame (`static/app.js`): both are served exactly."""

DEFAULT_SIZE = 256
MIN_SIZE = 16
MAX_SIZE = SIZES[-1]

_THUMBNAIL = re.compile(r"(?P<sha>[0-9a-f]{64})-(?P<version>v\d+)-(?P<size>\d+)\.jpg")
_PLACEHOLDER = re.compile(r"placeholder-(?P<version>v\d+)-.+\.jpg")
TMP_PREFIX = ".tmp-"


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "thumbnails"


def served_size(requested: int) -> int:
    """The size a request for `requested` px is served at: the smallest of `SIZES` at
    least as large (the browser scales it down), the largest beyond them."""
    return next((size for size in SIZES if size >= requested), MAX_SIZE)


def thumbnail_path(cache: Path, sha256: str, size: int) -> Path:
    return cache / sha256[:2] / f"{sha256}-{VERSION}-{size}.jpg"


def placeholder_path(cache: Path, label: str) -> Path:
    return cache / f"placeholder-{VERSION}-{label}.jpg"


def remove_thumbnails(cache: Path, hashes: Collection[str]) -> int:
    """Remove the cached thumbnails of these blobs; files removed. For blobs whose files
    were just removed: a thumbnail of bytes the manager no longer has must not outlive
    them. Only the names the manager makes now are tried (a few unlinks per blob, however
    large the cache); files of another recipe or size are `sweep`'s."""
    removed = 0
    for sha in hashes:
        for size in SIZES:
            try:
                thumbnail_path(cache, sha, size).unlink()
            except FileNotFoundError:  # never asked for at this size
                continue
            removed += 1
    return removed


@dataclass(frozen=True)
class CacheSize:
    files: int
    bytes: int


def _entries(cache: Path) -> Iterator[tuple[Path, bool, os.stat_result]]:
    """(path, whether it is at the top level, stat) of every file in the cache: the top
    level and its prefix folders. Files vanishing while being listed are skipped."""
    try:
        top = list(os.scandir(cache))
    except OSError:  # no cache yet
        return
    for entry in top:
        try:
            if entry.is_dir(follow_symlinks=False):
                for inner in list(os.scandir(entry.path)):
                    try:
                        if inner.is_file(follow_symlinks=False):
                            yield Path(inner.path), False, inner.stat(follow_symlinks=False)
                    except OSError:
                        continue
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path), True, entry.stat(follow_symlinks=False)
        except OSError:
            continue


def cache_size(cache: Path) -> CacheSize:
    """Files and bytes in the cache (the storage report's line for it)."""
    files = total = 0
    for _path, _top, stat in _entries(cache):
        files += 1
        total += stat.st_size
    return CacheSize(files, total)


def _sweepable(path: Path, top_level: bool, known: Collection[str]) -> bool:
    name = path.name
    if name.startswith(TMP_PREFIX):
        return True  # a write that never finished (the age check spares one in progress)
    if top_level:
        placeholder = _PLACEHOLDER.fullmatch(name)
        return placeholder is not None and placeholder["version"] != VERSION
    match = _THUMBNAIL.fullmatch(name)
    return match is not None and (
        match["sha"] not in known
        or match["version"] != VERSION
        or int(match["size"]) not in SIZES
        or path.parent.name != match["sha"][:2]
    )


def sweep(cache: Path, known: Collection[str], cutoff: datetime) -> CacheSize:
    """Remove what the cache should no longer hold, last written before `cutoff`:
    thumbnails of blobs not in `known` (the hashes with a row), names the manager does
    not make any more and abandoned temporary files. Files the manager does not name
    are left alone. Returns what was removed."""
    files = total = 0
    before = cutoff.timestamp()
    for path, top_level, stat in _entries(cache):
        if stat.st_mtime >= before or not _sweepable(path, top_level, known):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        files += 1
        total += stat.st_size
    return CacheSize(files, total)
