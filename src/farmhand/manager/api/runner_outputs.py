"""Runner route for the files that go with a rendered frame: Blender's preview of it, and
what the compositor's File Output nodes wrote for it.

Kept apart from the frame upload: a frame has one output row (`frames/0001.exr`) that
completing a task checks for, while these are extra rows of their own kinds, each under
its own name, replaced when uploaded again (a retried task):

- `preview`: `previews/0001.jpg`, a small JPEG Blender made with the scene's colour
  management, so even an EXR frame has a faithful thumbnail;
- `pass`: `passes/00-File_Output/Image0001.png`, stored with the frame number.
"""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, UploadFile, status
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import ERRORS, OUTPUT_EXTENSIONS, lock_held_frame
from farmhand.manager.api.uploads import receive_upload, record_blob_in, replace_job_file
from farmhand.manager.events import FarmEvent
from farmhand.shared.frames import frame_label
from farmhand.shared.images import ImageError, verify_image_as
from farmhand.shared.paths import UnsafePathError, safe_relative_path
from farmhand.shared.schemas import OutputStored

router = APIRouter(prefix="/api/runner", tags=["runner"])


def extra_path(kind: str, frame: int, name: str) -> str:
    """Where a frame's extra file is stored in the job's file tree."""
    if kind == "preview":
        return f"previews/{frame_label(frame)}.jpg"
    clean = safe_relative_path(name)
    return clean if clean.startswith("passes/") else f"passes/{clean}"


@router.post(
    "/files/{job_id}/extra",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload a frame's preview or a File Output node's file, of a task this runner holds",
)
async def upload_extra(
    job_id: int,
    task_id: Annotated[int, Form()],
    frame: Annotated[int, Form()],
    kind: Annotated[Literal["preview", "pass"], Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
    name: Annotated[str, Form(max_length=1024)] = "",
) -> OutputStored:
    try:
        path = extra_path(kind, frame, name or file.filename or "")
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    suffix = PurePosixPath(file.filename or path).suffix.lower()
    if suffix not in OUTPUT_EXTENSIONS or (kind == "preview" and suffix not in (".jpg", ".jpeg")):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"a {kind} cannot be a {suffix or 'suffix-less'} file"
        )

    # As a frame's upload (`runner_frames`): one thread trip to store and verify
    # the bytes, then one group-commit operation that looks whether the task is still
    # this runner's and records them (or refuses; garbage collection takes the file).
    try:
        stored = await receive_upload(context, file, check=partial(verify_image_as, suffix=suffix))
    except ImageError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"the {kind} of frame {frame} is not an image: {error}"
        ) from error

    def record(session: Session) -> int:
        lock_held_frame(session, task_id, worker_id, job_id, frame)
        record_blob_in(session, stored)
        return replace_job_file(
            session,
            stored,
            job_id=job_id,
            kind=kind,
            path=path,
            task_id=task_id,
            worker_id=worker_id,
            frame=frame,
        )

    output_id = await context.db.batched(record)
    context.events.publish(FarmEvent("output", output_id, job_id))
    return OutputStored(id=output_id, frame=frame, sha256=stored.sha256, size=stored.size)
