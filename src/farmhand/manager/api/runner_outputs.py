"""Runner routes for the files that go with a rendered frame: Blender's preview of it,
and what the compositor's File Output nodes wrote for it.

Kept apart from the frame upload: a frame has one output row (`frames/0001.exr`) that
completing a task checks for, while these are extra rows of their own kinds, each under
its own name, replaced when uploaded again (a retried task):

- `preview`: `previews/0001.jpg`, a small JPEG Blender made with the scene's colour
  management, so even an EXR frame has a faithful thumbnail;
- `pass`: `passes/00-File_Output/Image0001.png`, stored with the frame number.

Two ways in, as for a frame (`runner_frames`): workers `PUT` the file as the raw body
to `/tasks/{task}/frames/{frame}/{kind}/{name}`, streamed into the store and written
once (a compositor pass can be a big multilayer EXR, which a form parser would spool to
a temporary file before it is copied); the multipart `POST /files/{job}/extra` is what
workers before it send. Both name the file with `extra_target` and record it with
`_record_extra`, so they refuse exactly the same things.
"""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import (
    ERRORS,
    OUTPUT_EXTENSIONS,
    lock_held_frame,
)
from farmhand.manager.api.runner_frames import RAW_BODY, receive_image
from farmhand.manager.api.uploads import (
    record_blob_in,
    replace_job_file,
)
from farmhand.manager.context import ManagerContext
from farmhand.manager.events import FarmEvent
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.shared.frames import frame_label
from farmhand.shared.paths import UnsafePathError, safe_relative_path
from farmhand.shared.schemas import OutputStored

router = APIRouter(prefix="/api/runner", tags=["runner"])

ExtraKind = Literal["preview", "pass"]


def extra_path(kind: str, frame: int, name: str) -> str:
    """Where a frame's extra file is stored in the job's file tree."""
    if kind == "preview":
        return f"previews/{frame_label(frame)}.jpg"
    clean = safe_relative_path(name)
    return clean if clean.startswith("passes/") else f"passes/{clean}"


def extra_target(kind: str, frame: int, name: str, file_name: str) -> tuple[str, str]:
    """Where an extra file named `name` is stored, and the extension its bytes must be
    an image of (`file_name`'s, else the stored path's); a 400 for anything else.

    Checked by both routes before a byte is stored (or read, for the `PUT`): a hostile
    name (`..`, an absolute path, NUL, over 1,024 characters) never reaches the store.
    A preview's name is checked too, though it is stored as `previews/0001.jpg`
    whatever it is called: a name is refused or taken whichever kind of file it names."""
    try:
        path = extra_path(kind, frame, safe_relative_path(name))
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    suffix = PurePosixPath(file_name or path).suffix.lower()
    if suffix not in OUTPUT_EXTENSIONS or (kind == "preview" and suffix not in (".jpg", ".jpeg")):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"a {kind} cannot be a {suffix or 'suffix-less'} file"
        )
    return path, suffix


def _not_an_image(kind: str, frame: int, reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_400_BAD_REQUEST, f"the {kind} of frame {frame} is not an image: {reason}"
    )


async def _record_extra(
    context: ManagerContext,
    stored: StoredBlob,
    *,
    job_id: int | None,
    task_id: int,
    frame: int,
    kind: str,
    path: str,
    worker_id: int,
) -> OutputStored:
    """Record a stored, verified extra file of `frame` at `path`, in place of any earlier
    one, if the task is still this runner's (409) and the frame one of its own, of job
    `job_id` if the caller named one (400).

    As a frame's upload (`runner_frames._record_frame`): one group-commit operation
    that looks and records, no look before storing (a refused file is a stray for
    garbage collection)."""

    def record(session: Session) -> tuple[int, int]:
        job = lock_held_frame(session, task_id, worker_id, job_id, frame)
        record_blob_in(session, stored)
        output_id = replace_job_file(
            session,
            stored,
            job_id=job,
            kind=kind,
            path=path,
            task_id=task_id,
            worker_id=worker_id,
            frame=frame,
        )
        return output_id, job

    output_id, job = await context.db.batched(record)
    context.events.publish(FarmEvent("output", output_id, job))
    return OutputStored(id=output_id, frame=frame, sha256=stored.sha256, size=stored.size)


@router.put(
    "/tasks/{task_id}/frames/{frame}/{kind}/{name:path}",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload a frame's preview or a File Output node's file, of a task this runner "
    "holds, as the raw body",
    openapi_extra=RAW_BODY,
)
async def put_extra(
    task_id: int,
    frame: int,
    kind: ExtraKind,
    name: str,
    request: Request,
    context: Context,
    worker_id: RunnerDep,
) -> OutputStored:
    """`name` is the file's own (`Image0001.png`, `00-File_Output/Image0001.exr`; a
    preview's only says its format): its extension says which image it must be."""
    path, suffix = extra_target(kind, frame, name, name)
    stored = await receive_image(
        context,
        request,
        suffix,
        partial(_not_an_image, kind, frame),
        task_id=task_id,
        worker_id=worker_id,
    )
    return await _record_extra(
        context,
        stored,
        job_id=None,
        task_id=task_id,
        frame=frame,
        kind=kind,
        path=path,
        worker_id=worker_id,
    )


@router.post(
    "/files/{job_id}/extra",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload a frame's preview or a File Output node's file, of a task this runner "
    "holds, as a multipart form",
)
async def upload_extra(
    job_id: int,
    task_id: Annotated[int, Form()],
    frame: Annotated[int, Form()],
    kind: Annotated[ExtraKind, Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
    name: Annotated[str, Form(max_length=1024)] = "",
) -> OutputStored:
    """What workers before the `PUT` send."""
    path, suffix = extra_target(kind, frame, name or file.filename or "", file.filename or "")
    stored = await receive_image(
        context,
        file,
        suffix,
        partial(_not_an_image, kind, frame),
        task_id=task_id,
        worker_id=worker_id,
    )
    return await _record_extra(
        context,
        stored,
        job_id=job_id,
        task_id=task_id,
        frame=frame,
        kind=kind,
        path=path,
        worker_id=worker_id,
    )
