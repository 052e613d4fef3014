"""Resumable uploads: the bytes of a blob that have arrived so far, kept across interruptions.

A session is named by (owner, SHA-256, size), so a client that crashed and runs again
finds the same session and sends only the rest. Its bytes live in the blob store's
temporary area (`<root>/tmp/partial/<id>.part`, next to `<id>.json` saying whose it is
and what it must become), so a restarted manager still has them.

One chunk at a time per session, also between the processes of one manager
(`--processes`): a chunk holds an exclusive `flock` on the partial file while it writes,
and a chunk for a session another process is writing is refused (`UploadBusy`, a 409
the client answers by asking where to resume). Without it two chunks from one offset
would both be appended, and the hash check would then throw the whole upload away.

Every unfinished upload is its owner's until it is stored, aborted (`abandon`) or swept
(`sweep`): `open_uploads` lists them from the disk, so each process of a manager sees
the same, for the per-user limits on open uploads and the storage quota
(`manager/api/limits.py`) and for the admins' usage figures. Sessions are counted and
created under one lock (`creating`), so two requests at once cannot both take the last
place under a limit.

The SHA-256 is computed as the bytes arrive; the running digest is kept in memory for the
next chunk (a manager restart recomputes it once from the partial file, reading it in
chunks). When the last byte arrives the digest decides: equal to the announced hash, the
file is renamed into the store; different, it is deleted and nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from farmhand.manager.storage.blobs import CHUNK, BlobError, BlobStore, BlobTooLarge, StoredBlob


class OffsetMismatch(BlobError):
    """A chunk starts somewhere other than where the received bytes end."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"upload is at byte {expected}, not {got}: resume from {expected}")
        self.expected = expected


