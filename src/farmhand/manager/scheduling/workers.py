"""Worker control: what admins decide (enable, disable, drain, sleep schedules).

Reachability (`Worker.status`: online or offline) is the heartbeat's business; what is
decided here lives in `admin_state` and `asleep`, so it survives a worker going offline
and coming back. Each change either lets the running task finish (`after-task`) or
aborts it (`now`): the task goes back to the queue without counting as a failure, and
the worker is told to stop it on its next call. Drain is disable after the current
task, so a drain `now` is a disable now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Task, Worker
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.state import fail_task, requeue_task
from farmhand.shared.schemas import WEEKDAYS, SleepSchedule, TaskStatus, WorkerStatus


class ScheduleError(ValueError):
    pass


def active_tasks(session: Session, worker_id: int) -> list[Task]:
    return list(
        session.scalars(
            select(Task).where(Task.worker_id == worker_id, Task.status == TaskStatus.ACTIVE.value)
        )
    )


def offline_namesake(
    session: Session, name: str, *, quiet_since: datetime, silent_since: datetime
) -> Worker | None:
    """The record a registering machine of this name takes over, if any.

    A render node that lost its credentials (reinstalled, a container without a volume,
    or a manager restored from a backup older than its credentials) registers again
    under its name. Taking over the record of that name keeps what admins set on it
    (disabled, drained, sleep schedule), its blocklists and its history, instead of
    leaving a ghost beside a new row, as Deadline and OpenCue identify render nodes by
    name.

    A record qualifies when it is gone, by the heartbeat's rule: offline, or not heard
    from since `silent_since` (now less the heartbeat timeout, the reaper's cutoff in
    `reaper.reap_silent_workers`), which the reaper would mark offline on its next pass.
    The second is what a restored database holds: its runners still say busy or idle,
    and the machine registers within a second of the manager's start, before any pass
    (whose clock, `ReaperClock`, does not even count the time the manager was down).
    The caller puts such a record offline first, through the reaper's own
    `reaper.put_offline`, so its tasks go back to the queue and the new secret inherits
    no work in flight. A record heard from within the heartbeat timeout is never
    displaced: a live machine of the same name keeps its row, the newcomer gets its own.
    The reaper's start-up grace is not waited out: the machine registers at once, and
    the price is only that a second live machine of the same name, unheard for the whole
    time the manager was down, loses the record to it (its task requeued); its old secret
    then answers 401 and it registers a row of its own.

    And it must not have been heard from since `quiet_since` (now less the ttl of
    `RunnerIdCache`): with `--processes N`, or managers sharing the database, another
    process may still remember the old secret for that long, and `forget_worker` clears
    only this process's memory. Past it, no process honours the old secret any more,
    so nothing done with it can land on the record its new owner now holds.
    """
    return session.scalar(
        select(Worker)
        .where(
            Worker.name == name,
            Worker.last_heartbeat < quiet_since,
            or_(
                Worker.status == WorkerStatus.OFFLINE.value,
                Worker.last_heartbeat < silent_since,
            ),
        )
        .order_by(Worker.last_heartbeat.desc(), Worker.id.desc())
        .limit(1)
    )


def abort_current(
    session: Session, worker: Worker, reason: str, now: datetime, policy: Policy
) -> list[int]:
    """Requeue the worker's running tasks; returns their job ids."""
    jobs = []
    for task in active_tasks(session, worker.id):
        requeue_task(session, task, reason, now, policy)
        jobs.append(task.job_id)
    return jobs


_FORGOTTEN = Prepared(
    select(Task.id).where(
        Task.worker_id == bindparam("worker"),
        Task.status == TaskStatus.ACTIVE.value,
        Task.started_at < bindparam("before"),
    )
)


FORGOTTEN = "its worker asked for work without it"
"""How the reason of a task given back by `give_back_forgotten` begins."""

GIVE_BACKS_BEFORE_FAILURE = 3
"""How many times in a row one worker may be given one task back before the give-back
counts as that worker's failed attempt (`fail_task`)."""

