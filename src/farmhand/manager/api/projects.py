"""Uploading a packed project (a zip of a .blend and what it uses) in one go."""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath

import structlog
from fastapi import APIRouter, HTTPException, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.blendinfo import blend_info_model, farm_blenders, read_scene
from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.limits import QuotaExceeded, enforce_quota
from farmhand.manager.api.uploads import record_blob, uploaded_name
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import BlobUpload
from farmhand.manager.storage.access import readable, record_uploads
from farmhand.manager.storage.blobs import BlobTooLarge
from farmhand.manager.storage.gc import remove_blob_files, undo_uploads
from farmhand.manager.storage.project_zip import (
    Contents,
    Project,
    ProjectError,
    ProjectTooLarge,
    ingest_project,
)
from farmhand.manager.storage.reservations import Claim, Reservations
from farmhand.shared.web_schemas import ProjectUpload
from farmhand.worker.blender.discovery import BlenderNotFound

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api", tags=["jobs"])


def _store(context: ManagerContext, caller: Caller, upload: UploadFile) -> Project:
    """Unpack the zip into the blob store and record its files: per entry a hash, an
    fsync and a write transaction, seconds for a zip of hundreds of files. Run on
    `context.unpacks`' turns, not the pool every request shares (`upload_project`).

    The quota is asked before a byte is stored (`_admit`), with the bytes of the
    sender's zips still unpacking held against them (`storage/reservations.py`). It used to be
    asked only after unpacking, and a zip over the quota stayed on the disk for the
    grace period, each time it was sent. What an unpacking that stops halfway stored,
    no one else's, is removed (`gc.remove_blob_files` puts back a blob someone recorded
    meanwhile).

    It is asked again once the files are recorded as the sender's, for what no
    reservation saw (another manager process's zips, the same user's other uploads):
    a zip refused then is unrecorded and its new blobs removed at once (`gc.undo_uploads`)."""
    reservations = context.zip_reservations
    claim = Claim(caller.user_id)
    try:
        project = ingest_project(
            context.blobs,
            upload.file,
            context.settings.max_upload_bytes,
            admit=partial(_admit, context, caller, reservations, claim),
            discard=partial(remove_blob_files, context),
        )
        for stored in project.files.values():
            record_blob(context, stored)
        shas = [stored.sha256 for stored in project.files.values()]
        with reservations.turn(caller.user_id):
            with context.db.transaction() as session:
                prior = _uploaded(session, caller.user_id, shas)
                # The caller sent these bytes: theirs to name in the job that follows.
                record_uploads(session, caller.user_id, project.files.values(), utcnow())
            reservations.release(claim)
            try:
                enforce_quota(context, caller, shas, extra_bytes=reservations.others(claim))
            except QuotaExceeded:
                undo_uploads(
                    context,
                    caller.user_id,
                    [sha for sha in shas if sha not in prior],
                    project.created,
                )
                raise
    finally:
        reservations.release(claim)
    return project


def _uploaded(session: Session, user_id: int, shas: list[str]) -> set[str]:
    """Which of these blobs the user had sent before."""
    return set(
        session.scalars(
            select(BlobUpload.sha256).where(
                BlobUpload.user_id == user_id, BlobUpload.sha256.in_(shas)
            )
        )
    )


def _admit(
    context: ManagerContext,
    caller: Caller,
    reservations: Reservations,
    claim: Claim,
    total: int,
    contents: Contents,
) -> None:
    """413 (`QuotaExceeded`) if the zip would pass the caller's quota, before a byte of
    it is stored, counting the bytes the caller's other zips being unpacked hold: first
    for every byte its entries declare, as if none were stored yet, which decides at
    once for a zip well within the quota. Only one that does not fit so is unpacked
    without storing (outside the caller's turn: it takes seconds), to learn its files'
    hashes: those the caller holds already cost nothing more (a project sent again
    after a change in its .blend), the others their size, as any upload's
    (`enforce_quota`, the one home of the rule). An admitted zip holds what it was
    admitted for until its files are recorded."""
    with reservations.turn(caller.user_id):
        try:
            enforce_quota(context, caller, (), extra_bytes=total + reservations.others(claim))
        except QuotaExceeded:
            pass
        else:
            reservations.hold(claim, total)
            return
    sizes = contents()
    with reservations.turn(caller.user_id):
        with context.db.read() as session:
            held = readable(session, caller.user_id, list(sizes), admin=caller.is_admin)
        new = sum(size for sha, size in sizes.items() if sha not in held)
        enforce_quota(context, caller, held, extra_bytes=new + reservations.others(claim))
        reservations.hold(claim, new)


@router.post(
    "/projects",
    response_model=ProjectUpload,
    responses=error_responses(400, 401, 413, 503),
    summary="Upload a zip of a packed project; answers the job manifest and scene settings",
)
async def upload_project(file: UploadFile, context: Context, caller: UserDep) -> ProjectUpload:
    uploaded_name(file, ".zip")
    try:
        context.blobs.refuse_too_large(file.size or 0)
    except BlobTooLarge as error:  # the limit named, as every upload's 413 names it
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"the zip is too large: {error}"
        ) from error
    # Unpacked in turn (a few at a time): a burst of big zips used to take every thread
    # of the pool the runners' heartbeats and claims need too. One kept waiting too long
    # is refused before a byte of it is stored (FileReadsBusy: 503, Retry-After).
    try:
        project = await context.unpacks.run(partial(_store, context, caller, file))
    except ProjectTooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    except ProjectError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    main = project.blend_files[0]
    blob = project.files[main]
    answer = ProjectUpload(
        files={path: stored.sha256 for path, stored in project.files.items()},
        blend_files=project.blend_files,
        main_file=main,
        size=sum(stored.size for stored in project.files.values()),
    )
    try:
        version, facts = await context.file_reads.run(
            partial(read_scene, blob.path, PurePosixPath(main).name, blob.sha256)
        )
        farm = await run_in_threadpool(farm_blenders, context, version)
        answer.info = blend_info_model(blob.sha256, main, blob.size, version, facts, farm)
    except (BlenderNotFound, ValueError, RuntimeError) as error:
        log.info("project scene not read", file=main, error=str(error))
        answer.info_error = f"the scene settings of {main!r} could not be read: {error}"
    return answer
