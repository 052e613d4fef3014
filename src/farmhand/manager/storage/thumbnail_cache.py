"""The thumbnail cache's layout: its file names and the sizes it holds.

`<data-dir>/thumbnails/ab/<sha256>-<VERSION>-<size>.jpg` is a preview of the blob
`<sha256>` at most `size` pixels a side (`web/thumbnails.py` makes them), and
`thumbnails/placeholder-<VERSION>-<label>.jpg` the tile of a frame that cannot be shown.
Files are written under a temporary name (`.tmp-…`) and renamed into place.

A requested size is served as the next of a few fixed `SIZES`, so a frame has at most
one file per size, not one per pixel count anyone asks for.
"""

from __future__ import annotations

from pathlib import Path

VERSION = "v2"
"""Part of the cache file name: bump it when the thumbnail recipe changes."""

SIZES = (64, 128, 256, 512, 1024, 1600, 2048)
"""The sizes thumbnails are made at. 256 is the job page's grid (the default) and 1600
the large view of an EXR frame (`static/app.js`): both are served exactly."""

DEFAULT_SIZE = 256
MIN_SIZE = 16
MAX_SIZE = SIZES[-1]

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
