"""Uploading a packed project (a zip of a .blend and what it uses) in one go."""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath

import structlog
from fastapi import APIRouter, HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.blendinfo import blend_info_model, farm_blenders, read_scene
from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.limits import QuotaExceeded, enforce_quota
from farmhand.manager.api.uploads import record_blob, sent_by, uploaded_name
from farmhand.manager.context import ManagerContext
from farmhand.manager.storage.access import readable
from farmhand.manager.storage.blobs import BlobTooLarge
from farmhand.manager.storage.gc import remove_blob_files
from farmhand.manager.storage.project_zip import (
    Contents,
    Project,
    ProjectError,
    ProjectTooLarge,
    ingest_project,
)
from farmhand.shared.web_schemas import ProjectUpload
from farmhand.worker.blender.discovery import BlenderNotFound

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api", tags=["jobs"])


def _store(context: ManagerContext, caller: Caller, upload: UploadFile) -> Project:
    """Unpack the zip into the blob store and record its files: per entry a hash, an
    fsync and a write transaction, seconds for a zip of hundreds of files. Run on
    `context.unpacks`' turns, not the pool every request shares (`upload_project`).

    The quota is asked before a byte is stored (`_admit`), in the turn, so a zip
    unpacked just before counts. It used to be asked only after unpacking, and a zip
    over the quota stayed on the disk for the grace period, each time it was sent. What
    an unpacking that stops halfway stored, no one else's, is removed
    (`gc.remove_blob_files` puts back a blob someone recorded meanwhile)."""
    project = ingest_project(
        context.blobs,
        upload.file,
        context.settings.max_upload_bytes,
        admit=partial(_admit, context, caller),
        discard=partial(remove_blob_files, context),
    )
    for stored in project.files.values():
        record_blob(context, stored)
    return project


def _admit(context: ManagerContext, caller: Caller, total: int, contents: Contents) -> None:
    """413 (`QuotaExceeded`) if the zip would pass the caller's quota, before a byte of
    it is stored: first for every byte its entries declare, as if none were stored yet,
    which decides at once for a zip well within the quota. Only one that does not fit so
    is unpacked without storing, to learn its files' hashes: those the caller holds
    already cost nothing more (a project sent again after a change in its .blend), the
    others their size, as any upload's (`enforce_quota`, the one home of the rule)."""
    try:
        enforce_quota(context, caller, (), extra_bytes=total)
    except QuotaExceeded:
        sizes = contents()
        with context.db.read() as session:
            held = readable(session, caller.user_id, list(sizes), admin=caller.is_admin)
        new = sum(size for sha, size in sizes.items() if sha not in held)
        enforce_quota(context, caller, held, extra_bytes=new)


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
    shas = [stored.sha256 for stored in project.files.values()]
    # The caller sent these bytes: its files are theirs to name in the job that follows.
    await sent_by(context, caller.user_id, project.files.values())
    # Asked again now that the hashes are known: zips unpacked at the same time each
    # passed the check before their unpacking.
    await run_in_threadpool(enforce_quota, context, caller, shas)
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
