"""Job compilers: turn a submitted job into its tasks, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from farmhand.manager.db.models import Job, Task, TaskDependency
from farmhand.shared.frames import chunk_frames
from farmhand.shared.schemas import JobSettings, TaskStatus


def job_frames(settings: JobSettings) -> list[int]:
    return list(range(settings.frame_start, settings.frame_end + 1, settings.frame_step))


def compile_animation(
    session: Session, job: Job, settings: JobSettings, now: datetime
) -> list[Task]:
    """One `render` task per chunk of frames, numbered in frame order; then the follow-ups."""
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
    if settings.video is not None:
        tasks.append(add_follow_up(session, job, "video", tasks))
    return tasks


def add_follow_up(session: Session, job: Job, task_type: str, after: list[Task]) -> Task:
    """A task that runs once every task of `after` completed (a video of the frames).

    It holds no frames of its own: it is not counted in the job's frame progress, and the
    state machine cancels it when one of the tasks it waits for fails or is canceled.
    """
    session.flush()  # the tasks it waits for need their ids
    follow_up = Task(
        job_id=job.id,
        index=max((task.index for task in after), default=-1) + 1,
        type=task_type,
        status=TaskStatus.QUEUED.value,
        frames=[],
    )
    session.add(follow_up)
    session.flush()
    session.add_all(TaskDependency(task_id=follow_up.id, depends_on_id=task.id) for task in after)
    return follow_up
