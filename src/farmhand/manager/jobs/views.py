"""Database rows → API models, with the derived numbers (progress, ETA) computed here once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only

from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Job, JobFile, Task, User, Worker
from farmhand.manager.scheduling.claim import DEPENDENCIES_MET
from farmhand.manager.scheduling.eligibility import WaitReasons
from farmhand.shared.schemas import (
    JobDetail,
    JobFileKind,
    JobSettings,
    JobStatus,
    JobSummary,
    TaskStatus,
    TaskSummary,
    TileSpec,
)
from farmhand.shared.schemas import JobFile as JobFileModel
from farmhand.shared.settings_text import settings_line


class TaskFacts(Protocol):
    """What a job's summary reads of each task: a `Task`, or just these columns.

    A job's line in the list and its page without tasks need these few columns of each
    task, not the tasks: for a 10,000-task job, building 10,000 ORM objects was most of
    the answer's time."""

    @property
    def job_id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def frames(self) -> list[int]: ...
    @property
    def frames_done(self) -> int: ...
    @property
    def worker_id(self) -> int | None: ...
    @property
    def render_seconds(self) -> float: ...
    @property
    def peak_memory_bytes(self) -> int | None: ...
    @property
    def tile(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class _TaskRow:
    """A task's `TaskFacts` read as plain columns, without an ORM object."""

    job_id: int
    status: str
    type: str
    frames: list[int]
    frames_done: int
    worker_id: int | None
    render_seconds: float
    peak_memory_bytes: int | None
    tile: dict[str, Any] | None


_FACT_COLUMNS = [getattr(Task, field.name) for field in fields(_TaskRow)]


def _task_frames_done(task: TaskFacts) -> int:
    return len(task.frames) if task.status == TaskStatus.COMPLETED.value else task.frames_done


def _frames_done(tasks: Sequence[TaskFacts]) -> int:
    return sum(_task_frames_done(task) for task in tasks)


def _frames_total(tasks: Sequence[TaskFacts]) -> int:
    return sum(len(task.frames) for task in tasks)


def _units(task: TaskFacts) -> int:
    """What a task delivers, for progress: its frames, or its one tile of a still."""
    return len(task.frames) or (1 if task.tile else 0)


def _job_progress(tasks: Sequence[TaskFacts]) -> float:
    """0-100: frames delivered, and the tiles of a tiled still (whose one frame arrives
    only when its tiles are merged, at the very end)."""
    total = sum(_units(task) for task in tasks)
    done = sum(
        _units(task) if task.status == TaskStatus.COMPLETED.value else task.frames_done
        for task in tasks
    )
    return round(100.0 * done / total, 2) if total else 0.0


def job_summary(
    job: Job, owner: str, tasks: Sequence[TaskFacts], workers: dict[int, str], now: datetime
) -> JobSummary:
    """The job's line in a list, with everything its page shows at a glance (the workers
    on it, the time left), from its tasks and the names of the workers (`workers`, by id)
    holding them: one function for the list and the detail, so the two agree."""
    done, total = _frames_done(tasks), _frames_total(tasks)
    return JobSummary(
        id=job.id,
        name=job.name,
        owner=owner,
        status=JobStatus(job.status),
        priority=job.priority,
        progress=_job_progress(tasks),
        frames_done=done,
        frames_total=total,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        status_reason=job.status_reason,
        workers=sorted(
            {
                workers[t.worker_id]
                for t in tasks
                if t.status == TaskStatus.ACTIVE.value and t.worker_id in workers
            }
        ),
        eta_seconds=_eta(job, tasks, done, total, now)[1],
    )


def _eta(
    job: Job, tasks: Sequence[TaskFacts], done: int, total: int, now: datetime
) -> tuple[float | None, float | None]:
    """Seconds elapsed and seconds left, for the list and the detail alike. Left: from
    what finished frames took (Blender's time), shared among the workers on the job now;
    until a frame reported its time, from the elapsed time per frame done.

    An unfinished job with no task running (paused, or queued with no worker that may
    take it) has no time left to tell: nothing brings it nearer its end, so a number
    would stand still while the elapsed time rose (a paused job showed "47s" for
    minutes). It is None then, shown as a dash."""
    elapsed: float | None = None
    eta: float | None = None
    if job.started_at is not None:
        elapsed = ((job.finished_at or now) - job.started_at).total_seconds()
    if job.finished_at is not None:
        return elapsed, 0.0 if elapsed is not None else None
    busy = sum(1 for t in tasks if t.status == TaskStatus.ACTIVE.value)
    if not busy:
        return elapsed, None
    per_frame = _seconds_per_frame(tasks)
    if per_frame is not None:
        eta = round(per_frame * (total - done) / busy, 1)
    elif elapsed is not None and done:
        eta = elapsed / done * (total - done)
    return elapsed, eta


def file_model(row: JobFile) -> JobFileModel:
    kind: JobFileKind = "input"
    if row.kind in ("output", "preview", "pass", "tile"):
        kind = row.kind  # type: ignore[assignment]
    return JobFileModel(
        id=row.id,
        kind=kind,
        path=row.path,
        size=row.size,
        sha256=row.sha256,
        frame=row.frame,
        task_id=row.task_id,
    )


def _last_frame(session: Session, job: Job) -> tuple[JobFileModel | None, JobFileModel | None]:
    """The frame rendered last, and Blender's preview of it if there is one."""
    last = session.scalars(
        select(JobFile)
        .where(JobFile.job_id == job.id, JobFile.kind == "output", JobFile.frame.is_not(None))
        .order_by(JobFile.created_at.desc(), JobFile.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return None, None
    preview = session.scalars(
        select(JobFile)
        .where(JobFile.job_id == job.id, JobFile.kind == "preview", JobFile.frame == last.frame)
        .limit(1)
    ).first()
    return file_model(last), file_model(preview) if preview is not None else None


def _stalled(summary: JobSummary, tasks: Sequence[TaskFacts]) -> bool:
    """Runnable, with queued tasks, none running, and no other reason given: maybe no
    worker fits it (`WaitReasons` says which)."""
    statuses = {t.status for t in tasks}
    return (
        summary.status_reason is None
        and summary.status in (JobStatus.QUEUED, JobStatus.ACTIVE)
        and TaskStatus.QUEUED.value in statuses
        and TaskStatus.ACTIVE.value not in statuses
    )


def _ready_types(session: Session, job_ids: list[int]) -> dict[int, list[str]]:
    """The task types of each job's queued tasks that may start now (all they wait for
    completed), in the order of their first task: one query for a page of jobs."""
    ready: dict[int, list[str]] = {job_id: [] for job_id in job_ids}
    for job_id, task_type in session.execute(
        select(Task.job_id, Task.type)
        .where(Task.job_id.in_(job_ids), Task.status == TaskStatus.QUEUED.value, DEPENDENCIES_MET)
        .group_by(Task.job_id, Task.type)
        .order_by(Task.job_id, func.min(Task.index))
    ):
        ready[job_id].append(task_type)
    return ready


def _wait_reason(job: Job, ready: list[str], waiting: WaitReasons) -> str | None:
    """Why the job's queued tasks that may start now (`_ready_types`) are not taken:
    asked of each of their task types (a video waits for a worker with ffmpeg, a merge
    for one that merges), and nothing to say if some worker may take one of them. Asked
    of the first queued task alone, a tiled job whose next frame's tiles any render
    worker could take said it waited for a merge worker."""
    reasons = [waiting.reason(job, task_type) for task_type in ready]
    if not reasons or None in reasons:
        return None
    return reasons[0]


def _task_progress(task: Task) -> float:
    """0-100 for one task: its finished frames (or tile) plus the sampled part of the
    current one."""
    frames = _units(task)
    if task.status == TaskStatus.COMPLETED.value or not frames:
        return 100.0 if frames else 0.0
    done = float(task.frames_done)
    if task.status == TaskStatus.ACTIVE.value and task.sample and task.samples_total:
        done += min(1.0, task.sample / task.samples_total)
    return round(100.0 * min(done, frames) / frames, 2)


def _seconds_per_frame(tasks: Sequence[TaskFacts]) -> float | None:
    """Mean Blender seconds of the finished frames whose time a worker reported. A tiled
    frame took what its tiles took together (its merge runs no Blender), counted once
    the frame is merged: a tile task finishes no frame of its own.

    Only completed and running tasks: one that ended unfinished counts the frames it
    stored (`state._frames_kept`), which its last report's seconds need not cover."""
    timed = [
        t
        for t in tasks
        if t.render_seconds
        and _task_frames_done(t)
        and t.status in (TaskStatus.COMPLETED.value, TaskStatus.ACTIVE.value)
    ]
    frames = sum(_task_frames_done(t) for t in timed)
    seconds = sum(t.render_seconds for t in timed)
    merged = {
        frame
        for t in tasks
        if t.type == "merge" and t.status == TaskStatus.COMPLETED.value
        for frame in t.frames
    }
    tiles = [t for t in tasks if t.tile and t.render_seconds and t.tile["frame"] in merged]
    frames += len({t.tile["frame"] for t in tiles if t.tile})
    seconds += sum(t.render_seconds for t in tiles)
    return seconds / frames if frames else None


def _task_eta(task: Task, per_frame: float | None) -> float | None:
    if task.status == TaskStatus.COMPLETED.value:
        return 0.0
    if task.status != TaskStatus.ACTIVE.value:
        return None
    if task.tile:  # one tile of a frame: its share of what a whole frame takes
        own = per_frame / (task.tile["columns"] * task.tile["rows"]) if per_frame else None
    else:
        own = task.render_seconds / task.frames_done if task.frames_done else per_frame
    if own is None:
        return None
    units = _units(task)
    return round(own * (units - _task_progress(task) / 100 * units), 1)


def task_error(task: Task) -> str | None:
    """The error a task's row shows: none once it completed.

    `tasks.last_error` keeps the last thing that went wrong, also after a later attempt
    succeeds (a worker that stopped responding, a failed first try). Shown beside
    "completed", in `farmhand job` and on the job page, it read as the completion's own
    error; it is not one, and the task's attempts still count what it took. Any other
    task shows it: queued, failed or canceled it says why the task is not done; running
    again, why its earlier attempt did not finish.
    """
    return None if task.status == TaskStatus.COMPLETED.value else task.last_error


def _worker_names(session: Session, tasks: Iterable[TaskFacts]) -> dict[int, str]:
    """Names of the workers holding these tasks, by worker id: one query."""
    ids = {t.worker_id for t in tasks if t.worker_id}
    if not ids:
        return {}
    return dict(session.execute(select(Worker.id, Worker.name).where(Worker.id.in_(ids))).all())


def task_summary(task: Task, workers: dict[int, str], per_frame: float | None) -> TaskSummary:
    """One task's row; `per_frame` is its job's `_seconds_per_frame`, for its time left."""
    active = task.status == TaskStatus.ACTIVE.value
    return TaskSummary(
        id=task.id,
        index=task.index,
        type=task.type,
        status=TaskStatus(task.status),
        frames=task.frames,
        tile=TileSpec.model_validate(task.tile) if task.tile else None,
        frames_done=_task_frames_done(task),
        attempts=task.attempts,
        failures=task.failures,
        worker=workers.get(task.worker_id) if task.worker_id else None,
        started_at=task.started_at,
        finished_at=task.finished_at,
        last_error=task_error(task),
        progress=_task_progress(task),
        frame=task.frame if active else None,
        sample=task.sample if active else None,
        samples_total=task.samples_total if active else None,
        render_seconds=round(task.render_seconds or 0.0, 3),
        peak_memory_bytes=task.peak_memory_bytes,
        eta_seconds=_task_eta(task, per_frame),
    )


def job_detail(session: Session, job: Job, *, with_tasks: bool = True) -> JobDetail:
    """The job's page: its summary, settings and numbers, and (`with_tasks`) every task.

    Without the tasks the answer is the same size for a job of 10,000 tasks as for one
    of ten; `task_page` gives them a page at a time."""
    full = (
        session.scalars(select(Task).where(Task.job_id == job.id).order_by(Task.index)).all()
        if with_tasks
        else []
    )
    tasks: Sequence[TaskFacts] = full if with_tasks else _task_facts(session, [job.id])
    owner = session.get(User, job.owner_id)
    workers = _worker_names(session, tasks)
    now = utcnow()
    summary = job_summary(job, owner.name if owner else "?", tasks, workers, now)
    elapsed, _ = _eta(job, tasks, summary.frames_done, summary.frames_total, now)
    per_frame = _seconds_per_frame(tasks)
    if _stalled(summary, tasks):
        ready = _ready_types(session, [job.id])[job.id]
        summary.status_reason = _wait_reason(job, ready, WaitReasons.of_farm(session))
    peaks = [t.peak_memory_bytes for t in tasks if t.peak_memory_bytes]
    counts = Counter(task.status for task in tasks)
    last_frame, last_preview = _last_frame(session, job)
    settings = JobSettings.model_validate(job.settings)
    return JobDetail(
        **summary.model_dump(),
        seconds_per_frame=round(per_frame, 3) if per_frame is not None else None,
        peak_memory_bytes=max(peaks) if peaks else None,
        blender_saved=job.blender_saved,
        blender_pinned=job.blender_pinned,
        last_frame=last_frame,
        last_preview=last_preview,
        settings=settings,
        settings_line=settings_line(settings),
        main_file=job.main_file,
        missing_files=job.missing_files or [],
        missing_count=job.missing_count or 0,
        tasks=[task_summary(task, workers, per_frame) for task in full],
        task_counts={state: counts[state.value] for state in TaskStatus},
        elapsed_seconds=elapsed,
    )


def task_page(
    session: Session,
    job: Job,
    statuses: Collection[TaskStatus],
    offset: int,
    limit: int,
) -> tuple[int, list[TaskSummary]]:
    """How many of the job's tasks are in `statuses` (all if empty), and the page of them
    from `offset`, in index order, each as the detail shows it."""
    where = [Task.job_id == job.id]
    if statuses:
        where.append(Task.status.in_([s.value for s in statuses]))
    total = session.scalar(select(func.count()).select_from(Task).where(*where)) or 0
    page = session.scalars(
        select(Task).where(*where).order_by(Task.index).offset(offset).limit(limit)
    ).all()
    per_frame = None
    if any(task.status == TaskStatus.ACTIVE.value for task in page):
        # A running task's time left needs the job's mean seconds a frame, from all its
        # tasks: only the columns that takes (the page's rows are already whole).
        timing = session.scalars(
            select(Task)
            .where(Task.job_id == job.id)
            .options(
                load_only(
                    Task.status,
                    Task.type,
                    Task.frames,
                    Task.frames_done,
                    Task.render_seconds,
                    Task.tile,
                )
            )
        ).all()
        per_frame = _seconds_per_frame(timing)
    workers = _worker_names(session, page)
    return total, [task_summary(task, workers, per_frame) for task in page]


def _task_facts(session: Session, job_ids: Collection[int]) -> list[_TaskRow]:
    """The jobs' tasks as `_TaskRow`s, in index order, read through Core: an ORM row or
    `Row` costs several times as much per task to build and to read."""
    rows = session.connection().execute(
        select(*_FACT_COLUMNS).where(Task.job_id.in_(job_ids)).order_by(Task.job_id, Task.index)
    )
    return [_TaskRow(*row) for row in rows]


def job_summaries(session: Session, jobs: Sequence[Job]) -> list[JobSummary]:
    """The jobs' list lines, in a fixed number of queries however many jobs there are:
    their tasks, their owners, the workers on them, and (if one waits) the workers and
    the task types that may start (`_ready_types`)."""
    ids = [job.id for job in jobs]
    tasks_by_job: dict[int, list[TaskFacts]] = {job_id: [] for job_id in ids}
    tasks = _task_facts(session, ids)
    for task in tasks:
        tasks_by_job[task.job_id].append(task)
    owners = {user.id: user.name for user in session.scalars(select(User))}
    workers = _worker_names(session, (t for t in tasks if t.status == TaskStatus.ACTIVE.value))
    now = utcnow()
    summaries = [
        job_summary(job, owners.get(job.owner_id, "?"), tasks_by_job[job.id], workers, now)
        for job in jobs
    ]
    stalled = [
        (job, summary)
        for job, summary in zip(jobs, summaries, strict=True)
        if _stalled(summary, tasks_by_job[job.id])
    ]
    if stalled:
        # One look at the workers for the whole list.
        waiting = WaitReasons.of_farm(session)
        ready = _ready_types(session, [job.id for job, _ in stalled])
        for job, summary in stalled:
            summary.status_reason = _wait_reason(job, ready[job.id], waiting)
    return summaries
