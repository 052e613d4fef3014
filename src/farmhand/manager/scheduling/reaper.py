"""Periodic housekeeping of the farm's state, run by every manager every few seconds.

- Workers silent for longer than the heartbeat timeout are offline and their tasks go
  back to the queue. Time the manager itself was down does not count against them: the
  clock starts no earlier than the manager's own start, so a manager restart does not
  requeue every running task.
- Tasks with no word from their worker for `task_timeout` fail (and are retried,
  elsewhere if possible): Blender hangs, and a hung Blender still heartbeats.
- Sleep schedules put workers to sleep and wake them.

All of it is idempotent, so several managers sharing a database may run it at once.
Each of the three runs in a savepoint of its own: one that fails (a row it cannot read)
is logged and rolled back alone, and the others still happen. A farm whose heartbeat
timeouts stopped because of one worker's sleep schedule would keep silent workers'
tasks forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Task, Worker
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.state import fail_task, requeue_task
from farmhand.manager.scheduling.workers import update_sleep
from farmhand.shared.schemas import TaskStatus, WorkerStatus

log = structlog.get_logger(__name__)


@dataclass
class ReapReport:
    jobs: set[int] = field(default_factory=set)
    """Jobs with a task that went back to the queue or failed."""
    workers: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.workers)


def reap_silent_workers(
    session: Session,
    now: datetime,
    timeout: float,
    manager_started: datetime,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = now - timedelta(seconds=timeout)
    if manager_started > cutoff:
        return
    silent = session.scalars(
        select(Worker).where(
            Worker.status != WorkerStatus.OFFLINE.value,
            or_(Worker.last_heartbeat.is_(None), Worker.last_heartbeat < cutoff),
        )
    ).all()
    for worker in silent:
        worker.status = WorkerStatus.OFFLINE.value
        report.workers.add(worker.id)
        log.warning("worker offline", worker=worker.name, worker_id=worker.id)
        tasks = session.scalars(
            select(Task).where(Task.worker_id == worker.id, Task.status == TaskStatus.ACTIVE.value)
        ).all()
        for task in tasks:
            requeue_task(session, task, f"worker {worker.name} stopped responding", now, policy)
            report.jobs.add(task.job_id)
            log.warning(
                "task requeued",
                job_id=task.job_id,
                task_id=task.id,
                worker=worker.name,
                reason="heartbeat timeout",
            )


def readable_duration(seconds: float) -> str:
    """`25 s`, `10 min`, `1 h 30 min`: a timeout as a person reads it in a task's reason
    (under a minute to a tenth of a second, above it to the second)."""
    if round(seconds, 1) < 60:
        return f"{round(seconds, 1):g} s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    parts += [f"{secs} s"] if secs else []
    return " ".join(parts)


def fail_stuck_tasks(
    session: Session,
    now: datetime,
    task_timeout: float,
    manager_started: datetime,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = now - timedelta(seconds=task_timeout)
    if manager_started > cutoff:
        return
    stuck = session.scalars(
        select(Task).where(Task.status == TaskStatus.ACTIVE.value, Task.progress_at < cutoff)
    ).all()
    reason = f"no progress for {readable_duration(task_timeout)}"
    for task in stuck:
        worker_id = task.worker_id
        fail_task(session, task, reason, now, policy)
        report.jobs.add(task.job_id)
        if worker_id is not None:
            report.workers.add(worker_id)
        log.warning("task timed out", job_id=task.job_id, task_id=task.id, worker_id=worker_id)


def reap(
    session: Session,
    now: datetime,
    *,
    heartbeat_timeout: float,
    task_timeout: float,
    manager_started: datetime,
    policy: Policy,
) -> ReapReport:
    report = ReapReport()

    def sleep_schedules() -> None:
        changed, jobs = update_sleep(session, now, policy)
        report.workers.update(changed)
        report.jobs.update(jobs)

    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "heartbeat timeouts",
            lambda: reap_silent_workers(
                session, now, heartbeat_timeout, manager_started, policy, report
            ),
        ),
        (
            "task timeouts",
            lambda: fail_stuck_tasks(session, now, task_timeout, manager_started, policy, report),
        ),
        ("sleep schedules", sleep_schedules),
    ]
    for name, step in steps:
        try:
            with session.begin_nested():
                step()
        except Exception:
            log.exception("reaper step failed; the others went on", step=name)
    return report
