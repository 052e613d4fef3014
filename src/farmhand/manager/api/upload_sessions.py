"""Resumable blob uploads: `POST /api/uploads`, then `PATCH` the bytes from an offset.

A transfer cut halfway (network, laptop lid, Ctrl-C) keeps every byte that arrived; the
client asks where it stands (`HEAD`/`GET` → `Upload-Offset`) and sends only the rest.
The protocol follows tus.io's core in spirit: `Upload-Offset` on every chunk, 409 with
the real offset when they disagree. Bytes are hashed as they arrive and the blob is
stored only if the whole matches the SHA-256 announced at the start
(see `farmhand.manager.storage.partial_uploads`).

An unfinished upload counts towards its owner's storage quota by its announced size, and
a user may have at most `max_open_uploads` of them (`manager/api/limits.py`); the same
(user, hash, size) finds its upload again without counting twice, so a client that
crashed resumes its own uploads whatever the limits. `GET /api/uploads` lists the
caller's, `DELETE /api/uploads/{id}` aborts one (`farmhand uploads`, and a canceled
`farmhand submit` aborts those it began).
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.limits import enforce_open_uploads, enforce_quota
from farmhand.manager.api.uploads import sent_by
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob
from farmhand.manager.storage.access import readable
from farmhand.manager.storage.blobs import BlobError, BlobTooLarge
from farmhand.manager.storage.gc import touch_blobs
from farmhand.manager.storage.partial_uploads import (
    ChunkTooLarge,
    OffsetMismatch,
    PartialUploads,
    UploadBusy,
    UploadSession,
)
from farmhand.shared.schemas import UploadCreate, UploadStatus

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/uploads", tags=["blobs"])
OFFSET = "Upload-Offset"
OCTET_STREAM_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""OpenAPI for a raw-bytes body (FastAPI cannot infer one from `request.stream()`)."""


def _stored_size(context: ManagerContext, caller: Caller, sha256: str) -> int | None:
    """The size of the blob if the manager holds it and the caller may read it (and
    marks it as just told about, as `/api/blobs/missing` does: the client may name it
    in a job any moment). Someone else's file is not stored as far as the caller is
    told (`storage/access.py`): they upload it, proving they hold it."""
    with context.db.read() as session:  # no write lock while it reads
        if not readable(session, caller.user_id, [sha256], admin=caller.is_admin):
            return None
    with context.db.transaction() as session:
        size = session.scalar(select(Blob.size).where(Blob.sha256 == sha256))
        if size is None or not context.blobs.has(sha256):
            return None
        touch_blobs(session, caller.user_id, [sha256], utcnow())
    return size


def _status(session: UploadSession, offset: int, response: Response) -> UploadStatus:
    response.headers[OFFSET] = str(offset)
    response.headers["Upload-Length"] = str(session.size)
    return UploadStatus(
        id=session.id, sha256=session.sha256, size=session.size, offset=offset, complete=False
    )


def _declared_length(request: Request) -> int | None:
    """The chunk's `Content-Length`, if it sent a valid one (else it is counted)."""
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _session(context: ManagerContext, upload_id: str, user_id: int) -> UploadSession:
    session = context.blobs.partials.get(upload_id, user_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no upload {upload_id!r}")
    return session


def _open(
    context: ManagerContext, caller: Caller, body: UploadCreate
) -> tuple[UploadSession, bool]:
    """The caller's upload of this blob, and whether it was found again: a resume
    (already counted, so only the quota, which may have shrunk, is asked again), or
    opened, if the caller may have another unfinished upload and its announced size fits
    their quota."""
    partials = context.blobs.partials
    upload_id = partials.session_id(caller.user_id, body.sha256, body.size)
    with partials.creating():
        resumed = partials.get(upload_id, caller.user_id) is not None
        if not resumed:
            enforce_open_uploads(context, caller, len(partials.open_uploads(caller.user_id)))
        enforce_quota(context, caller, (), 0 if resumed else body.size)
        return partials.open_session(caller.user_id, body.sha256, body.size), resumed


async def _drop_left_over(partials: PartialUploads, user_id: int, body: UploadCreate) -> None:
    """The blob is stored (sent another way): an unfinished upload of it the caller left
    would only count against their limits until it expired."""
    left = partials.get(partials.session_id(user_id, body.sha256, body.size), user_id)
    if left is None:
        return
    async with partials.lock(left.id):
        try:
            partials.abandon(left)
        except UploadBusy:
            return  # someone is sending it: finishing it stores the blob again, harmlessly
    partials.forget_lock(left.id)


@router.get(
    "",
    response_model=list[UploadStatus],
    responses=error_responses(401),
    summary="The caller's unfinished uploads, oldest activity first",
)
async def list_uploads(context: Context, caller: UserDep) -> list[UploadStatus]:
    """What counts towards the caller's `max_open_uploads` and, by announced size, their
    quota: to find, and abort, uploads a crashed or changed client left behind."""
    uploads = await run_in_threadpool(context.blobs.partials.open_uploads, caller.user_id)
    return [
        UploadStatus(
            id=upload.session.id,
            sha256=upload.session.sha256,
            size=upload.session.size,
            offset=upload.received,
            complete=False,
        )
        for upload in uploads
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadStatus,
    responses={200: {"model": UploadStatus}, **error_responses(400, 401, 409, 413)},
    summary="Start or resume an upload; answers the offset to send from",
)
async def create_upload(
    body: UploadCreate, request: Request, response: Response, context: Context, caller: UserDep
) -> UploadStatus:
    """An upload's size is checked before anything else, also for a blob already
    stored: the answer must not depend on what other people uploaded. A blob already
    stored that the caller may read (`storage/access.py`) answers `complete` only if the
    size agrees; a client whose size and hash disagree with it has a bug or a changed
    file, and is told (400) rather than left to name a blob in a job that is not the
    file it has. Someone else's blob is neither: the caller uploads it like a new one.

    A new upload is refused with 409 when the caller has `max_open_uploads` unfinished
    ones, and with the quota's 413 when its size, with the announced sizes of the
    caller's unfinished uploads, would pass their quota (`api/limits.py`)."""
    try:
        context.blobs.refuse_too_large(body.size)
    except BlobTooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    stored_size = await run_in_threadpool(_stored_size, context, caller, body.sha256)
    if stored_size is not None:
        if stored_size != body.size:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"blob {body.sha256} is stored with {stored_size} bytes, not {body.size}: "
                "the size or the hash sent is wrong",
            )
        await _drop_left_over(context.blobs.partials, caller.user_id, body)
        response.status_code = status.HTTP_200_OK
        response.headers[OFFSET] = str(stored_size)
        return UploadStatus(
            id="", sha256=body.sha256, size=stored_size, offset=stored_size, complete=True
        )
    partials = context.blobs.partials
    settings = context.settings
    # Abandoned uploads first: once expired they no longer count against the limits.
    swept = partials.sweep(
        time.time(), settings.blob_retention_days * 86400, max(settings.gc_interval, 60.0)
    )
    if swept:
        log.info("abandoned uploads removed", uploads=swept)
    try:
        session, resumed = await run_in_threadpool(_open, context, caller, body)
    except BlobTooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    async with partials.lock(session.id):
        offset = partials.offset(session)
    if resumed:  # found again, even before its first byte: 201 means a new upload
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/uploads/{session.id}"
    return _status(session, offset, response)


