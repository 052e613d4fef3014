"""The layout of a content-addressed store, shared by the manager's blob store and the
worker's cache: `<root>/sha256/ab/cdef…` (the first two hex digits make the folder, so
no folder holds more than a 256th of the files)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def blob_path(root: Path, sha256: str) -> Path:
    """Where the blob `sha256` lives under `root` (the caller checks it is a hash)."""
    return root / "sha256" / sha256[:2] / sha256[2:]


def iter_blobs(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(sha256, path, stat) of every file under `<root>/sha256/`; files vanishing while
    being listed (another process removing them) are skipped."""
    base = root / "sha256"
    if not base.is_dir():
        return
    for prefix in base.iterdir():
        if not prefix.is_dir():
            continue
        for blob in prefix.iterdir():
            try:
                stat = blob.stat()
            except OSError:
                continue
            yield prefix.name + blob.name, blob, stat