_GIVEN_BACK_BY = re.compile(re.escape(FORGOTTEN) + r" \(worker (\d+), (\d+) times? in a row\)")


def _given_back_before(task: Task, worker_id: int) -> int:
    """How many times in a row this worker had this task given back: its reason says so
    (`last_error` is kept until the task ends or is given back again, so any other
    outcome in between, another worker's give-back included, starts the count again)."""
    said = _GIVEN_BACK_BY.fullmatch(task.last_error or "")
    if said is None or int(said.group(1)) != worker_id:
        return 0
    return int(said.group(2))


@dataclass(frozen=True)
class GivenBack:
    job_id: int
    task_id: int
    failed: str | None = None
    """Why the give-back counted as a failed attempt, if it did."""


def give_back_forgotten(
    session: Session, worker_id: int, now: datetime, policy: Policy
) -> list[GivenBack]:
    """Requeue what a worker asking for work still holds.

    A worker runs one task at a time and asks for work only between tasks, so a task the
    manager still counts as its own is one it is not working on: the answer that handed
    it out was lost on the way (the manager was killed, the network dropped), or the
    worker gave up on it while the manager was out of reach. Left alone, it would wait
    for the task timeout (half an hour by default) and then count as the worker's
    failure. Tasks handed out within `forgotten_task_after` are spared: their answer may
    still be on its way (and a test may race one runner's claims on purpose).

    A give-back is not a failure, but it must not cycle forever: a worker that is handed
    a task it cannot do and drops it without failing it (an older farmhand, given a task
    its version does not know) would get it again and again, its attempts climbing past
    any limit while the job never ends. The `GIVE_BACKS_BEFORE_FAILURE`th give-back of one
    task by one worker in a row is that worker's failed attempt (`fail_task`), so the
    job's attempts and the blocklist apply.
    """
    before = now - timedelta(seconds=policy.forgotten_task_after)
    ids = _FORGOTTEN.scalars(session.connection(), {"worker": worker_id, "before": before})
    given_back = []
    for task in session.scalars(select(Task).where(Task.id.in_(ids))) if ids else ():
        times = _given_back_before(task, worker_id) + 1
        if times >= GIVE_BACKS_BEFORE_FAILURE:
            reason = (
                f"{FORGOTTEN} {times} times in a row: it does not run this task "
                "(an older farmhand worker?)"
            )
            fail_task(session, task, reason, now, policy)
            given_back.append(GivenBack(task.job_id, task.id, reason))
            continue
        said = f"{FORGOTTEN} (worker {worker_id}, {times} time{'s' if times > 1 else ''} in a row)"
        requeue_task(session, task, said, now, policy)
        given_back.append(GivenBack(task.job_id, task.id))
    return given_back


def apply_action(
    session: Session,
    worker: Worker,
    action: Literal["enable", "disable", "drain"],
    when: Literal["now", "after-task"],
    now: datetime,
    policy: Policy,
) -> list[int]:
    """Change what the worker may do; returns the ids of jobs whose task was aborted.

    Disable and drain differ only in `after-task`: draining is "disable after the
    current task". Applied `now`, both abort the running task (requeued, not counted as
    a failure), so a drained worker has nothing left to finish and is disabled at once.
    """
    if action == "enable":
        worker.admin_state = "enabled"
        return []
    if when == "after-task":
        has_task = bool(active_tasks(session, worker.id))
        worker.admin_state = "draining" if has_task else "disabled"
        return []
    worker.admin_state = "disabled"
    done = "drained" if action == "drain" else "disabled"
    return abort_current(session, worker, f"worker {worker.name} was {done}", now, policy)


