"""Job compilers: turn a submitted job into its tasks, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from farmhand.manager.db.models import Job, Task, TaskDependency
from farmhand.shared.frames import chunk_frames
from farmhand.shared.schemas import JobSettings, TaskStatus, TileSpec


def job_frames(settings: JobSettings) -> list[int]:
    return list(range(settings.frame_start, settings.frame_end + 1, settings.frame_step))


def compile_job(session: Session, job: Job, settings: JobSettings, now: datetime) -> list[Task]:
    """Frames in tiles, or frames in chunks; then the video of the frames, if asked for,
    which waits for every task (a merged frame is a frame like any other)."""
    if settings.tiles is not None:
        tasks = compile_tiles(session, job, settings)
    else:
        tasks = compile_animation(session, job, settings, now)
    if settings.video is not None:
        tasks.append(add_follow_up(session, job, "video", tasks))
    return tasks


def compile_tiles(session: Session, job: Job, settings: JobSettings) -> list[Task]:
    """For each frame of the range, one `render` task per tile (left to right and top to
    bottom), then that frame's `merge` task.

    The tiles deliver no frame of their own (`frames` empty, so they count in no frame
    progress); a merge task delivers its frame, made of its frame's tiles only, and runs
    only once each of them is done (a failed or canceled tile cancels that merge, as for a
    video, and fails the job as any task failing for good does).

    The tasks are numbered frame by frame (frame 7's tiles, frame 7's merge, frame 9's
    tiles, ...): workers claim runnable tasks in index order, so the merge of a frame whose
    tiles are done goes before any tile of a later frame, and the first frame is finished
    (and can be looked at) as early as it can be rather than after every tile of the
    range. `chunk_size` plays no part: a tile task is one tile of one frame.
    """
    assert settings.tiles is not None
    grid = settings.tiles
    per_frame = grid.columns * grid.rows + 1  # the tiles and the merge
    stills: list[tuple[list[Task], Task]] = []
    for number, frame in enumerate(job_frames(settings)):
        base = number * per_frame
        tiles = [
            Task(
                job_id=job.id,
                index=base + row * grid.columns + column,
                type="render",
                status=TaskStatus.QUEUED.value,
                frames=[],
                tile=TileSpec(
                    frame=frame,
                    column=column,
                    row=row,
                    columns=grid.columns,
                    rows=grid.rows,
                    overlap=grid.overlap,
                ).model_dump(),
            )
            for row in range(grid.rows)
            for column in range(grid.columns)
        ]
        merge = Task(
            job_id=job.id,
            index=base + per_frame - 1,
            type="merge",
            status=TaskStatus.QUEUED.value,
            frames=[frame],
        )
        stills.append((tiles, merge))
    tasks = [task for tiles, merge in stills for task in (*tiles, merge)]
    session.add_all(tasks)
    session.flush()  # one flush for every id, not one per frame: a range can be long
    session.add_all(
        TaskDependency(task_id=merge.id, depends_on_id=tile.id)
        for tiles, merge in stills
        for tile in tiles
    )
    return tasks


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


def add_follow_up(session: Session, job: Job, task_type: str, after: list[Task]) -> Task:
    """A task that runs once every task of `after` completed (the video of the frames,
    rendered whole or merged from tiles).

    A video holds no frames of its own: it is not counted in the job's frame progress.
    The state machine cancels a follow-up when one of the tasks it waits for fails or is
    canceled. (A tiled frame's merge is made with its tiles, in `compile_tiles`.)
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
