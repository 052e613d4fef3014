"""Streaming SHA-256 and chunked reads: files may be many GB, memory use stays constant.

Shared because the client (submitting), the worker (its blob cache) and the manager (a
backup's check of the store) all hash files the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK_SIZE = 1024 * 1024
"""1 MiB: big enough for throughput, small enough for smooth progress bars."""


def sha256_file(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """The lower-case hex SHA-256 of a file, read in chunks; `on_chunk(size)` after each,
    for a progress bar over big files."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest.hexdigest()


def iter_file(
    path: Path, on_chunk: Callable[[int], None] | None = None, start: int = 0
) -> Iterator[bytes]:
    """Yield a file's bytes from `start` chunk by chunk, reporting each chunk's size as sent."""
    with path.open("rb") as handle:
        handle.seek(start)
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk
            if on_chunk is not None:
                on_chunk(len(chunk))
