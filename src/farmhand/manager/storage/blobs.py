"""The content-addressed blob store: `<root>/sha256/ab/cdef…`.

Bytes are written to a temporary file in the store, hashed while they stream in, and
renamed into place only when the hash is known (and, for uploads that name one, checked).
Their CRC-32 is taken on the way too (`StoredBlob.crc32`, recorded in the blob's row): a
job's zip declares each file's CRC-32 before its bytes (`archive.py`), and knowing it
from the upload spares reading every file of a job once more before its zip can begin.
A rename within one filesystem is atomic, so a reader never sees half a blob and two
writers of the same content both end with the same, complete file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from farmhand.shared.blobpaths import blob_path

if TYPE_CHECKING:
    from farmhand.manager.storage.partial_uploads import PartialUploads

CHUNK = 1024 * 1024


class Readable(Protocol):
    """Whatever bytes are read from: a file, a zip's entry, an upload's spooled body."""

    def read(self, size: int = -1, /) -> bytes: ...


class BlobError(ValueError):
    """The bytes do not match what was announced (hash or size)."""


class BlobTooLarge(BlobError):
    pass


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    path: Path
    new: bool = True
    """False if the store held this content before: whoever must undo only what it
    added (a project zip refused after unpacking) keeps the blobs that were there."""
    crc32: int | None = None
    """The bytes' CRC-32 (zlib's), taken as they were written (a resumable upload's as
    its pieces arrived); None if it was not: the first zip holding it takes it then."""


class _Staging:
    """A temporary file in the store being filled and hashed."""

    def __init__(self, root: Path, limit: int) -> None:
        tmp_dir = root / "tmp"
        try:
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        except FileNotFoundError:  # a new store (or its tmp/ was cleaned away)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self.path = Path(name)
        self.handle = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.crc32 = 0
        self.size = 0
        self.limit = limit

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise BlobTooLarge(f"upload is larger than the limit of {self.limit} bytes")
        self.digest.update(chunk)
        self.crc32 = zlib.crc32(chunk, self.crc32)
        self.handle.write(chunk)

    def write_all(self, chunks: list[bytes]) -> None:
        """Write what was gathered, removing the file if that fails (a full disk)."""
        try:
            for chunk in chunks:
                self.write(chunk)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file, whatever went wrong: on a full disk, closing
        fails too (the buffer cannot be written), and the file must still go."""
        with contextlib.suppress(OSError):
            self.handle.close()
        self.path.unlink(missing_ok=True)


class _Chunks:
    """An open file's bytes, chunk by chunk, closing it at the end or on `close()`, even
    if never read (a streamed answer closes its content however it ends); at most
    `remaining` of them if given (a range of the file)."""

    def __init__(self, handle: BinaryIO, remaining: int | None = None) -> None:
        self._handle = handle
        self._remaining = remaining

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        size = CHUNK if self._remaining is None else min(CHUNK, self._remaining)
        chunk = b"" if self._handle.closed or not size else self._handle.read(size)
        if self._remaining is not None:
            self._remaining -= len(chunk)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._handle.close()


