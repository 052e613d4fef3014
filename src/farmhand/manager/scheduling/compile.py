"""Job compilers: turn a submitted job into its tasks, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from farmhand.manager.db.models import Job, Task
from farmhand.shared.frames import chunk_frames
from farmhand.shared.schemas import JobSettings, TaskStatus


def job_frames(settings: JobSettings) -> list[int]:
    return list(range(settings.frame_start, settings.frame_end + 1, settings.frame_step))


def compile_animation(
    session: Session, job: Job, settings: JobSettings, now: datetime
) -> list[Task]:
    """One `render` task per chunk of frames, numbered in frame order."""
    tasks = [
        Task(
            job_id=job.id,
            index=index,
            type="render",
            status=TaskStatus.QUEUED.value,
            frames=chunk,
        )
        for index, chunk in enumerate(chunk_frames(job_frames(settings), settings.chunk_size))
    ]
    session.add_all(tasks)
    return tasks
