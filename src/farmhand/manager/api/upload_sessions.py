"""Resumable blob uploads: `POST /api/uploads`, then `PATCH` the bytes from an offset.

A transfer cut halfway (network, laptop lid, Ctrl-C) keeps every byte that arrived; the
client asks where it stands (`HEAD`/`GET` → `Upload-Offset`) and sends only the rest.
The protocol follows tus.io's core in spirit: `Upload-Offset` on every chunk, 409 with
the real offset when they disagree. Bytes are hashed as they arrive and the blob is
stored only if the whole matches the SHA-256 announced at the start
(see `farmhand.manager.storage.partial_uploads`).
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from farmhand.manager.api.deps import Context, UserDep
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.limits import enforce_quota
from farmhand.manager.api.uploads import record_blob
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob
from farmhand.manager.storage.blobs import BlobError, BlobTooLarge
from farmhand.manager.storage.partial_uploads import OffsetMismatch, UploadBusy, UploadSession
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


def _stored(context: ManagerContext, sha256: str) -> bool:
    with context.db.read() as session:
        known = session.scalar(select(Blob.sha256).where(Blob.sha256 == sha256))
    return known is not None and context.blobs.has(sha256)


def _status(session: UploadSession, offset: int, response: Response) -> UploadStatus:
    response.headers[OFFSET] = str(offset)
    response.headers["Upload-Length"] = str(session.size)
    return UploadStatus(
        id=session.id, sha256=session.sha256, size=session.size, offset=offset, complete=False
    )


def _session(context: ManagerContext, upload_id: str, user_id: int) -> UploadSession:
    session = context.blobs.partials.get(upload_id, user_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no upload {upload_id!r}")
    return session


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadStatus,
    responses={200: {"model": UploadStatus}, **error_responses(400, 401, 413)},
    summary="Start or resume an upload; answers the offset to send from",
)
async def create_upload(
    body: UploadCreate, request: Request, response: Response, context: Context, caller: UserDep
) -> UploadStatus:
    if await run_in_threadpool(_stored, context, body.sha256):
        response.status_code = status.HTTP_200_OK
        response.headers[OFFSET] = str(body.size)
        return UploadStatus(
            id="", sha256=body.sha256, size=body.size, offset=body.size, complete=True
        )
    await run_in_threadpool(enforce_quota, context, caller, (), body.size)
    partials = context.blobs.partials
    settings = context.settings
    swept = partials.sweep(
        time.time(), settings.blob_retention_days * 86400, max(settings.gc_interval, 60.0)
    )
    if swept:
        log.info("abandoned uploads removed", uploads=swept)
    try:
        session = partials.open_session(caller.user_id, body.sha256, body.size)
    except BlobTooLarge as error:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(error)) from error
    async with partials.lock(session.id):
        offset = partials.offset(session)
    if offset:
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
            stored = await partials.append(session, upload_offset, request.stream())
        except OffsetMismatch as error:
            raise HTTPException(
                status.HTTP_409_CONFLICT, str(error), headers={OFFSET: str(error.expected)}
            ) from error
        except UploadBusy as error:
            raise HTTPException(
                status.HTTP_409_CONFLICT, str(error), headers={OFFSET: str(error.offset)}
            ) from error
        except BlobTooLarge as error:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(error)) from error
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
    partials.forget_lock(session.id)
    await run_in_threadpool(record_blob, context, stored)
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
