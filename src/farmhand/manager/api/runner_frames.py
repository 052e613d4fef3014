"""Runner routes that take a rendered frame: the output a render task is completed by.

Two ways in, one record. `PUT /tasks/{task}/frames/{frame}.{ext}` takes the image as the
raw request body and streams it into the blob store, written once: a big multilayer EXR
is not spooled to a temporary file by a form parser and then copied. The multipart
`POST /files/{job}/upload` is what workers before it send, and stays for them.

Either way the bytes are verified as an image before they are placed in the store, and
one transaction records the frame in place of any earlier upload of it: the last
complete, verified upload of a frame wins, atomically (a late worker's duplicate can
never leave a half-written or mixed frame).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from sqlalchemy import bindparam, delete, insert
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import (
    ERRORS,
    OUTPUT_EXTENSIONS,
    lock_held_frame,
    log,
    refuse_late_body,
)
from farmhand.manager.api.uploads import (
    receive_body,
    receive_upload,
    receiving,
    record_blob_in,
)
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import JobFile
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.events import FarmEvent
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.manager.storage.gc import mark_used
from farmhand.shared.frames import frame_label
from farmhand.shared.images import ImageError, verify_image_as
from farmhand.shared.schemas import OutputStored

router = APIRouter(prefix="/api/runner", tags=["runner"])

_FORGET_FRAME = Prepared(
    delete(JobFile).where(
        JobFile.job_id == bindparam("job"),
        JobFile.kind == "output",
        JobFile.frame == bindparam("frame"),
    )
)
_RECORD_FRAME = Prepared(
    insert(JobFile).returning(JobFile.id),
    columns=(
        "job_id",
        "kind",
        "path",
        "sha256",
        "size",
        "frame",
        "task_id",
        "worker_id",
        "created_at",
    ),
)
_FRAME_FILE = re.compile(r"(-?\d{1,9})(\.[A-Za-z0-9]{1,8})")
"""`7.png`, `-3.exr`: a frame number and the output's extension."""
RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def output_suffix(name: str) -> str:
    """The stored extension of a frame file named `name`; a 400 for anything but an image."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in OUTPUT_EXTENSIONS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"output file must be one of {sorted(OUTPUT_EXTENSIONS)}, "
            f"not {suffix or 'no suffix'!r}",
        )
    return suffix


async def receive_image(
    context: ManagerContext,
    source: Request | UploadFile,
    suffix: str,
    unreadable: Callable[[str], HTTPException],
    *,
    task_id: int,
    worker_id: int,
) -> StoredBlob:
    """A frame, pass, preview or tile in the store, verified as an image of `suffix`
    before it is placed; `unreadable` makes the 400 for bytes that are not one, from
    why they are not (without the file's path).

    From the raw body of a `PUT` (what workers send: a big body of a runner that no
    longer holds the task is refused first, `refuse_late_body`) or from the multipart
    form of older workers. Every image upload route takes its bytes through here, so
    this is where the manager's own path (its temporary file in the blob store) is kept
    out of the answer and goes to its log instead."""
    check = partial(verify_image_as, suffix=suffix)
    try:
        if isinstance(source, Request):
            await refuse_late_body(source, context, task_id, worker_id)
            async with receiving(source, task=task_id, worker=worker_id) as body:
                return await receive_body(context, body.stream(), check=check)
        return await receive_upload(context, source, check=check)
    except ImageError as error:
        log.info("image upload refused", task=task_id, worker=worker_id, error=str(error))
        raise unreadable(error.reason) from error


def _unreadable(frame: int, reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_400_BAD_REQUEST, f"frame {frame} is not a readable image: {reason}"
    )


async def _record_frame(
    context: ManagerContext,
    stored: StoredBlob,
    *,
    job_id: int | None,
    task_id: int,
    frame: int,
    suffix: str,
    worker_id: int,
) -> OutputStored:
    """Record a stored, verified frame as the output of `frame`, replacing any earlier one.

    No look before storing: a look would spare only a late worker's bytes, at the cost of
    a group-commit round trip on every frame (6 % of the manager's CPU in the load
    benchmark). This looks, and refuses with a 409; garbage collection removes the blob
    it never recorded (a stray, storage/gc.py)."""
    now = utcnow()
    row = {
        "kind": "output",
        "path": f"frames/{frame_label(frame)}{suffix}",
        "sha256": stored.sha256,
        "size": stored.size,
        "frame": frame,
        "task_id": task_id,
        "worker_id": worker_id,
        "created_at": now,
    }

    def record(session: Session) -> tuple[int, int]:
        job = lock_held_frame(session, task_id, worker_id, job_id, frame)
        if not record_blob_in(session, stored, used_at=now):
            mark_used(session, [stored.sha256], now)  # stored before: mark it if it was not
        connection = session.connection()
        _FORGET_FRAME.execute(connection, {"job": job, "frame": frame})
        output_id = _RECORD_FRAME.scalar(connection, {**row, "job_id": job})
        assert output_id is not None
        return output_id, job

    output_id, job = await context.db.batched(record)
    context.events.publish(FarmEvent("output", output_id, job))
    return OutputStored(id=output_id, frame=frame, sha256=stored.sha256, size=stored.size)


@router.put(
    "/tasks/{task_id}/frames/{file_name}",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload one rendered frame of a task this runner holds, as the raw body",
    openapi_extra=RAW_BODY,
)
async def put_frame(
    task_id: int, file_name: str, request: Request, context: Context, worker_id: RunnerDep
) -> OutputStored:
    """`file_name` is the frame number and the image's extension: `7.png`, `-3.exr`."""
    parts = _FRAME_FILE.fullmatch(file_name)
    if parts is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{file_name[:64]!r} is not a frame file name such as '7.png' or '-3.exr'",
        )
    frame, suffix = int(parts[1]), output_suffix(file_name)
    stored = await receive_image(
        context,
        request,
        suffix,
        partial(_unreadable, frame),
        task_id=task_id,
        worker_id=worker_id,
    )
    return await _record_frame(
        context,
        stored,
        job_id=None,
        task_id=task_id,
        frame=frame,
        suffix=suffix,
        worker_id=worker_id,
    )


@router.post(
    "/files/{job_id}/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload one rendered frame of a task this runner holds, as a multipart form",
)
async def upload_output(
    job_id: int,
    task_id: Annotated[int, Form()],
    frame: Annotated[int, Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
) -> OutputStored:
    suffix = output_suffix(file.filename or "")
    stored = await receive_image(
        context, file, suffix, partial(_unreadable, frame), task_id=task_id, worker_id=worker_id
    )
    return await _record_frame(
        context,
        stored,
        job_id=job_id,
        task_id=task_id,
        frame=frame,
        suffix=suffix,
        worker_id=worker_id,
    )
