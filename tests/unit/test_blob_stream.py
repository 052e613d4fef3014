"""A request body streamed into the blob store: stored whole or not at all, and its
file work done off the event loop (a file creation or write that waits for the disk
would hold up every other request of the manager)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from farmhand.manager.storage import blobs
from farmhand.manager.storage.blobs import BlobStore, BlobTooLarge


async def _chunks(
    data: bytes, size: int = 64_000, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        if fail_after is not None and start >= fail_after:
            raise ConnectionResetError("the client went away")
        yield data[start : start + size]


def _left_in_tmp(store: BlobStore) -> list[str]:
    tmp = store.root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.mark.parametrize("size", [1_000, 3 * blobs.CHUNK + 17])
def test_a_streamed_body_is_stored_under_its_hash(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    store = BlobStore(tmp_path)
    stored = asyncio.run(store.ingest_stream(_chunks(data)))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == size
    assert store.path_for(stored.sha256).read_bytes() == data
    assert _left_in_tmp(store) == []


def test_the_staging_file_is_made_and_written_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_in: list[int] = []
    written_in: list[int] = []
    original_init, original_write = blobs._Staging.__init__, blobs._Staging.write

    def init(self: blobs._Staging, root: Path, limit: int) -> None:
        made_in.append(threading.get_ident())
        original_init(self, root, limit)

    def write(self: blobs._Staging, chunk: bytes) -> None:
        written_in.append(threading.get_ident())
        original_write(self, chunk)

    monkeypatch.setattr(blobs._Staging, "__init__", init)
    monkeypatch.setattr(blobs._Staging, "write", write)

    async def ingest(data: bytes) -> int:
        await BlobStore(tmp_path).ingest_stream(_chunks(data))
        return threading.get_ident()

    for data in (b"a small frame", os.urandom(2 * blobs.CHUNK + 5)):
        made_in.clear()
        written_in.clear()
        loop_thread = asyncio.run(ingest(data))
        assert made_in and loop_thread not in made_in
        assert written_in and loop_thread not in written_in


def test_a_body_cut_off_before_its_first_write_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        asyncio.run(store.ingest_stream(_chunks(os.urandom(500_000), fail_after=200_000)))
    assert _left_in_tmp(store) == []
    assert not [p for p in (tmp_path / "sha256").rglob("*") if p.is_file()]


def test_a_body_cut_off_after_some_writes_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        asyncio.run(
            store.ingest_stream(_chunks(os.urandom(3 * blobs.CHUNK), fail_after=2 * blobs.CHUNK))
        )
    assert _left_in_tmp(store) == []


def test_a_body_over_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_blob_bytes=blobs.CHUNK + 10)
    with pytest.raises(BlobTooLarge):
        asyncio.run(store.ingest_stream(_chunks(os.urandom(3 * blobs.CHUNK))))
    assert _left_in_tmp(store) == []


def test_a_stored_blob_says_whether_the_store_held_it_before(tmp_path: Path) -> None:
    """A refused project zip removes only the blobs it added: the store's answer is
    what tells them apart, so a file another job already uses must say "not new"."""
    store = BlobStore(tmp_path)
    data = os.urandom(5_000)
    first = asyncio.run(store.ingest_stream(_chunks(data)))
    again = asyncio.run(store.ingest_stream(_chunks(data)))
    other = asyncio.run(store.ingest_stream(_chunks(data + b"!")))
    assert (first.new, again.new, other.new) == (True, False, True)
    assert again.path == first.path and again.path.read_bytes() == data
