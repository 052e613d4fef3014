"""Runner route for the one output of a tile task: its tile of a tiled still.

Kept apart from the frame upload because a tile is not the frame: several tasks render
the same frame number, each a part of it, and the job's frame is made by its `merge`
task from all of them (`worker/merge.py`). A tile is stored as `tiles/0007/r1c2.png`
(frame 7, row 1, column 2, from the top left; `.exr` for a still in OpenEXR: a tile is
in the job's format, `tile_extension`, and no other); a retried tile replaces the one
before, atomically, as a frame does.
"""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, UploadFile, status
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import ERRORS, _held_task
from farmhand.manager.api.uploads import receive_upload, record_blob_in, replace_job_file
from farmhand.manager.db.models import Job
from farmhand.manager.events import FarmEvent
from farmhand.shared.frames import frame_label
from farmhand.shared.images import ImageError, verify_image_as
from farmhand.shared.schemas import JobSettings, OutputStored, TileSpec, tile_extension

router = APIRouter(prefix="/api/runner", tags=["runner"])


_TILE_SUFFIXES = (".png", ".exr")
"""What a tile may be (`tile_extension` says which for a job)."""


def tile_path(tile: TileSpec, extension: str) -> str:
    """Where a tile is stored in its job's file tree (`extension`: `tile_extension`)."""
    return f"tiles/{frame_label(tile.frame)}/r{tile.row}c{tile.column}{extension}"


@router.post(
    "/files/{job_id}/tile",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload the rendered tile of a tile task this runner holds",
)
async def upload_tile(
    job_id: int,
    task_id: Annotated[int, Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
) -> OutputStored:
    suffix = PurePosixPath(file.filename or "").suffix.lower()
    if suffix not in _TILE_SUFFIXES:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a tile is a .png or .exr file")
    # As a frame: store and verify the bytes, then look whether the task is still this
    # runner's, and the tile in its job's format, in the transaction that records them
    # (a refused file is a stray for gc).
    try:
        stored = await receive_upload(context, file, check=partial(verify_image_as, suffix=suffix))
    except ImageError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"the tile is not a readable image: {error}"
        ) from error

    def record(session: Session) -> int:
        task = _held_task(session, task_id, worker_id)
        if task.job_id != job_id or task.tile is None:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"task {task_id} is not a tile of job {job_id}"
            )
        job = session.get(Job, job_id)
        assert job is not None  # the task is one of its tasks
        wanted = tile_extension(JobSettings.model_validate(job.settings).output_format)
        if suffix != wanted:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"job {job_id} is rendered in {wanted} tiles, not {suffix}",
            )
        path = tile_path(TileSpec.model_validate(task.tile), suffix)
        record_blob_in(session, stored)
        return replace_job_file(
            session,
            stored,
            job_id=job_id,
            kind="tile",
            path=path,
            task_id=task_id,
            worker_id=worker_id,
        )

    output_id = await context.db.batched(record)
    context.events.publish(FarmEvent("output", output_id, job_id))
    return OutputStored(id=output_id, frame=None, sha256=stored.sha256, size=stored.size)
