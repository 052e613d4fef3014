"""Runner route for the one output of a tile task: its tile of a tiled still.

Kept apart from the frame upload because a tile is not the frame: several tasks render
the same frame number, each a part of it, and the job's frame is made by its `merge`
task from all of them (`worker/merge.py`). A tile is stored as `tiles/0007/r1c2.png`
(frame 7, row 1, column 2, from the top left; `.exr` for a still in OpenEXR: a tile is
in the job's format, `tile_extension`, and no other); a retried tile replaces the one
before, atomically, as a frame does.

Two ways in, as for a frame (`runner_frames`): workers `PUT` the tile as the raw body to
`/tasks/{task}/tile.png` (or `.exr`), streamed into the store and written once (an EXR
tile of a big still is no small file); the multipart `POST /files/{job}/tile` is what
workers before it send. Both check the extension with `tile_suffix` and record the tile
with `_record_tile`, so they refuse exactly the same things.
"""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import ERRORS, _held_task
from farmhand.manager.api.runner_frames import RAW_BODY
from farmhand.manager.api.uploads import (
    receive_body,
    receive_upload,
    record_blob_in,
    replace_job_file,
)
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job
from farmhand.manager.events import FarmEvent
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.shared.frames import frame_label
from farmhand.shared.images import ImageError, verify_image_as
from farmhand.shared.schemas import JobSettings, OutputStored, TileSpec, tile_extension

router = APIRouter(prefix="/api/runner", tags=["runner"])


_TILE_SUFFIXES = (".png", ".exr")
"""What a tile may be (`tile_extension` says which for a job)."""


def tile_path(tile: TileSpec, extension: str) -> str:
    """Where a tile is stored in its job's file tree (`extension`: `tile_extension`)."""
    return f"tiles/{frame_label(tile.frame)}/r{tile.row}c{tile.column}{extension}"


def tile_suffix(file_name: str) -> str:
    """The extension of a tile file named `file_name`; a 400 for anything but a tile's,
    before a byte is stored (or read, for the `PUT`). Whether it is the job's format is
    looked at with the task, in `_record_tile`."""
    suffix = PurePosixPath(file_name).suffix.lower()
    if suffix not in _TILE_SUFFIXES:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a tile is a .png or .exr file")
    return suffix


def _unreadable(error: ImageError) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"the tile is not a readable image: {error}")


async def _record_tile(
    context: ManagerContext,
    stored: StoredBlob,
    *,
    job_id: int | None,
    task_id: int,
    suffix: str,
    worker_id: int,
) -> OutputStored:
    """Record a stored, verified tile as its task's, in place of any earlier upload of it.

    As a frame: one transaction looks whether the task is still this runner's (409), a
    tile task of job `job_id` if the caller named one (400), and the tile in its job's
    format (400), and records it; a refused file is a stray for garbage collection."""

    def record(session: Session) -> tuple[int, int]:
        task = _held_task(session, task_id, worker_id)
        if (job_id is not None and task.job_id != job_id) or task.tile is None:
            of_job = f" of job {job_id}" if job_id is not None else ""
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"task {task_id} is not a tile{of_job}"
            )
        job = session.get(Job, task.job_id)
        assert job is not None  # the task is one of its tasks
        wanted = tile_extension(JobSettings.model_validate(job.settings).output_format)
        if suffix != wanted:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"job {job.id} is rendered in {wanted} tiles, not {suffix}",
            )
        path = tile_path(TileSpec.model_validate(task.tile), suffix)
        record_blob_in(session, stored)
        output_id = replace_job_file(
            session,
            stored,
            job_id=job.id,
            kind="tile",
            path=path,
            task_id=task_id,
            worker_id=worker_id,
        )
        return output_id, job.id

    output_id, job = await context.db.batched(record)
    context.events.publish(FarmEvent("output", output_id, job))
    return OutputStored(id=output_id, frame=None, sha256=stored.sha256, size=stored.size)


@router.put(
    "/tasks/{task_id}/tile.{extension}",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload the rendered tile of a tile task this runner holds, as the raw body",
    openapi_extra=RAW_BODY,
)
async def put_tile(
    task_id: int, extension: str, request: Request, context: Context, worker_id: RunnerDep
) -> OutputStored:
    """`extension` is the tile's format: `png`, or `exr` for a still in OpenEXR."""
    suffix = tile_suffix(f"tile.{extension}")
    try:
        stored = await receive_body(
            context, request.stream(), check=partial(verify_image_as, suffix=suffix)
        )
    except ImageError as error:
        raise _unreadable(error) from error
    return await _record_tile(
        context, stored, job_id=None, task_id=task_id, suffix=suffix, worker_id=worker_id
    )


@router.post(
    "/files/{job_id}/tile",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload the rendered tile of a tile task this runner holds, as a multipart form",
)
async def upload_tile(
    job_id: int,
    task_id: Annotated[int, Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
) -> OutputStored:
    """What workers before the `PUT` send."""
    suffix = tile_suffix(file.filename or "")
    try:
        stored = await receive_upload(context, file, check=partial(verify_image_as, suffix=suffix))
    except ImageError as error:
        raise _unreadable(error) from error
    return await _record_tile(
        context, stored, job_id=job_id, task_id=task_id, suffix=suffix, worker_id=worker_id
    )
