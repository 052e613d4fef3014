"""Periodic housekeeping of the farm's state, run by every manager every few seconds.

- Workers silent for longer than the heartbeat timeout are offline and their tasks go
  back to the queue. Time the manager could not hear them does not count against them,
  one rule for every cause (`ReaperClock.silent_before`): silence is counted only over
  time the database could record what workers sent. Not before the manager's own
  start, so a restart does not requeue every running task; not before the last call it
  refused because its storage would not take it (a full, read-only or unwritable data
  dir, a 507; no file descriptor to spare, a 503) or because its database was
  unavailable (a 503), nor its own last pass that failed for the latter (a storage
  fault or an outage, under which every heartbeat and progress report was refused and
  none recorded); and not while a write waited for the database
  (`Database.transaction` reports each wait longer than `db.engine.WAIT_NOTED`): a
  heartbeat waiting on another process's lock was heard, it just could not be stored
  yet.
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

import bisect
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
from farmhand.manager.db.presence import database_reason, unavailable
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
STALLS_KEPT = 1000
"""Spells of waiting for the database remembered (`ReaperClock.database_waited`), the
latest ones: each is a second or more, and overlapping ones are kept as one."""
STALL_SAID = 10.0
"""Seconds a write must have waited for the database for the log to say so (once per
spell): shorter waits are ordinary contention."""


class ReaperClock:
    """Which time counts as silence against workers (heartbeat timeout) and tasks
    (no-progress timeout): the one home of that rule (`silent_before`).

    Not the time before this manager process started, nor before the last call the
    manager refused because its storage would not take it (`storage_refused`, from
    `api.errors.refused_for_storage`: a full disk, a read-only or unwritable data dir,
    no file descriptor to spare) or its database could not be used
    (`database_unavailable`, from the 503 handler, the reaper's own failed passes and
    `database_waited`): such a call was heard but nothing of it was stored, so
    `Worker.last_heartbeat` and `Task.progress_at` stand still while the worker keeps
    calling. Once the storage or the database is back, workers have a full heartbeat
    timeout, and tasks a full task timeout, from the last refusal, as after a restart.
    A worker that really died during the outage is found that much later; its task
    could not have been stored by another worker meanwhile. The reaper's failed passes
    count because an outage may refuse no call at all here (the workers call a sibling
    process, or another manager), and the time the database was away is time nobody
    could be heard.

    Nor the time a write waited for the database and then went through
    (`database_waited`, from `Database.transaction`): another process holding SQLite's
    lock for less than the busy timeout refuses nothing, yet every heartbeat meanwhile
    waits unrecorded, and the first reaper pass after it used to find every worker
    silent and requeue its task. Such a spell is not counted, and silence resumes
    counting where it ended: a wait of a few seconds costs a dead worker's discovery a
    few seconds, not a whole timeout (so contention that keeps writes waiting a second
    now and then does not stop the reaper).

    The marks are kept in memory, not in the database: a write is what fails or waits.
    The processes of one manager (`--processes N`) tell each other of refusals through
    `Siblings` (at most once a second each); waits are not shared, as every process's
    reaper waits on the same lock itself. A manager on another host sharing the
    database knows only the refusals and waits it saw itself.

    A database outage is also logged here, once when it starts (from when the first
    refused write began waiting, not from its refusal a busy timeout later) and once
    when the database answers again (`database_answered`, after a reaper pass that went
    through), not once per refused call: every call fails while it lasts. A wait longer
    than `STALL_SAID` that went through is logged once per spell.
    """

    def __init__(self, started_at: datetime | None = None) -> None:
        self.started_at = started_at or utcnow()
        self._refused_at: datetime | None = None
        self._unavailable_since: datetime | None = None
        self._stalls: list[tuple[datetime, datetime]] = []
        """Spells writes waited for the database: sorted, none overlapping."""
        self._stall_said_until: datetime | None = None
        self._lock = threading.Lock()
        self._siblings: Siblings | None = None
        self._shared_at = float("-inf")

    @property
    def starts_at(self) -> datetime:
        """Silence before this counts against nobody: the start, or the last refusal."""
        with self._lock:
            refused = self._refused_at
        return self.started_at if refused is None else max(self.started_at, refused)

    def silent_before(self, now: datetime, timeout: float) -> datetime | None:
        """The time a worker's last heartbeat (or a task's last progress) must be older
        than for it to have been silent `timeout` seconds by `now`, counting only time
        the database could have recorded it; None if nothing can have been yet.

        Walks back from `now`, skipping the spells writes waited (`database_waited`),
        until `timeout` seconds of ordinary time are behind; silence before `starts_at`
        never counts."""
        starts = self.starts_at
        with self._lock:
            stalls = list(self._stalls)
        point = now
        left = timedelta(seconds=timeout)
        for begun, ended in reversed(stalls):
            if begun >= point:
                continue
            heard = point - min(ended, point)
            if heard >= left:
                break
            left -= heard
            point = begun
        cutoff = point - left
        return None if cutoff < starts else cutoff

    def storage_refused(self, now: datetime) -> None:
        """A call was refused because the manager's storage would not take it: full,
        read-only, not permitted, or out of file descriptors (`api.errors.storage_fault`).
        Any thread."""
        self._refused(now)

    def database_unavailable(
        self, now: datetime, reason: str, since: datetime | None = None
    ) -> None:
        """A call was refused, or a reaper pass failed, because the database could not
        be used (`db.presence.unavailable`); `reason` is what it said, without secrets;
        `since`, when the refused write began waiting (else `now`). Any thread. Logs
        the first of an outage."""
        self._refused(now)
        began = now if since is None else min(since, now)
        with self._lock:
            current = self._unavailable_since
            starts = current is None
            if current is None or began < current:
                self._unavailable_since = began
        if starts:
            log.error(
                "database unavailable: requests are answered 503 until it is back, and "
                "workers are not counted silent meanwhile",
                error=reason,
                waited=readable_duration(max(0.0, (now - began).total_seconds())),
            )

    def database_waited(
        self, since: datetime, until: datetime, error: BaseException | None = None
    ) -> None:
        """A write waited for the database from `since` to `until` (`Database`
        reports waits of a second or more, and every wait that failed): that time is
        not counted as anyone's silence. `error`, if the wait ended in one: an
        unavailable database is an outage (`database_unavailable`), anything else only
        the wait. Any thread."""
        if error is not None and unavailable(error):
            self.database_unavailable(until, database_reason(error), since)
        if until <= since:
            return
        with self._lock:
            self._add_stall(since, until)
            said = self._stall_said_until
            say = (
                error is None
                and self._unavailable_since is None
                and (until - since).total_seconds() >= STALL_SAID
                and (said is None or since > said)
            )
            if say:
                self._stall_said_until = until
        if say:
            log.warning(
                "the database kept writes waiting (another process held its lock?); "
                "workers are not counted silent meanwhile",
                waited=readable_duration((until - since).total_seconds()),
            )

    def _add_stall(self, since: datetime, until: datetime) -> None:
        """Into `_stalls`, merged with those it overlaps. Under `_lock`."""
        stalls = self._stalls
        at = bisect.bisect_left(stalls, (since, since))
        if at > 0 and stalls[at - 1][1] >= since:
            at -= 1
        end = at
        while end < len(stalls) and stalls[end][0] <= until:
            since = min(since, stalls[end][0])
            until = max(until, stalls[end][1])
            end += 1
        stalls[at:end] = [(since, until)]
        if len(stalls) > STALLS_KEPT:
            del stalls[: len(stalls) - STALLS_KEPT]

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
    clock: ReaperClock,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = clock.silent_before(now, timeout)
    if cutoff is None:
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
    clock: ReaperClock,
    policy: Policy,
    report: ReapReport,
) -> None:
    cutoff = clock.silent_before(now, task_timeout)
    if cutoff is None:
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
    clock: ReaperClock,
    policy: Policy,
) -> ReapReport:
    """One pass. Only silence `clock` counts (`ReaperClock.silent_before`) is counted
    against anyone. `now` is read once the pass's transaction has begun (it may have
    waited for the database, and `clock` been told so meanwhile)."""
    report = ReapReport()

    def sleep_schedules() -> None:
        changed, jobs = update_sleep(session, now, policy)
        report.workers.update(changed)
        report.jobs.update(jobs)

    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "heartbeat timeouts",
            lambda: reap_silent_workers(session, now, heartbeat_timeout, clock, policy, report),
        ),
        (
            "task timeouts",
            lambda: fail_stuck_tasks(session, now, task_timeout, clock, policy, report),
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
