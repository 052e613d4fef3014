"""Runner route for the one output of a `video` task: the video made of the job's frames.

Kept apart from the frame upload because its rules differ: no frame number, a video
container instead of an image, and the file name comes from the job's video settings.
Workers `PUT` it as the raw body; the multipart `POST` is what workers before that send.
The worker has checked the video with ffprobe; the manager checks the container's magic
bytes so a truncated or mislabelled file is refused with a 400.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, RunnerDep
from farmhand.manager.api.runner import ERRORS, _held_task
from farmhand.manager.api.runner_frames import RAW_BODY
from farmhand.manager.api.uploads import ingest, receiving, replace_job_file, store_upload
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job
from farmhand.manager.events import FarmEvent
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.shared.schemas import JobSettings, OutputStored

router = APIRouter(prefix="/api/runner", tags=["runner"])


def looks_like_video(path: Path, container: str) -> bool:
    """ISO media (mp4, mov) has an `ftyp` box first; Matroska (mkv, webm) an EBML header."""
    with path.open("rb") as handle:
        head = handle.read(12)
    if container in ("mp4", "mov"):
        return head[4:8] == b"ftyp"
    return head[:4] == b"\x1a\x45\xdf\xa3"


def _video_container(
    context: ManagerContext, task_id: int, worker_id: int, job_id: int | None
) -> tuple[int, str]:
    """The job and video container of the video task this runner holds (409 if it does
    not; 400 for any other task, or a job of `job_id`'s that asks for no video)."""
    with context.db.transaction() as session:
        task = _held_task(session, task_id, worker_id)
        job = session.get(Job, task.job_id)
        if (job_id is not None and task.job_id != job_id) or task.type != "video" or job is None:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"task {task_id} is not a video task of this job"
            )
        video = JobSettings.model_validate(job.settings).video
        if video is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"job {job.id} asks for no video")
        return job.id, video.container


async def _accept_video(
    context: ManagerContext,
    stored: StoredBlob,
    *,
    job_id: int,
    container: str,
    task_id: int,
    worker_id: int,
) -> OutputStored:
    """Record a stored upload as the job's video once its first bytes say it is one."""
    if stored.size == 0 or not await run_in_threadpool(looks_like_video, stored.path, container):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the upload is not a {container} video")

    def record() -> OutputStored:
        # One video per job: a second upload (a retried task) replaces the first atomically.
        with context.db.transaction() as session:
            task = _held_task(session, task_id, worker_id)
            row_id = replace_job_file(
                session,
                stored,
                job_id=job_id,
                kind="output",
                path=f"video.{container}",
                task_id=task.id,
                worker_id=worker_id,
            )
            return OutputStored(id=row_id, frame=None, sha256=stored.sha256, size=stored.size)

    output = await run_in_threadpool(record)
    context.events.publish(FarmEvent("output", output.id, job_id))
    return output


@router.put(
    "/tasks/{task_id}/video",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload the video of a video task this runner holds, as the raw body",
    openapi_extra=RAW_BODY,
)
async def put_video(
    task_id: int, request: Request, context: Context, worker_id: RunnerDep
) -> OutputStored:
    """Checked before a byte is read, then streamed into the store and written once (a
    video of a long shot runs to gigabytes)."""
    job_id, container = await run_in_threadpool(_video_container, context, task_id, worker_id, None)
    async with receiving(request, job=job_id, task=task_id, worker=worker_id) as body:
        stored, _ = await ingest(context, body.stream())
    return await _accept_video(
        context, stored, job_id=job_id, container=container, task_id=task_id, worker_id=worker_id
    )


@router.post(
    "/files/{job_id}/video",
    status_code=status.HTTP_201_CREATED,
    response_model=OutputStored,
    responses=ERRORS,
    summary="Upload the video of a video task this runner holds, as a multipart form",
)
async def upload_video(
    job_id: int,
    task_id: Annotated[int, Form()],
    file: UploadFile,
    context: Context,
    worker_id: RunnerDep,
) -> OutputStored:
    """What workers before the `PUT` send."""
    job_id, container = await run_in_threadpool(
        _video_container, context, task_id, worker_id, job_id
    )
    stored = await store_upload(context, file)
    return await _accept_video(
        context, stored, job_id=job_id, container=container, task_id=task_id, worker_id=worker_id
    )
