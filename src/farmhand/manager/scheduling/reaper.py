"""Find workers that went silent and give their tasks back to the queue.

A worker is offline when its last heartbeat is older than the heartbeat timeout. Time
the manager itself was down does not count against workers: the clock starts no earlier
than the manager's own start, so a manager restart does not requeue every running task.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Task, Worker
from farmhand.manager.scheduling.state import requeue_task
from farmhand.shared.schemas import TaskStatus, WorkerStatus

log = structlog.get_logger(__name__)


def reap_silent_workers(
    session: Session, now: datetime, timeout: float, manager_started: datetime
) -> list[Task]:
    """Mark silent workers offline and requeue their tasks; returns the requeued tasks."""
    cutoff = now - timedelta(seconds=timeout)
    if manager_started > cutoff:
        return []
    silent = session.scalars(
        select(Worker).where(
            Worker.status != WorkerStatus.OFFLINE.value,
            or_(Worker.last_heartbeat.is_(None), Worker.last_heartbeat < cutoff),
        )
    ).all()
    requeued: list[Task] = []
    for worker in silent:
        worker.status = WorkerStatus.OFFLINE.value
        log.warning("worker offline", worker=worker.name, worker_id=worker.id)
        tasks = session.scalars(
            select(Task).where(Task.worker_id == worker.id, Task.status == TaskStatus.ACTIVE.value)
        ).all()
        for task in tasks:
            requeue_task(session, task, f"worker {worker.name} stopped responding", now)
            requeued.append(task)
            log.warning(
                "task requeued",
                job_id=task.job_id,
                task_id=task.id,
                worker=worker.name,
                reason="heartbeat timeout",
            )
    return requeued