class UploadBusy(BlobError):
    """Another process of this manager is writing a chunk of the same session."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"another request is sending bytes of this upload (at byte {offset}); "
            "ask where to resume, then send the rest"
        )
        self.offset = offset


class ChunkTooLarge(BlobTooLarge):
    """A chunk that would take the upload past its announced size; it was not kept."""

    def __init__(self, size: int, offset: int) -> None:
        super().__init__(
            f"this chunk would take the upload past its announced {size} bytes; it was "
            f"refused, and the upload is still at byte {offset}: resume from there"
        )
        self.offset = offset


@dataclass(frozen=True)
class UploadSession:
    id: str
    owner_id: int
    sha256: str
    size: int


@dataclass(frozen=True)
class OpenUpload:
    """An unfinished upload as it stands on disk."""

    session: UploadSession
    received: int
    """Bytes that arrived and are held in the partial file."""
    last_active: float
    """When a byte last arrived (or the upload was opened), in seconds since the epoch."""


@dataclass
class _Digest:
    offset: int
    hasher: Any  # hashlib's sha256 object (its type is private)
    crc32: int
    """The same bytes' CRC-32, which the blob's row keeps for the job's zips (`zipplan`):
    taken here, it spares the first zip holding a big upload reading all of it again."""


class PartialUploads:
    """The resumable upload sessions of one blob store (one per manager process).

    One upload at a time per session: the lock also makes a status request wait until a
    cut-off chunk has been written, so the offset it answers is where to resume.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.dir = store.root / "tmp" / "partial"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._digests: dict[str, _Digest] = {}
        self._swept_at: float | None = None

    @staticmethod
    def session_id(owner_id: int, sha256: str, size: int) -> str:
        return hashlib.sha256(f"{owner_id}:{sha256}:{size}".encode()).hexdigest()[:32]

    def _data(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.part"

    def _meta(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.json"

    def lock(self, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault(upload_id, asyncio.Lock())

    def open_session(self, owner_id: int, sha256: str, size: int) -> UploadSession:
        """The session for this blob and owner: the existing one (resume) or a new one."""
        self.store.refuse_too_large(size)
        session = UploadSession(self.session_id(owner_id, sha256, size), owner_id, sha256, size)
        meta = self._meta(session.id)
        if not meta.exists():
            self._data(session.id).touch()
            staging = meta.with_suffix(".json.new")
            staging.write_text(json.dumps(asdict(session)))
            os.replace(staging, meta)
        return session

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Held (blocking: call it from a worker thread) while the uploads open are
        counted and a new one is created, by every process of the manager."""
        with (self.dir.parent / "partial.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def open_uploads(self, owner_id: int | None = None) -> list[OpenUpload]:
        """The unfinished uploads of `owner_id` (None: everyone's), oldest first."""
        found = []
        for meta in self.dir.glob("*.json"):
            try:
                session = UploadSession(**json.loads(meta.read_text()))
                if owner_id is not None and session.owner_id != owner_id:
                    continue
                opened = meta.stat().st_mtime
            except (OSError, ValueError, TypeError):
                continue  # finished or removed meanwhile, or not one of ours
            try:
                data = self._data(session.id).stat()
                received, last = data.st_size, max(opened, data.st_mtime)
            except FileNotFoundError:
                received, last = 0, opened
            found.append(OpenUpload(session, received, last))
        return sorted(found, key=lambda upload: (upload.last_active, upload.session.id))

    def get(self, upload_id: str, owner_id: int) -> UploadSession | None:
        """The session, if it exists and belongs to `owner_id`."""
        if not upload_id.isalnum():
            return None
        try:
            raw = json.loads(self._meta(upload_id).read_text())
            session = UploadSession(**raw)
        except (OSError, ValueError, TypeError):
            return None
        return session if session.owner_id == owner_id else None

    def offset(self, session: UploadSession) -> int:
        try:
            return self._data(session.id).stat().st_size
        except FileNotFoundError:
            return 0

    def abandon(self, session: UploadSession) -> None:
        """Discard a session at its owner's request; UploadBusy while another process
        writes to it (its chunk would otherwise end in a file that is gone)."""
        with self._writing(session):
            self.discard(session)

    def discard(self, session: UploadSession) -> None:
        self._data(session.id).unlink(missing_ok=True)
        self._meta(session.id).unlink(missing_ok=True)
        self._digests.pop(session.id, None)

    def _digest(self, session: UploadSession, offset: int) -> _Digest:
        """The running SHA-256 and CRC-32 of the first `offset` bytes (from memory, else
        from disk)."""
        known = self._digests.get(session.id)
        if known is not None and known.offset == offset:
            return known
        hasher, crc = hashlib.sha256(), 0
        with self._data(session.id).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
                crc = zlib.crc32(chunk, crc)
        return _Digest(offset, hasher, crc)

    @contextlib.contextmanager
    def _writing(self, session: UploadSession) -> Iterator[Any]:
        """The partial file, open for appending, locked against this manager's other
        processes (a lock is per open file, so within this process `lock()` is what
        queues requests; this one refuses rather than waits: the event loop must not
        block on another process's slow client)."""
        with self._data(session.id).open("ab") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadBusy(self.offset(session)) from None
            yield handle  # closing the file releases the lock

    async def append(
        self,
        session: UploadSession,
        start: int,
        chunks: AsyncIterator[bytes],
        on_bytes: Callable[[int], None] | None = None,
        length: int | None = None,
    ) -> StoredBlob | None:
        """Write a chunk that starts at byte `start`; the blob once the last byte is in.

        Call with `lock(session.id)` held. Bytes that arrived before the client went
        away stay written (the caller's exception propagates after they are flushed).
        Raises OffsetMismatch, UploadBusy (another process is writing this session),
        ChunkTooLarge (more than announced: the chunk is refused, before a byte is read
        if its `length` says so, and the session stays at `start`: a client's bug in one
        chunk must not cost the bytes that arrived before it) or BlobError (hash
        mismatch: session discarded, nothing stored).
        """
        with self._writing(session) as handle:
            offset = os.fstat(handle.fileno()).st_size  # now that no one else writes
            if start != offset:
                raise OffsetMismatch(offset, start)
            if length is not None and start + length > session.size:
                raise ChunkTooLarge(session.size, start)
            digest = self._digest(session, offset)
            hasher, crc = digest.hasher, digest.crc32
            before = _Digest(start, hasher.copy(), crc)
            try:
                try:
                    async for chunk in chunks:
                        if offset + len(chunk) > session.size:
                            raise ChunkTooLarge(session.size, start)
                        handle.write(chunk)
                        hasher.update(chunk)
                        crc = zlib.crc32(chunk, crc)
                        offset += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                finally:
                    handle.flush()
                    self._digests[session.id] = _Digest(offset, hasher, crc)
            except ChunkTooLarge:
                handle.truncate(start)
                handle.flush()
                self._digests[session.id] = before
                raise
            if offset < session.size:
                return None
            # Still locked: no other process may append to, or finish, this session.
            return self._finish(session, hasher.hexdigest(), crc)

    def _finish(self, session: UploadSession, actual: str, crc32: int) -> StoredBlob:
        data = self._data(session.id)
        if actual != session.sha256:
            self.discard(session)
            raise BlobError(
                f"content hash is {actual}, not the announced {session.sha256}; nothing stored"
            )
        with data.open("rb+") as handle:
            os.fsync(handle.fileno())
        stored = self.store.place(data, actual, session.size, crc32)
        self.discard(session)
        return stored

    def sweep(self, now: float, max_age: float, every: float) -> int:
        """Remove uploads nobody has added a byte to for `max_age` seconds; how many.

        Runs at most once per `every` seconds (it is called as uploads start, so an
        abandoned upload's bytes do not stay in the store for ever).
        """
        if self._swept_at is not None and now - self._swept_at < every:
            return 0
        self._swept_at = now
        removed = 0
        for meta in self.dir.glob("*.json"):
            upload_id = meta.stem
            if upload_id in self._locks and self._locks[upload_id].locked():
                continue
            data = self._data(upload_id)
            try:
                last = max(meta.stat().st_mtime, data.stat().st_mtime if data.exists() else 0)
            except FileNotFoundError:
                continue
            if now - last > max_age:
                data.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                self._digests.pop(upload_id, None)
                removed += 1
        return removed

    def forget_lock(self, upload_id: str) -> None:
        with contextlib.suppress(KeyError):
            lock = self._locks[upload_id]
            if not lock.locked():
                del self._locks[upload_id]
