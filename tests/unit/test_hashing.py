"""The one file hasher the client, the worker's cache and the backup share."""

from __future__ import annotations

import hashlib
from pathlib import Path

from farmhand.shared.hashing import CHUNK_SIZE, iter_file, sha256_file


def test_a_file_over_several_chunks_hashes_as_a_whole_and_reports_each_chunk(
    tmp_path: Path,
) -> None:
    data = bytes(range(256)) * (CHUNK_SIZE * 2 // 256) + b"tail"
    path = tmp_path / "frame.exr"
    path.write_bytes(data)
    seen: list[int] = []
    assert sha256_file(path, seen.append) == hashlib.sha256(data).hexdigest()
    assert seen == [CHUNK_SIZE, CHUNK_SIZE, 4], "a progress bar gets every byte, chunk by chunk"
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_an_empty_file_hashes_without_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    seen: list[int] = []
    assert sha256_file(path, seen.append) == hashlib.sha256(b"").hexdigest()
    assert seen == []


def test_a_resumed_read_starts_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")
    sent: list[int] = []
    assert b"".join(iter_file(path, sent.append, start=4)) == b"456789"
    assert sent == [6]
