"""Runner route for the one output of a tile task: its tile of a tiled still.

Kept apart from the frame upload because a tile is not the frame: several tasks render
the same frame number, each a part of it, and the job's frame is made by its `merge`
task from all of them (`worker/merge.py`). A tile is stored as `tiles/0007/r1c2.png`
(frame 7, row 1, column 2, from the top left; `.exr` for a still in OpenEXR). A tile is
in a format its job allows (`tile_extensions`): the job's, or for a job keeping the
.blend's format, PNG or OpenEXR, as its scene writes, but the same as the still's tiles
recorded before it, so the merge gets one format. A retried tile replaces the one before,
atomically, as a frame does.

Two ways in, as for a frame (`runner_frames`): workers `PUT` the tile as the raw body to
`/tasks/{task}/tile.png` (or `.exr`), streamed into the store and written once (an EXR
tile of a big still is no small file); the multipart `POST /files/{job}/tile` is what
workers before it send. Both check the extension with `tile_suffix` and record the tile
with `_record_tile`, so they refuse exactly the same things.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import ERRORS, _held_task, tile_folder
from farmhand.manager.api.runner_frames import RAW_BODY, receive_image
from farmhand.manager.api.uploads import (
    record_blob_in,
    replace_job_file,
)
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job, JobFile
from farmhand.manager.events import FarmEvent
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.shared.schemas import (
    TILE_SUFFIXES,
    JobSettings,
    OutputStored,
    TileSpec,
    tile_extensions,
)

router = APIRouter(prefix="/api/runner", tags=["runner"])


def tile_path(tile: TileSpec, extension: str) -> str:
    """Where a tile is stored in its job's file tree (`extension`: one of `tile_extensions`)."""
    return f"{tile_folder(tile.frame)}r{tile.row}c{tile.column}{extension}"


def tile_suffix(file_name: str) -> str:
    """The extension of a tile file named `file_name`; a 400 for anything but a tile's,
    before a byte is stored (or read, for the `PUT`). Whether its job allows it is looked
    at with the task, in `_record_tile`."""
    suffix = PurePosixPath(file_name).suffix.lower()
    if suffix not in TILE_SUFFIXES:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a tile is a .png or .exr file")
    return suffix


def _unreadable(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"the tile is not a readable image: {reason}")


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
    tile task of job `job_id` if the caller named one (400), and the tile in a format its
    job allows and its still's other tiles are in (400, `_check_format`), and records it;
    a refused file is a stray for garbage collection."""

    def record(session: Session) -> tuple[int, int]:
        task = _held_task(session, task_id, worker_id)
        if (job_id is not None and task.job_id != job_id) or task.tile is None:
            of_job = f" of job {job_id}" if job_id is not None else ""
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"task {task_id} is not a tile{of_job}"
            )
        job = session.get(Job, task.job_id)
        assert job is not None  # the task is one of its tasks
        tile = TileSpec.model_validate(task.tile)
        _check_format(session, job, tile, suffix)
        path = tile_path(tile, suffix)
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


def _check_format(session: Session, job: Job, tile: TileSpec, suffix: str) -> None:
    """A 400 unless a tile in `suffix` may be recorded for `job`'s still.

    A job in PNG or OpenEXR allows that one format (`tile_extensions`). A job keeping the
    .blend's format allows either, since the manager cannot see what the scene writes:
    the driver renders EXR tiles for a scene in OpenEXR and PNG for any other, so every
    tile of one still comes in one format, and a tile in another (a worker from before
    EXR tiles, which forced PNG) is refused rather than leaving the merge tiles it
    cannot put together. Looked at in the transaction that records the tile, so two
    tiles racing in different formats cannot both get in."""
    allowed = tile_extensions(JobSettings.model_validate(job.settings).output_format)
    if suffix not in allowed:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"job {job.id} is rendered in {' or '.join(sorted(allowed))} tiles, not {suffix}",
        )
    if len(allowed) == 1:
        return
    folder = tile_folder(tile.frame)
    # This still's tiles only: a tiled range holds thousands of other frames' tiles.
    recorded = session.scalars(
        select(JobFile.path).where(
            JobFile.job_id == job.id,
            JobFile.kind == "tile",
            JobFile.path.startswith(folder, autoescape=True),
        )
    )
    for path in recorded:
        other = PurePosixPath(path).suffix.lower()
        if other != suffix:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"job {job.id} keeps the .blend's format and its still already has "
                f"{other} tiles ({path}): every tile of a still must be in one format "
                f"to be merged, so a tile of it is {other}, not {suffix}",
            )


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
    stored = await receive_image(
        context, request, suffix, _unreadable, task_id=task_id, worker_id=worker_id
    )
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
    stored = await receive_image(
        context, file, suffix, _unreadable, task_id=task_id, worker_id=worker_id
    )
    return await _record_tile(
        context, stored, job_id=job_id, task_id=task_id, suffix=suffix, worker_id=worker_id
    )
