"""Taking uploaded bytes into the blob store and recording the blob, for every route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from fastapi import HTTPException, Request, status
from sqlalchemy import delete
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Message

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import JobFile
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.storage.access import NEW_BLOB, readable, record_uploads
from farmhand.manager.storage.blobs import BlobError, BlobTooLarge, StoredBlob
from farmhand.manager.storage.gc import mark_used, undo_uploads
from farmhand.shared.paths import UnsafePathError, safe_file_name

log = structlog.get_logger(__name__)

_BLOB_COLUMNS = ("sha256", "size", "crc32", "created_at", "used_at")
_NEW_BLOB: dict[str, Prepared[Any]] = {
    dialect: Prepared(statement, columns=_BLOB_COLUMNS) for dialect, statement in NEW_BLOB.items()
}
"""`access.NEW_BLOB`, prepared for one frame's blob on the upload's hot path."""


def record_blob(context: ManagerContext, stored: StoredBlob) -> bool:
    """Record a stored blob; True if it was new."""
    with context.db.transaction() as session:
        return record_blob_in(session, stored)


def record_blob_in(session: Session, stored: StoredBlob, used_at: datetime | None = None) -> bool:
    """Record a stored blob in the caller's transaction; True if it was new.

    `used_at`: a job is naming it as its file in this transaction, so a new row is marked
    used at once (`gc.mark_used` is for one that already existed): one statement on the
    frame upload's hot path instead of two."""
    connection = session.connection()
    inserted = _NEW_BLOB[connection.dialect.name].execute(
        connection,
        {
            "sha256": stored.sha256,
            "size": stored.size,
            "crc32": stored.crc32,
            "created_at": utcnow(),
            "used_at": used_at,
        },
    )
    return bool(inserted)


def replace_job_file(
    session: Session,
    stored: StoredBlob,
    *,
    job_id: int,
    kind: str,
    path: str,
    task_id: int,
    worker_id: int,
    frame: int | None = None,
) -> int:
    """Record `stored` as the job's `kind` file at `path`, in place of the one before it
    (a retried task uploads again), in the caller's transaction; the new row's id."""
    session.execute(
        delete(JobFile).where(JobFile.job_id == job_id, JobFile.kind == kind, JobFile.path == path)
    )
    row = JobFile(
        job_id=job_id,
        kind=kind,
        path=path,
        sha256=stored.sha256,
        size=stored.size,
        frame=frame,
        task_id=task_id,
        worker_id=worker_id,
        created_at=utcnow(),
    )
    session.add(row)
    mark_used(session, [stored.sha256], row.created_at)
    session.flush()
    return row.id


@contextmanager
def _store_errors_as_4xx() -> Iterator[None]:
    """The blob store's refusals as the answers a client can act on."""
    try:
        yield
    except BlobTooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    except BlobError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


async def ingest(
    context: ManagerContext, chunks: AsyncIterator[bytes], expected_sha256: str | None = None
) -> tuple[StoredBlob, bool]:
    """Stream bytes into the store and record the blob; True if it was new."""
    with _store_errors_as_4xx():
        stored = await context.blobs.ingest_stream(chunks, expected_sha256)
    created = await run_in_threadpool(record_blob, context, stored)
    return stored, created


def uploaded_name(upload: UploadFile, suffix: str) -> str:
    """The upload's file name, if it is a plain name ending in `suffix`; else a 400."""
    return checked_name(upload.filename, suffix)


def checked_name(filename: str | None, suffix: str) -> str:
    """`uploaded_name` for a name a route read itself (`form_file.FormFile`)."""
    try:
        name = safe_file_name(filename or "")
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"bad file name: {error}") from error
    if PurePosixPath(name).suffix.lower() != suffix:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name!r} is not a {suffix} file")
    return name


async def store_upload(context: ManagerContext, upload: UploadFile) -> StoredBlob:
    stored = await receive_upload(context, upload)
    await run_in_threadpool(record_blob, context, stored)
    return stored


