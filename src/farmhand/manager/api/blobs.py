"""Content-addressed uploads: ask what is missing, send only that.

"Missing" is per user: a blob someone else uploaded, which this user may not read
(`farmhand.manager.storage.access`), is missing for them as if it were not stored, so
a hash tells nobody whether a file is on the farm; they send the bytes, which proves
they hold them, and then it is theirs to name too.

`DELETE /api/blobs/{sha256}` gives up an upload of the caller's that no job of theirs
uses (what a canceled `farmhand submit` sent), so it stops counting against their quota
at once rather than after the grace period; the file goes only if nobody else holds it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.limits import _duration, enforce_quota, manifest_body
from farmhand.manager.api.upload_sessions import OCTET_STREAM_BODY
from farmhand.manager.api.uploads import ingest, receiving, sent_by
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.storage.access import readable
from farmhand.manager.storage.gc import Release, release_upload, touch_blobs
from farmhand.shared.schemas import (
    BlobsMissingRequest,
    BlobsMissingResponse,
    BlobStored,
    ErrorResponse,
)

router = APIRouter(prefix="/api/blobs", tags=["blobs"])


_MISSING_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": BlobsMissingRequest.model_json_schema(ref_template="{model}")
            }
        },
    }
}


@router.post(
    "/missing",
    response_model=BlobsMissingResponse,
    openapi_extra=_MISSING_BODY,
    responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}},
)
async def missing_blobs(
    request: Request, context: Context, caller: UserDep
) -> BlobsMissingResponse:
    """The hashes the caller must upload: those not stored, and those stored that the
    caller may not read (someone else's file), which they must prove they hold.

    The body (a job's worth of hashes: up to 32 MiB) is read once the caller is known,
    not before (`limits.manifest_body`)."""
    body = await manifest_body(request, context.settings.max_json_depth)
    try:
        asked = await run_in_threadpool(BlobsMissingRequest.model_validate_json, body)
    except ValidationError as error:  # answered as FastAPI's own body validation is
        raise RequestValidationError(error.errors(include_url=False)) from error
    return await run_in_threadpool(_missing, context, caller, asked)


def _missing(
    context: ManagerContext, caller: Caller, body: BlobsMissingRequest
) -> BlobsMissingResponse:
    wanted = set(body.hashes)
    with context.db.read() as session:  # no write lock while it reads
        known = readable(session, caller.user_id, wanted, admin=caller.is_admin)
    with context.db.transaction() as session:
        # The client will not upload these and may name them in a job any moment:
        # garbage collection and job deletion must spare them for the grace period, and
        # the caller's release of their own upload must keep it (`gc.release_upload`).
        touch_blobs(session, caller.user_id, known, utcnow())
    missing = [
        sha for sha in dict.fromkeys(body.hashes) if sha not in known or not context.blobs.has(sha)
    ]
    return BlobsMissingResponse(missing=missing)


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
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"upload of {declared} bytes is larger than the limit of "
            f"{context.settings.max_upload_bytes}",
        )
    if declared is not None and declared.isdigit():
        await run_in_threadpool(enforce_quota, context, caller, (), int(declared))
    async with receiving(request, user=caller.name) as body:
        stored, created = await ingest(context, body.stream(), expected_sha256=sha256)
    # The caller sent the bytes, verified against the hash: the blob is theirs to name
    # now, even if their quota refuses it below. Also when sent again (200): a job
    # naming it may follow any moment, so it is touched (spared from collection).
    await sent_by(context, caller.user_id, [stored])
    await run_in_threadpool(enforce_quota, context, caller, [stored.sha256])
    if not created:
        response.status_code = status.HTTP_200_OK
    return BlobStored(sha256=stored.sha256, size=stored.size)


@router.delete(
    "/{sha256}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 409),
    summary="Release a file you uploaded that no job of yours uses (it stops counting)",
)
async def release_blob(
    context: Context, caller: UserDep, sha256: str = Path(pattern=r"^[0-9a-f]{64}$")
) -> Response:
    """For a canceled submit: the files it had uploaded would count against the
    caller's quota until garbage collection took them, a grace period later. Owner only,
    and only the caller's own claim: a file anyone else holds stays, silently: the answer
    depends on the caller's own uploads, asks and jobs only (`gc.release_upload`)."""
    released = await run_in_threadpool(release_upload, context, caller.user_id, sha256)
    if released is Release.NOT_THEIRS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"you uploaded no file {sha256}")
    if released is Release.IN_THEIR_JOB:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"file {sha256} is used by a job of yours: it counts as the job's until the "
            "job is deleted",
        )
    if released is Release.ASKED_SINCE:
        grace = _duration(context.settings.blob_grace_seconds)
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"you asked for file {sha256} since you uploaded it (another submit of yours "
            f"may be about to use it): it is kept, and removed on its own about {grace} "
            "after that if no job uses it",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
