"""Choosing the task a worker gets.

Order: highest job priority, then the oldest job, then the lowest task index. The
choice is made by a read followed by the state machine's compare-and-set; if another
worker won the race for a candidate, the next candidate is tried. No lock outside the
database is involved, so several managers can share one database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Job, Task, Worker
from farmhand.manager.scheduling.state import try_assign_task
from farmhand.shared.schemas import JobStatus, TaskStatus, WorkerStatus

RUNNABLE_JOB_STATUSES = (JobStatus.QUEUED.value, JobStatus.ACTIVE.value)
CANDIDATES = 8


def claim_task(session: Session, worker: Worker, now: datetime) -> Task | None:
    if worker.status not in (WorkerStatus.IDLE.value, WorkerStatus.BUSY.value):
        return None
    task_types = worker.capabilities.get("task_types") or ["render"]
    candidates = session.scalars(
        select(Task.id)
        .join(Job, Job.id == Task.job_id)
        .where(
            Task.status == TaskStatus.QUEUED.value,
            Job.status.in_(RUNNABLE_JOB_STATUSES),
            Task.type.in_(task_types),
        )
        .order_by(Job.priority.desc(), Job.created_at, Job.id, Task.index)
        .limit(CANDIDATES)
    ).all()
    for task_id in candidates:
        task = try_assign_task(session, task_id, worker.id, now)
        if task is not None:
            return task
    return None