@dataclass
class KeptUpload:
    """An upload this request stored, and how to take that back: a file refused after it
    was stored (settings or a path sent after it that are wrong, the quota passed once it
    is counted, a .blend Blender cannot read) must cost its sender nothing, and not stay
    on the disk outside every quota until collection. Only what this request added is
    undone (`gc.undo_uploads`, as for a refused project zip): the blob's row and file
    if it `created` them, the sender's claim to it if it was new (`claimed`)."""

    context: ManagerContext
    user_id: int
    sha256: str
    created: bool
    claimed: bool = False

    def claim(self, stored: StoredBlob) -> None:
        """Record the upload as the sender's (`sent_by`), noting whether that is new."""
        with self.context.db.transaction() as session:
            self.claimed = not readable(session, self.user_id, [self.sha256], admin=False)
            record_uploads(session, self.user_id, [stored], utcnow())

    def undo(self) -> None:
        sent = [self.sha256] if self.claimed else []
        undo_uploads(self.context, self.user_id, sent, [self.sha256] if self.created else [])


async def sent_by(context: ManagerContext, user_id: int, stored: Iterable[StoredBlob]) -> None:
    """The user sent these bytes: the blobs are theirs to name in a job from now on
    (`storage/access.py`), and they are touched, so collection spares them meanwhile."""

    def record() -> None:
        with context.db.transaction() as session:
            record_uploads(session, user_id, stored, utcnow())

    await run_in_threadpool(record)


async def receive_upload(
    context: ManagerContext, upload: UploadFile, check: Callable[[Path], object] | None = None
) -> StoredBlob:
    """`store_upload` without recording the blob (the caller records it with its rows).

    The form parser has already received the whole file (in memory, or spooled to a
    temporary file past 1 MiB), so copying, hashing, syncing and `check`ing it (an image
    verification, say) is one trip to a thread, not one per chunk: the hot path takes
    several frames a second from every worker."""

    with _store_errors_as_4xx():
        return await asyncio.to_thread(context.blobs.ingest_file, upload.file, None, check)


async def receive_body(
    context: ManagerContext,
    chunks: AsyncIterator[bytes],
    check: Callable[[Path], object] | None = None,
) -> StoredBlob:
    """`receive_upload` for a raw request body: streamed into the store as it arrives,
    written once (a multipart file is spooled by the form parser, then copied)."""
    with _store_errors_as_4xx():
        return await context.blobs.ingest_stream(chunks, None, check)


class UploadInterrupted(HTTPException):
    """The client went away before the last byte of its upload: nothing was stored, and
    nobody is left to read an answer. 499 is nginx's "client closed request", for what
    logs the exchange, as `PATCH /api/uploads/{id}` answers the same."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection before its upload was complete")


@asynccontextmanager
async def receiving(request: Request, **sender: object) -> AsyncIterator[Request]:
    """`request`, to read an upload's body from (`stream()` or `form()`) inside the block.

    A client that goes away before the last byte is a network drop, which happens (a
    worker's link, a laptop closed mid-upload), not a bug: it is one INFO line naming the
    route, `sender` (the user, or the runner and its task) and the bytes of the body read
    when the disconnect was seen (`read`: bytes still buffered in the server then are not
    counted, so it is a lower bound), and an `UploadInterrupted`, where `ClientDisconnect`
    would reach the error handlers as an unhandled error with two tracebacks. What the
    body was going into is discarded on the way out, as for any error (the blob store's
    temporary file)."""
    read = 0

    async def counted() -> Message:
        nonlocal read
        message = await request.receive()
        if message["type"] == "http.request":
            read += len(message.get("body", b""))
        return message

    try:
        yield Request(request.scope, counted)
    except ClientDisconnect:
        raise upload_interrupted(request, read, **sender) from None


def upload_interrupted(request: Request, read: int, **sender: object) -> UploadInterrupted:
    """Log `request`'s upload as cut off after `read` bytes of its body (see `receiving`):
    the one line for every route, whether it caught the disconnect itself or FastAPI was
    parsing its form (`limits.answer_interrupted`). The answer to raise or send."""
    log.info(
        "upload interrupted: the client went away",
        method=request.method,
        path=request.url.path,
        read=read,
        declared=request.headers.get("content-length"),
        **sender,
    )
    return UploadInterrupted()