_CLAIMER = Prepared(
    select(
        Worker.id,
        Worker.name,
        Worker.status,
        Worker.admin_state,
        Worker.asleep,
        Worker.capabilities,
    ).where(Worker.id == bindparam("worker"))
)
_SEEN = Prepared(
    update(Worker)
    .where(Worker.id == bindparam("worker"))
    .values(
        last_heartbeat=bindparam("now"),
        status=case(
            (Worker.status == WorkerStatus.OFFLINE.value, WorkerStatus.IDLE.value),
            else_=Worker.status,
        ),
    )
    .returning(*_CLAIMER.statement.selected_columns)
    .execution_options(synchronize_session=False)
)
"""The asking worker marked seen, and read back by the same statement (`_CLAIMER`'s
columns, after the update)."""
_DRAINED = Prepared(
    update(Worker)
    .where(Worker.id == bindparam("worker"), Worker.admin_state == "draining")
    .values(admin_state="disabled")
    .execution_options(synchronize_session=False)
)


def claiming_worker(
    session: Session, worker_id: int, now: datetime, *, seen: bool
) -> Worker | None:
    """The worker asking for a task, after what asking means; None if it was deleted.

    Asking is a sign of life (`seen`: its heartbeat time, and an offline worker is back
    online), and a draining worker that asks has finished its task: it is now disabled.
    The answer is a detached `Worker` built from one row, for the claim's rules to read:
    loading an ORM object per claim costs more than the claim's queries.
    """
    connection = session.connection()
    if seen:
        row = _SEEN.first(connection, {"worker": worker_id, "now": now})
    else:
        row = _CLAIMER.first(connection, {"worker": worker_id})
    if row is None:
        return None
    status, admin_state = row.status, row.admin_state
    if admin_state == "draining":
        _DRAINED.execute(connection, {"worker": worker_id})
        admin_state = "disabled"
    return Worker(
        id=row.id,
        name=row.name,
        status=status,
        admin_state=admin_state,
        asleep=row.asleep,
        capabilities=row.capabilities,
    )


def display_status(worker: Worker, busy: bool) -> WorkerStatus:
    if worker.status == WorkerStatus.OFFLINE.value:
        return WorkerStatus.OFFLINE
    if worker.admin_state == "disabled":
        return WorkerStatus.DISABLED
    if worker.admin_state == "draining":
        return WorkerStatus.DRAINING
    if worker.asleep:
        return WorkerStatus.ASLEEP
    return WorkerStatus.BUSY if busy else WorkerStatus.IDLE


def check_schedule(schedule: SleepSchedule) -> None:
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError(f"unknown time zone {schedule.timezone!r}") from error


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_sleep_window(schedule: SleepSchedule, now: datetime) -> bool:
    """Whether `now` (aware) falls in one of the schedule's windows, in its time zone.

    A window whose end is before its start runs overnight into the next day.
    """
    local = now.astimezone(ZoneInfo(schedule.timezone))
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    for window in schedule.windows:
        start, end = _minutes(window.start), _minutes(window.end)
        if start < end:
            inside = today in window.days and start <= minute < end
        elif start > end:  # overnight: from start today until end tomorrow
            inside = (today in window.days and minute >= start) or (
                yesterday in window.days and minute < end
            )
        else:
            inside = False
        if inside:
            return True
    return False


def update_sleep(session: Session, now: datetime, policy: Policy) -> tuple[list[int], list[int]]:
    """Put workers to sleep or wake them by their schedules.

    Returns (changed worker ids, ids of jobs whose task was aborted).
    """
    changed: list[int] = []
    jobs: list[int] = []
    for worker in session.scalars(select(Worker).where(Worker.sleep_schedule.is_not(None))):
        if not worker.sleep_schedule:  # a JSON `null` stored before migration 0014
            continue
        schedule = SleepSchedule.from_stored(worker.sleep_schedule)
        should_sleep = in_sleep_window(schedule, now)
        if should_sleep == worker.asleep:
            continue
        worker.asleep = should_sleep
        changed.append(worker.id)
        if should_sleep and schedule.when == "now":
            jobs += abort_current(
                session, worker, f"worker {worker.name} went to sleep", now, policy
            )
    return changed, jobs


__all__ = [
    "FORGOTTEN",
    "GIVE_BACKS_BEFORE_FAILURE",
    "GivenBack",
    "ScheduleError",
    "abort_current",
    "apply_action",
    "check_schedule",
    "claiming_worker",
    "display_status",
    "give_back_forgotten",
    "in_sleep_window",
    "update_sleep",
]
