"""Periodic housekeeping of the farm's state, run by every manager every few seconds.

- Workers silent for longer than the heartbeat timeout are offline and their tasks go
  back to the queue. Time the manager could not hear them does not count against them:
  the reaper's clock (`ReaperClock`) starts no earlier than the manager's own start, so a
  manager restart does not requeue every running task, and no earlier than the last
  call it refused for lack of space (a 507) or because its database was unavailable (a
  503), nor than its own last pass that failed for the latter: a full disk or a database
  outage, under which every heartbeat and progress report was refused and none
  recorded, does not either.
- Tasks with no word from their worker for `task_timeout` fail (and are retried,
  elsewhere if possible): Blender hangs, and a hung Blender still heartbeats.
- Sleep schedules put workers to sleep and wake them.

All of it is idempotent, so several managers sharing a database may run it at once.
Each of the three runs in a savepoint of its own: one that fails (a row it cannot read)
is logged and rolled back alone, and the others still happen: a farm whose heartbeat
timeouts stopped because of one worker's sleep schedule would keep silent workers'
tasks forever. A database that cannot be used at all (`db.presence.unavailable`) ends
the pass instead: the caller notes it on the clock (`ReaperClock.database_unavailable`),
which logs the outage once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Task, Worker
from farmhand.manager.db.presence import unavailable
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.state import fail_task, requeue_task
from farmhand.manager.scheduling.workers import update_sleep
from farmhand.shared.schemas import TaskStatus, WorkerStatus

if TYPE_CHECKING:
    from farmhand.manager.siblings import Siblings

log = structlog.get_logger(__name__)

SIBLING_TOPIC = "calls-refused"
SHARE_EVERY = 1.0
"""Seconds between two messages telling the sibling processes of a refusal: an outage
refuses every call, and one datagram a second keeps them within a second of the end."""


class ReaperClock:
    """When the reaper's clock starts: silence before it is not counted against workers
    (heartbeat timeout) or tasks (no-progress timeout).

    It starts when this manager process started, and again after every call the manager
    refused because its storage was full (`storage_full`, from the 507 handler) or its
    database could not be used (`database_unavailable`, from the 503 handler and from
    the reaper's own failed passes): such a call was heard but nothing of it was stored,
    so `Worker.last_heartbeat` and `Task.progress_at` stand still while the worker keeps
    calling. Once space or the database is back, workers have a full heartbeat timeout,
    and tasks a full task timeout, from the last refusal, as after a restart. A worker
    that really died during the outage is found that much later; its task could not have
    been stored by another worker meanwhile. The reaper's failed passes count because an
    outage may refuse no call at all here (the workers call a sibling process, or
    another manager), and the time the database was away is time nobody could be heard.

    The mark is kept in memory, not in the database: a write is what fails during the
    outage. The processes of one manager (`--processes N`) tell each other through
    `Siblings` (at most once a second each); a manager on another host sharing the
    database knows only the refusals it made itself.

    A database outage is also logged here, once when it starts and once when the
    database answers again (`database_answered`, after a reaper pass that went
    through), not once per refused call: every call fails while it lasts.
    """

    def __init__(self, started_at: datetime | None = None) -> None:
        self.started_at = started_at or utcnow()
        self._refused_at: datetime | None = None
        self._unavailable_since: datetime | None = None
        self._lock = threading.Lock()
        self._siblings: Siblings | None = None
        self._shared_at = float("-inf")

    @property
    def starts_at(self) -> datetime:
        with self._lock:
            refused = self._refused_at
        return self.started_at if refused is None else max(self.started_at, refused)

    def storage_full(self, now: datetime) -> None:
        """A call was refused because the manager's storage is full. Any thread."""
        self._refused(now)

    def database_unavailable(self, now: datetime, reason: str) -> None:
        """A call was refused, or a reaper pass failed, because the database could not
        be used (`db.presence.unavailable`); `reason` is what it said, without secrets.
        Any thread. Logs the first of an outage."""
        self._refused(now)
        with self._lock:
            starts = self._unavailable_since is None
            if starts:
                self._unavailable_since = now
        if starts:
            log.error(
                "database unavailable: requests are answered 503 until it is back, and "
                "workers are not counted silent meanwhile",
                error=reason,
            )

    def database_answered(self, now: datetime) -> None:
        """The database answered (a reaper pass went through): an outage is over."""
        with self._lock:
            since, self._unavailable_since = self._unavailable_since, None
        if since is not None:
            seconds = max(0.0, (now - since).total_seconds())
            log.warning("database available again", unavailable_for=readable_duration(seconds))

    def share_with(self, siblings: Siblings) -> None:
        """Tell the sibling processes of refusals here, and hear of theirs."""
        self._siblings = siblings
        siblings.on(SIBLING_TOPIC, self._receive)

    def _refused(self, now: datetime) -> None:
        self._note(now)
        siblings = self._siblings
        if siblings is None:
            return
        with self._lock:
            due = time.monotonic() - self._shared_at >= SHARE_EVERY
            if due:
                self._shared_at = time.monotonic()
        if due:
            siblings.broadcast(SIBLING_TOPIC, {"at": now.isoformat()})

    def _receive(self, message: dict[str, Any]) -> None:
        try:
            at = datetime.fromisoformat(str(message["at"]))
        except (KeyError, ValueError):
            return
        if at.tzinfo is not None:
            self._note(min(at, utcnow()))  # one host, one clock; never a future mark

    def _note(self, at: datetime) -> None:
        with self._lock:
            if self._refused_at is None or at > self._refused_at:
                self._refused_at = at


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
    clock_starts_at: datetime,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = now - timedelta(seconds=timeout)
    if clock_starts_at > cutoff:
        return
    silent = session.scalars(
        select(Worker).where(
            Worker.status != WorkerStatus.OFFLINE.value,
            or_(Worker.last_heartbeat.is_(None), Worker.last_heartbeat < cutoff),
        )
    ).all()
    for worker in silent:
        put_offline(session, worker, now, policy, report)


def put_offline(
    session: Session, worker: Worker, now: datetime, policy: Policy, report: ReapReport
) -> None:
    """What a heartbeat timeout does to a silent worker: it is offline, and its running
    tasks go back to the queue (not counted as failures). The caller sends `report`'s
    events once its transaction is committed. Also used when a machine registering
    again takes over a record that has gone silent (`workers.offline_namesake`) before
    any reaper pass marked it offline: a database restored from a backup has its
    workers busy or idle, and this manager's reaper does not count the time it was down.
    """
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
    clock_starts_at: datetime,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = now - timedelta(seconds=task_timeout)
    if clock_starts_at > cutoff:
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
    clock_starts_at: datetime,
    policy: Policy,
) -> ReapReport:
    """One pass. Silence before `clock_starts_at` (`ReaperClock.starts_at`) is not
    counted against anyone."""
    report = ReapReport()

    def sleep_schedules() -> None:
        changed, jobs = update_sleep(session, now, policy)
        report.workers.update(changed)
        report.jobs.update(jobs)

    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "heartbeat timeouts",
            lambda: reap_silent_workers(
                session, now, heartbeat_timeout, clock_starts_at, policy, report
            ),
        ),
        (
            "task timeouts",
            lambda: fail_stuck_tasks(session, now, task_timeout, clock_starts_at, policy, report),
        ),
        ("sleep schedules", sleep_schedules),
    ]
    for name, step in steps:
        try:
            with session.begin_nested():
                step()
        except Exception as error:
            if unavailable(error):
                raise  # no step can go on: the pass ends, and the caller notes it
            log.exception("reaper step failed; the others went on", step=name)
    return report
