"""The state machine of tasks and jobs: the only code that changes a status.

Tasks::

    queued ──claim──► active ──complete──► completed
      ▲                 │ │
      │   fail (retries │ └──fail (no retries left)──► failed
      │   left), release│
      └─────────────────┘        queued/active ──cancel──► canceled

Jobs are never moved by hand except for cancel (and, later, pause): their status is
*derived* from their tasks by `refresh_job`, in the same transaction as the task change
that prompted it, so a job can never disagree with its tasks:

- canceled stays canceled;
- any task failed for good → failed (the rest of its tasks are canceled, so workers
  stop spending time on a job that cannot complete);
- every task completed → completed;
- any task active or completed → active;
- otherwise → queued.

Every function takes the caller's session and makes no commit: the caller's
`Database.transaction()` is the unit of change.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Job, Task, TaskFailure
from farmhand.shared.schemas import JobStatus, TaskStatus

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset({TaskStatus.ACTIVE, TaskStatus.CANCELED}),
    TaskStatus.ACTIVE: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.CANCELED}
    ),
    TaskStatus.COMPLETED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.FAILED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.CANCELED: frozenset({TaskStatus.QUEUED}),
}

FINISHED_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})


class TransitionError(ValueError):
    """A status change the state machine does not allow (e.g. completing a canceled task)."""


def _move_task(task: Task, new: TaskStatus) -> None:
    old = TaskStatus(task.status)
    if new not in TASK_TRANSITIONS[old]:
        raise TransitionError(f"task {task.id} cannot go from {old} to {new}")
    task.status = new.value


def derive_job_status(current: JobStatus, task_counts: Counter[TaskStatus]) -> JobStatus:
    """The job status its tasks imply; see the module docstring for the rules."""
    if current is JobStatus.CANCELED:
        return current
    if task_counts[TaskStatus.FAILED]:
        return JobStatus.FAILED
    total = sum(task_counts.values())
    if total and task_counts[TaskStatus.COMPLETED] == total:
        return JobStatus.COMPLETED
    if task_counts[TaskStatus.ACTIVE] or task_counts[TaskStatus.COMPLETED]:
        return JobStatus.ACTIVE
    return JobStatus.QUEUED


def task_counts(session: Session, job_id: int) -> Counter[TaskStatus]:
    rows = session.execute(
        select(Task.status, func.count()).where(Task.job_id == job_id).group_by(Task.status)
    )
    return Counter({TaskStatus(status): count for status, count in rows})


def refresh_job(session: Session, job: Job, now: datetime) -> JobStatus:
    """Re-derive the job's status from its tasks and apply what follows from it."""
    session.flush()
    counts = task_counts(session, job.id)
    old = JobStatus(job.status)
    new = derive_job_status(old, counts)
    if new is JobStatus.ACTIVE and job.started_at is None:
        job.started_at = now
    if new is not old:
        job.status = new.value
        if new in FINISHED_JOB_STATUSES:
            job.finished_at = now
        if new is JobStatus.FAILED:
            failed = session.scalar(
                select(Task)
                .where(Task.job_id == job.id, Task.status == TaskStatus.FAILED)
                .order_by(Task.index)
                .limit(1)
            )
            if failed is not None:
                job.status_reason = (
                    f"task {failed.index} failed {failed.failures} times: {failed.last_error}"
                )
            _cancel_unfinished_tasks(session, job.id, now)
    return new


def _cancel_unfinished_tasks(session: Session, job_id: int, now: datetime) -> None:
    for task in session.scalars(
        select(Task).where(
            Task.job_id == job_id, Task.status.in_([TaskStatus.QUEUED, TaskStatus.ACTIVE])
        )
    ):
        _move_task(task, TaskStatus.CANCELED)
        task.finished_at = now


def try_assign_task(session: Session, task_id: int, worker_id: int, now: datetime) -> Task | None:
    """Hand a queued task to a worker, if it is still queued (compare-and-set).

    The conditional UPDATE is what makes claiming atomic across threads and managers: of
    two workers racing for one task, exactly one sees a changed row.
    """
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.QUEUED)
        .values(
            status=TaskStatus.ACTIVE.value,
            worker_id=worker_id,
            attempts=Task.attempts + 1,
            started_at=now,
            progress_at=now,
            finished_at=None,
            frames_done=0,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    task = session.get(Task, task_id, populate_existing=True)
    assert task is not None
    job = session.get(Job, task.job_id)
    assert job is not None
    refresh_job(session, job, now)
    return task


def complete_task(session: Session, task: Task, now: datetime) -> JobStatus:
    _move_task(task, TaskStatus.COMPLETED)
    task.finished_at = now
    task.frames_done = len(task.frames)
    job = session.get(Job, task.job_id)
    assert job is not None
    return refresh_job(session, job, now)


def fail_task(
    session: Session,
    task: Task,
    reason: str,
    now: datetime,
    *,
    max_attempts: int,
) -> JobStatus:
    """Record a failed attempt; the task is retried until `max_attempts` failures."""
    session.add(
        TaskFailure(task_id=task.id, worker_id=task.worker_id, reason=reason, created_at=now)
    )
    task.failures += 1
    task.last_error = reason
    if task.failures >= max_attempts:
        _move_task(task, TaskStatus.FAILED)
        task.finished_at = now
    else:
        _move_task(task, TaskStatus.QUEUED)
        task.worker_id = None
    task.frames_done = 0
    job = session.get(Job, task.job_id)
    assert job is not None
    return refresh_job(session, job, now)


def requeue_task(session: Session, task: Task, reason: str, now: datetime) -> JobStatus:
    """Give an active task back to the queue without counting a failure.

    For work lost through no fault of the task: a worker shutting down, or going silent
    (its machine may have been switched off).
    """
    _move_task(task, TaskStatus.QUEUED)
    task.worker_id = None
    task.frames_done = 0
    task.last_error = reason
    job = session.get(Job, task.job_id)
    assert job is not None
    return refresh_job(session, job, now)


def cancel_job(session: Session, job: Job, now: datetime, reason: str) -> JobStatus:
    """Cancel a job and its unfinished tasks; workers learn of it on their next call."""
    if JobStatus(job.status) in FINISHED_JOB_STATUSES:
        return JobStatus(job.status)
    job.status = JobStatus.CANCELED.value
    job.status_reason = reason
    job.finished_at = now
    _cancel_unfinished_tasks(session, job.id, now)
    return JobStatus.CANCELED


def task_is_held_by(task: Task | None, worker_id: int) -> bool:
    """Whether a worker may still report on a task: it is active and assigned to it."""
    return (
        task is not None and task.status == TaskStatus.ACTIVE.value and task.worker_id == worker_id
    )
