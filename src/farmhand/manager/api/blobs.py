"""Content-addressed uploads: ask what is missing, send only that."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, UserDep
from farmhand.manager.api.limits import enforce_quota
from farmhand.manager.api.upload_sessions import OCTET_STREAM_BODY
from farmhand.manager.api.uploads import ingest
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob
from farmhand.manager.storage.gc import touch_blobs
from farmhand.shared.schemas import (
    BlobsMissingRequest,
    BlobsMissingResponse,
    BlobStored,
    ErrorResponse,
)

router = APIRouter(prefix="/api/blobs", tags=["blobs"])


@router.post("/missing", response_model=BlobsMissingResponse)
def missing_blobs(
    body: BlobsMissingRequest, context: Context, caller: UserDep
) -> BlobsMissingResponse:
    wanted = set(body.hashes)
    with context.db.transaction() as session:
        known = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(wanted))))
        # The client will not upload these and may name them in a job any moment:
        # garbage collection and job deletion must spare them for the grace period.
        touch_blobs(session, known, utcnow())
    missing = [
        sha for sha in dict.fromkeys(body.hashes) if sha not in known or not context.blobs.has(sha)
    ]
    return BlobsMissingResponse(missing=missing)


def _touch(context: ManagerContext, sha256: str) -> None:
    with context.db.transaction() as session:
        touch_blobs(session, [sha256], utcnow())


@router.put(
    "/{sha256}",
    status_code=status.HTTP_201_CREATED,
    response_model=BlobStored,
    responses={
        200: {"model": BlobStored, "description": "Already stored"},
        400: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
    },
    openapi_extra=OCTET_STREAM_BODY,
)
async def put_blob(
    request: Request,
    response: Response,
    context: Context,
    caller: UserDep,
    sha256: str = Path(pattern=r"^[0-9a-f]{64}$"),
) -> BlobStored:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > context.settings.max_upload_bytes
    ):
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"upload of {declared} bytes is larger than the limit of "
            f"{context.settings.max_upload_bytes}",
        )
    if declared is not None and declared.isdigit():
        await run_in_threadpool(enforce_quota, context, caller, (), int(declared))
    stored, created = await ingest(context, request.stream(), expected_sha256=sha256)
    await run_in_threadpool(enforce_quota, context, caller, [stored.sha256])
    if not created:
        # Sent again: a job naming it may follow any moment; spare it from collection.
        await run_in_threadpool(_touch, context, stored.sha256)
        response.status_code = status.HTTP_200_OK
    return BlobStored(sha256=stored.sha256, size=stored.size)