class BlobStore:
    def __init__(self, root: Path, max_blob_bytes: int = 1 << 62) -> None:
        self.root = root
        self.max_blob_bytes = max_blob_bytes
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def refuse_too_large(self, size: int) -> None:
        """BlobTooLarge if a blob of `size` bytes is over the limit: one check for every
        upload announced by its size (a resumable one, a blob already stored)."""
        if size > self.max_blob_bytes:
            raise BlobTooLarge(f"upload is larger than the limit of {self.max_blob_bytes} bytes")

    def path_for(self, sha256: str) -> Path:
        return blob_path(self.root, sha256)

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        return self.path_for(sha256).open("rb")

    def iter_bytes(self, sha256: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The blob's bytes, chunk by chunk, from its file opened now, not at the first
        chunk: a blob gone (its job deleted meanwhile) is `FileNotFoundError` here, while
        a download's route can still answer, not after its answer has begun; and once
        open, the file is read to its end whatever deletes the blob meanwhile (POSIX).
        `start` and `length`: only that range of them (a download's `Range`)."""
        handle = self.open(sha256)
        if start:
            handle.seek(start)
        return _Chunks(handle, length)

    def _finish(
        self,
        staging: _Staging,
        expected: str | None,
        check: Callable[[Path], object] | None = None,
    ) -> StoredBlob:
        try:
            staging.handle.flush()
            os.fsync(staging.handle.fileno())
            staging.handle.close()
        except BaseException:  # a full disk shows here: buffered bytes go out last
            staging.discard()
            raise
        actual = staging.digest.hexdigest()
        if expected is not None and actual != expected:
            staging.path.unlink(missing_ok=True)
            raise BlobError(f"content hash is {actual}, not the announced {expected}")
        if check is not None:
            try:
                check(staging.path)
            except BaseException:  # refused before it was placed: nothing stays behind
                staging.path.unlink(missing_ok=True)
                raise
        try:
            return self.place(staging.path, actual, staging.size, staging.crc32)
        except BaseException:  # no room for its directory: no stray copy in tmp/ either
            staging.path.unlink(missing_ok=True)
            raise

    def place(self, staged: Path, sha256: str, size: int, crc32: int | None = None) -> StoredBlob:
        """Rename a verified file from the store's temporary area into its place
        (`crc32`: its bytes' CRC-32, if known)."""
        target = self.path_for(sha256)
        new = not target.exists()
        try:
            os.replace(staged, target)
        except FileNotFoundError:  # the first blob under its two-letter directory
            if not staged.exists():
                raise
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        return StoredBlob(sha256, size, target, new, crc32)

    @cached_property
    def partials(self) -> PartialUploads:
        """The resumable upload sessions whose bytes live in this store's temporary area."""
        from farmhand.manager.storage.partial_uploads import PartialUploads

        return PartialUploads(self)

    def ingest_file(
        self,
        source: Readable,
        expected_sha256: str | None = None,
        check: Callable[[Path], object] | None = None,
    ) -> StoredBlob:
        staging = _Staging(self.root, self.max_blob_bytes)
        try:
            while chunk := source.read(CHUNK):
                staging.write(chunk)
        except BaseException:
            staging.discard()
            raise
        return self._finish(staging, expected_sha256, check)

    async def ingest_stream(
        self,
        chunks: AsyncIterator[bytes],
        expected_sha256: str | None = None,
        check: Callable[[Path], object] | None = None,
    ) -> StoredBlob:
        """Store a request body as it arrives: constant memory whatever its size.

        Writes, hashing, fsync and rename run off the event loop: a write can wait for the
        disk (a kernel flushing dirty pages holds writers back), and every other request
        of the manager would wait with it. The body is gathered up to `CHUNK` bytes per
        trip to a thread, so a small body (a frame) makes one trip, which also runs
        `check` (an image verification, say) on the stored file."""
        staging: _Staging | None = None
        held: list[bytes] = []
        held_bytes = 0
        try:
            async for chunk in chunks:
                held.append(chunk)
                held_bytes += len(chunk)
                if held_bytes >= CHUNK:
                    staging = await asyncio.to_thread(self._write_held, staging, held)
                    held, held_bytes = [], 0
        except BaseException:
            if staging is not None:
                staging.discard()
            raise
        return await asyncio.to_thread(self._finish_held, staging, held, expected_sha256, check)

    def _write_held(self, staging: _Staging | None, held: list[bytes]) -> _Staging:
        """Write gathered chunks, creating the temporary file on the first trip: creating
        a file can wait for the filesystem's journal while other uploads fsync, so it
        runs in the thread too, never on the event loop."""
        if staging is None:
            staging = _Staging(self.root, self.max_blob_bytes)
        staging.write_all(held)
        return staging

    def _finish_held(
        self,
        staging: _Staging | None,
        held: list[bytes],
        expected: str | None,
        check: Callable[[Path], object] | None,
    ) -> StoredBlob:
        staging = self._write_held(staging, held)
        return self._finish(staging, expected, check)
