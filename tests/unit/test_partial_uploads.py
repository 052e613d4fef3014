"""The blob store's resumable uploads: bytes kept across interruptions and restarts,
verified against the announced hash before anything is stored."""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import os
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from farmhand.client.packing import default_project, settle_blend
from farmhand.manager.storage.blobs import BlobError, BlobStore, BlobTooLarge, StoredBlob
from farmhand.manager.storage.partial_uploads import (
    ChunkTooLarge,
    OffsetMismatch,
    UploadBusy,
    UploadSession,
)

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


async def _chunks(data: bytes, size: int = 64_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def append(store: BlobStore, session: UploadSession, start: int, data: bytes) -> StoredBlob | None:
    return asyncio.run(store.partials.append(session, start, _chunks(data)))


def test_an_upload_in_pieces_is_stored_once_the_last_byte_arrives(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    session = store.partials.open_session(1, SHA, len(DATA))
    assert append(store, session, 0, DATA[:100_000]) is None
    assert store.partials.offset(session) == 100_000
    assert not store.has(SHA)
    stored = append(store, session, 100_000, DATA[100_000:])
    assert stored is not None and stored.sha256 == SHA
    # Its CRC-32 is the job zips': known, the first zip holding it does not read it all.
    assert stored.crc32 == zlib.crc32(DATA)
    assert store.path_for(SHA).read_bytes() == DATA
    assert list(store.partials.dir.iterdir()) == [], "the partial files are gone"


def test_a_restarted_manager_resumes_from_the_bytes_on_disk(tmp_path: Path) -> None:
    first = BlobStore(tmp_path)
    session = first.partials.open_session(7, SHA, len(DATA))
    append(first, session, 0, DATA[:123_456])
    restarted = BlobStore(tmp_path)  # no running digest in memory: rebuilt from the file
    again = restarted.partials.open_session(7, SHA, len(DATA))
    assert again == session
    assert restarted.partials.offset(again) == 123_456
    stored = append(restarted, again, 123_456, DATA[123_456:])
    assert stored is not None and stored.crc32 == zlib.crc32(DATA)
    assert restarted.path_for(SHA).read_bytes() == DATA


def test_a_chunk_at_the_wrong_offset_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    session = store.partials.open_session(1, SHA, len(DATA))
    append(store, session, 0, DATA[:1000])
    with pytest.raises(OffsetMismatch) as error:
        append(store, session, 5000, DATA[5000:])
    assert error.value.expected == 1000
    assert store.partials.offset(session) == 1000


def test_a_chunk_waits_its_turn_behind_another_process_writing_the_session(
    tmp_path: Path,
) -> None:
    """A lock on the partial file is per open file: this second opening stands for another
    manager process writing a chunk of the same session."""
    store = BlobStore(tmp_path)
    session = store.partials.open_session(1, SHA, len(DATA))
    append(store, session, 0, DATA[:1000])
    with store.partials._data(session.id).open("ab") as other_process:
        fcntl.flock(other_process.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UploadBusy) as busy:
            append(store, session, 1000, DATA[1000:])
        assert busy.value.offset == 1000
        with pytest.raises(UploadBusy):
            store.partials.abandon(session)
        assert store.partials.offset(session) == 1000
    assert append(store, session, 1000, DATA[1000:]) is not None
    assert store.path_for(SHA).read_bytes() == DATA


def test_a_hash_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    session = store.partials.open_session(1, SHA, len(DATA))
    forged = bytes(reversed(DATA))
    with pytest.raises(BlobError, match="nothing stored"):
        append(store, session, 0, forged)
    assert not store.has(SHA)
    assert not any((tmp_path / "sha256").rglob("*.*"))
    assert list(store.partials.dir.iterdir()) == []


def test_a_chunk_past_the_announced_size_is_refused_and_the_rest_kept(tmp_path: Path) -> None:
    """The chunk goes, not the session: the bytes before it are kept, and the upload
    finishes once the right bytes are sent from where it stood."""
    store = BlobStore(tmp_path)
    data = DATA[:200_000]
    session = store.partials.open_session(1, hashlib.sha256(data).hexdigest(), len(data))
    append(store, session, 0, data[:100_000])
    with pytest.raises(ChunkTooLarge) as refused:
        append(store, session, 100_000, DATA[100_000:])  # 100 kB too many
    assert refused.value.offset == 100_000
    assert store.partials.offset(session) == 100_000
    with pytest.raises(ChunkTooLarge):  # refused from its length, before a byte is read
        asyncio.run(
            store.partials.append(session, 100_000, _chunks(DATA[100_000:]), length=200_000)
        )
    assert store.partials.offset(session) == 100_000
    stored = append(store, session, 100_000, data[100_000:])
    assert stored is not None and store.path_for(stored.sha256).read_bytes() == data


def test_sessions_belong_to_their_owner(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    session = store.partials.open_session(1, SHA, len(DATA))
    assert store.partials.get(session.id, 1) == session
    assert store.partials.get(session.id, 2) is None
    assert store.partials.get("../../etc", 1) is None


def test_an_upload_larger_than_the_store_allows_is_refused_up_front(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_blob_bytes=100)
    with pytest.raises(BlobTooLarge):
        store.partials.open_session(1, SHA, 101)


def test_rewritten_blend_files_are_byte_identical_every_time(tmp_path: Path) -> None:
    """BAT's gzip header holds a time and a temp name; the packed copy must not."""
    copies = []
    for name in ("bat-abc-scene.blend", "bat-xyz-scene.blend"):
        source = tmp_path / name
        with gzip.GzipFile(source, "wb", mtime=hash(name) & 0xFFFF) as handle:
            handle.write(b"BLENDER-v500" + DATA)
        dest = tmp_path / f"out-{name}"
        settle_blend(source, dest)
        copies.append(dest.read_bytes())
        assert gzip.decompress(copies[-1]) == b"BLENDER-v500" + DATA
    assert copies[0] == copies[1]


def test_the_default_project_holds_the_scene_and_all_it_uses() -> None:
    scene = Path("/studio/proj/shots/a.blend")
    uses = [Path("/studio/proj/tex/wood.png"), Path("/studio/proj/lib/set.blend")]
    assert default_project(scene, uses) == Path("/studio/proj")
    assert default_project(scene, []) == Path("/studio/proj/shots")


def test_abandoned_uploads_are_swept_after_the_retention_time(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    old = store.partials.open_session(1, SHA, len(DATA))
    append(store, old, 0, DATA[:1000])
    other = hashlib.sha256(b"other").hexdigest()
    fresh = store.partials.open_session(1, other, 5)
    week_ago = time.time() - 8 * 86400
    for path in store.partials.dir.glob(f"{old.id}.*"):
        os.utime(path, (week_ago, week_ago))
    now = time.time()
    assert store.partials.sweep(now, max_age=7 * 86400, every=3600) == 1
    assert store.partials.get(old.id, 1) is None
    assert store.partials.get(fresh.id, 1) == fresh
    for path in store.partials.dir.glob(f"{fresh.id}.*"):
        os.utime(path, (week_ago, week_ago))
    assert store.partials.sweep(now + 60, max_age=7 * 86400, every=3600) == 0, "not due yet"
    assert store.partials.sweep(now + 3601, max_age=7 * 86400, every=3600) == 1