@router.get(
    "/{upload_id}",
    response_model=UploadStatus,
    responses=error_responses(401, 404),
    summary="How many bytes of an upload arrived (also as the Upload-Offset header)",
)
async def upload_status(
    upload_id: str, response: Response, context: Context, caller: UserDep
) -> UploadStatus:
    session = _session(context, upload_id, caller.user_id)
    partials = context.blobs.partials
    # Waits for a chunk still being written (a client that went away mid-chunk).
    async with partials.lock(session.id):
        return _status(session, partials.offset(session), response)


@router.head("/{upload_id}", responses=error_responses(401, 404), include_in_schema=False)
async def upload_head(
    upload_id: str, response: Response, context: Context, caller: UserDep
) -> None:
    await upload_status(upload_id, response, context, caller)


@router.patch(
    "/{upload_id}",
    response_model=UploadStatus,
    responses=error_responses(400, 401, 404, 409, 413),
    summary="Send bytes from `Upload-Offset` on; the blob is stored when the last one arrives",
    openapi_extra=OCTET_STREAM_BODY,
)
async def upload_chunk(
    upload_id: str,
    request: Request,
    response: Response,
    context: Context,
    caller: UserDep,
    upload_offset: int = Header(alias=OFFSET, ge=0),
) -> UploadStatus | Response:
    session = _session(context, upload_id, caller.user_id)
    partials = context.blobs.partials
    async with partials.lock(session.id):
        try:
            stored = await partials.append(
                session, upload_offset, request.stream(), length=_declared_length(request)
            )
        except OffsetMismatch as error:
            raise HTTPException(
                status.HTTP_409_CONFLICT, str(error), headers={OFFSET: str(error.expected)}
            ) from error
        except UploadBusy as error:
            raise HTTPException(
                status.HTTP_409_CONFLICT, str(error), headers={OFFSET: str(error.offset)}
            ) from error
        except ChunkTooLarge as error:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                str(error),
                headers={OFFSET: str(error.offset)},
            ) from error
        except BlobError as error:
            log.warning(
                "upload refused", upload=session.id, sha256=session.sha256, error=str(error)
            )
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        except ClientDisconnect:
            offset = partials.offset(session)
            log.info("upload interrupted", upload=session.id, offset=offset, size=session.size)
            return Response(status_code=499)
        if stored is None:
            return _status(session, partials.offset(session), response)
        # Recorded as the caller's before the lock goes: a `DELETE` of this upload that
        # waited for it (a canceled submit's, its last chunk under way) then finds the
        # blob theirs, to release (`DELETE /api/blobs/{sha256}`), not yet unclaimed.
        await sent_by(context, caller.user_id, [stored])  # records the blob too
    partials.forget_lock(session.id)
    log.info("upload stored", sha256=stored.sha256, size=stored.size, user=caller.name)
    response.headers[OFFSET] = str(stored.size)
    return UploadStatus(
        id="", sha256=stored.sha256, size=stored.size, offset=stored.size, complete=True
    )


@router.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 409),
    summary="Abandon an upload and free the bytes received so far",
)
async def delete_upload(upload_id: str, context: Context, caller: UserDep) -> Response:
    session = _session(context, upload_id, caller.user_id)
    partials = context.blobs.partials
    async with partials.lock(session.id):
        try:
            partials.abandon(session)
        except UploadBusy as error:
            raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    partials.forget_lock(session.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
