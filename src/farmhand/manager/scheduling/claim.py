"""Choosing the task a worker gets.

Jobs are ranked by:

1. priority, highest first;
2. fair share: at equal priority, the job whose owner holds the fewest workers right
   now goes first, so one person's fifty jobs do not starve another's one;
3. the job the worker asks to prefer (`prefer_job`, or the finished task's job with
   `complete?next=true`: it holds its files and a Blender session with it open, no
   start-up cost) — only among jobs equal on both of the above, so a worker staying on
   its job never keeps another user's job at the same priority waiting;
4. age, oldest first (then id).

A job is skipped when it does not fit the worker (required tags, task types) or when it
already holds its `max_workers`. A blocklist entry bars the worker from the job's tasks
of one type (`Blocklist.task_type`), not from the whole job: a worker blocklisted from a
job's render tasks may still make its video (`eligibility.barred_types`, the rule's one
reading, which `eligible_workers` shares when it decides whether anyone is left). Within the
chosen job the lowest-index queued task, of a type the worker may run there, whose
dependencies are complete is taken — but not one this worker already failed, while
another available worker could take it.

The first render task claimed pins the job to the Blender series the worker will render
it with (`jobs.blender_pinned`); from then on its render tasks go only to workers that
can render with that series (`eligibility.fits`; their assignment names the job's range
narrowed to it, `eligibility.pinned_range`), so one still is never merged from tiles,
nor one animation cut from frames, of two Blenders. The pin is read with the job's other
columns and checked in memory: a claim costs a statement more only when it sets one.

The ranking is done by the database (`_ranked`), so that a claim's cost does not grow
with the queue: it reads one priority at a time, from the highest, and within it the
best-ranked jobs a slice at a time (`FIRST_SLICE`, then four times as many), checking
each for its cap, fit and blocklist here (`eligibility`, which owns those rules) and
stopping at the first job that yields a task. Jobs at lower priorities are not read;
jobs at the same priority ranked below the chosen one are sorted by the database and
never fetched. What a claim still pays for, job by job, is the jobs ranked *ahead* of the
one it takes that it cannot take (not fitting, capped, blocklisted, nothing runnable):
it has to look at each (docs/PERFORMANCE.md, "Many queued jobs").

The choice is a read followed by the state machine's compare-and-set; if another worker
won the race for a task, the next one is tried. No lock outside the database is involved,
so several managers can share one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    Update,
    bindparam,
    case,
    exists,
    func,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, aliased

from farmhand.manager.db.models import Job, Task, TaskDependency, TaskFailure, Worker
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.db.statements import one_of
from farmhand.manager.scheduling.eligibility import (
    available,
    barred_types,
    eligible_workers,
    fits,
    render_series,
    task_types,
)
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.state import AssignedTask, try_assign_task
from farmhand.shared.schemas import JobStatus, TaskStatus

RUNNABLE_JOB_STATUSES = (JobStatus.QUEUED.value, JobStatus.ACTIVE.value)
TASKS_PER_JOB = 8


@dataclass(frozen=True)
class _Candidate:
    job_id: int
    settings: dict[str, Any]
    types: tuple[str, ...]
    """The task types the worker may run in this job: it runs them, the job fits it for
    them (`eligibility.fits`) and it is not blocklisted from them there."""
    blender_saved: str | None = None
    blender_pinned: str | None = None


# The claim's statements are built once (per set of task types): building one (an alias,
# an EXISTS, the compile-cache key) costs several times more than running it on SQLite.

_owner_job = aliased(Job)
_OWNERS_HELD = (
    select(_owner_job.owner_id.label("owner_id"), func.count().label("held"))
    .select_from(Task)
    .join(_owner_job, _owner_job.id == Task.job_id)
    .where(Task.status == TaskStatus.ACTIVE.value)
    .group_by(_owner_job.owner_id)
    .subquery("owners_held")
)
"""How many workers each owner holds right now, over all their jobs (fair share)."""


_JobRow = tuple[int, int, dict[str, Any], str | None, str | None]
"""A ranked job: id, priority, settings, the Blender that saved it, its pin."""

_TOP = 2**31 - 1
"""Above any priority (`JobSettings.priority` is 0-100)."""


def _has_work(types: tuple[str, ...]) -> ColumnElement[bool]:
    """The job has queued tasks of these types."""
    return exists().where(
        Task.job_id == Job.id, Task.status == TaskStatus.QUEUED.value, one_of(Task.type, types)
    )


def _next_priority(types: tuple[str, ...]) -> ScalarSelect[int]:
    """The highest priority below `below` of a runnable job with queued tasks of the
    given types. One status at a time, so the database walks `ix_jobs_runnable` down
    from `below` and stops at the first such job: the jobs at lower priorities are not
    read."""
    highest = [
        select(Job.priority)
        .where(Job.status == status, Job.priority < bindparam("below"), _has_work(types))
        .order_by(Job.priority.desc())
        .limit(1)
        .subquery()
        for status in RUNNABLE_JOB_STATUSES
    ]
    either = union_all(*(select(top.c.priority) for top in highest)).subquery()
    return select(func.max(either.c.priority)).scalar_subquery()


@lru_cache(maxsize=64)
def _ranked(types: tuple[str, ...]) -> Prepared[Select[*_JobRow]]:
    """The runnable jobs with queued tasks of the given types at the highest priority
    below `below`, best first by the rule the module docstring states (priority, then
    fair share, the preferred job, age, id), a slice (`limit`, `offset`) at a time.

    The database ranks them, so the jobs a claim never reaches cost it no Python: only
    the rows of the slices it looks at are fetched and their settings decoded. Jobs at
    lower priorities are not even read until the claim has passed every job above them.
    """
    return Prepared(
        select(Job.id, Job.priority, Job.settings, Job.blender_saved, Job.blender_pinned)
        .outerjoin(_OWNERS_HELD, _OWNERS_HELD.c.owner_id == Job.owner_id)
        .where(
            Job.priority == _next_priority(types),
            one_of(Job.status, RUNNABLE_JOB_STATUSES),
            _has_work(types),
        )
        .order_by(
            func.coalesce(_OWNERS_HELD.c.held, 0),  # fair share before the worker's wish
            # Its files and Blender session are already there (no `prefer`: all alike).
            case((Job.id == bindparam("prefer"), 0), else_=1),
            Job.created_at,
            Job.id,
        )
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


_HELD_BY_JOB = Prepared(
    select(Task.job_id, func.count())
    .where(Task.status == TaskStatus.ACTIVE.value)
    .group_by(Task.job_id)
)
"""How many workers each job holds right now (its `max_workers` cap): one row a job that
holds any, however many jobs are queued."""

FIRST_SLICE = 16
"""The claim fetches the best-ranked jobs of a priority this many at first, then four
times as many each time (16, 64, 256…): usually the first job yields a task and few rows
are decoded, while a claim passing many jobs by (capped, not fitting, blocklisted,
nothing runnable) reads them in a few statements."""

_dependency = aliased(Task)
DEPENDENCIES_MET = ~exists().where(
    TaskDependency.task_id == Task.id,
    _dependency.id == TaskDependency.depends_on_id,
    _dependency.status != TaskStatus.COMPLETED.value,
)
"""A task may start: every task it waits for completed. The claim's rule; the job
views ask it too (`jobs.views._ready_types`) for why a job waits."""


@lru_cache(maxsize=64)
def _runnable(types: tuple[str, ...]) -> Prepared[Select[int, int, str, int]]:
    """A job's first queued tasks of the given types whose dependencies are complete."""
    return Prepared(
        select(Task.id, Task.job_id, Task.type, Task.failures)
        .where(
            Task.job_id == bindparam("job"),
            Task.status == TaskStatus.QUEUED.value,
            one_of(Task.type, types),
            DEPENDENCIES_MET,
        )
        .order_by(Task.index)
        .limit(TASKS_PER_JOB)
    )


def _ranked_jobs(session: Session, worker: Worker, prefer_job: int | None) -> Iterator[_Candidate]:
    """The jobs the worker may take, best first, fetched while the claim asks for more:
    one priority at a time from the highest, and within it a slice at a time. Each is
    checked for its cap, then its fit and the worker's blocklist entries per task type
    (`eligibility`), in rank order.

    Within one claim every slice comes from one state of the database: on SQLite a claim
    is one transaction. On PostgreSQL a claim racing another may see a job move between
    two slices (look at it twice, or pass it by); the next claim sees it again.
    """
    types = task_types(worker)
    connection = session.connection()
    ranked = _ranked(tuple(types))

    def ranked_slice(below: int, offset: int, limit: int) -> list[Any]:
        parameters = {"below": below, "prefer": prefer_job, "limit": limit, "offset": offset}
        return ranked.all(connection, parameters)

    held_by_job: dict[int, int] | None = None
    blocked: dict[int, set[str]] = {}
    below = _TOP
    while True:
        offset, limit = 0, FIRST_SLICE
        rows = ranked_slice(below, offset, limit)
        if not rows:
            return  # no job below `below` has work for this worker
        if held_by_job is None:  # the first look: what may hold the jobs back
            held_by_job = {job_id: count for job_id, count in _HELD_BY_JOB.all(connection)}
            blocked = barred_types(connection, worker.id)
        level = rows[0].priority
        while True:
            for job_id, _, settings, saved, pinned in rows:
                cap = settings.get("max_workers")
                if cap and held_by_job.get(job_id, 0) >= cap:
                    continue
                barred = blocked.get(job_id, ())
                allowed = tuple(
                    task_type
                    for task_type in types
                    if task_type not in barred and fits(worker, settings, task_type, saved, pinned)
                )
                if allowed:
                    yield _Candidate(job_id, settings, allowed, saved, pinned)
            if len(rows) < limit:
                break
            offset += limit
            limit *= 4
            rows = ranked_slice(below, offset, limit)
        below = level


@dataclass(frozen=True)
class _Runnable:
    """The columns the claim needs of a queued task (no ORM object: this is the hot path)."""

    id: int
    job_id: int
    type: str
    failures: int


def _runnable_tasks(session: Session, job_id: int, types: tuple[str, ...]) -> list[_Runnable]:
    rows = _runnable(types).all(session.connection(), {"job": job_id})
    return [_Runnable(*row) for row in rows]


def _failed_here(session: Session, task: _Runnable, worker: Worker) -> bool:
    return (
        task.failures > 0
        and session.scalar(
            select(TaskFailure.id)
            .where(TaskFailure.task_id == task.id, TaskFailure.worker_id == worker.id)
            .limit(1)
        )
        is not None
    )


def _someone_else_could(session: Session, task: _Runnable, worker: Worker) -> bool:
    job = session.get(Job, task.job_id)
    assert job is not None
    failed_it = {
        worker_id
        for worker_id in session.scalars(
            select(TaskFailure.worker_id).where(TaskFailure.task_id == task.id)
        )
        if worker_id is not None
    }
    others = eligible_workers(session, job, task.type, exclude={worker.id, *failed_it})
    return bool(others)


_PIN: Prepared[Update] = Prepared(
    update(Job)
    .where(Job.id == bindparam("job"), Job.blender_pinned.is_(None))
    .values(blender_pinned=bindparam("pin"))
    .execution_options(synchronize_session=False)
)
"""Pin a job that has no pin (compare-and-set: on PostgreSQL a racing claim waits on the
row, then finds it pinned and changes nothing)."""
_PINNED = Prepared(select(Job.blender_pinned).where(Job.id == bindparam("job")))
_UNPIN: Prepared[Update] = Prepared(
    update(Job)
    .where(Job.id == bindparam("job"))
    .values(blender_pinned=None)
    .execution_options(synchronize_session=False)
)


def _pin(session: Session, job_id: int, pin: str) -> Literal["pinned", "same", "other"]:
    """Pin the job to `pin`: `pinned` by this claim, or another claim had pinned it
    already, to the `same` series or to an `other` one."""
    connection = session.connection()
    if _PIN.execute(connection, {"job": job_id, "pin": pin}):
        return "pinned"
    return "same" if _PINNED.scalar(connection, {"job": job_id}) == pin else "other"


def _render_pin(worker: Worker, candidate: _Candidate, task: _Runnable) -> str | None:
    """The series this claim pins the job to: only the job's first render task, on a
    worker that names its Blenders (a stand-in names none and pins nothing)."""
    if task.type != "render" or candidate.blender_pinned is not None:
        return None
    return render_series(worker, candidate.settings, candidate.blender_saved)


def claim_task(
    session: Session,
    worker: Worker,
    now: datetime,
    policy: Policy,
    *,
    prefer_job: int | None = None,
) -> AssignedTask | None:
    if not available(worker):
        return None
    for candidate in _ranked_jobs(session, worker, prefer_job):
        pinning: Literal["pinned", "same", "other"] | None = None
        for task in _runnable_tasks(session, candidate.job_id, candidate.types):
            if _failed_here(session, task, worker) and _someone_else_could(session, task, worker):
                continue
            pin = _render_pin(worker, candidate, task)
            if pin is not None and pinning is None:
                pinning = _pin(session, candidate.job_id, pin)
                if pinning == "other":
                    break  # another claim pinned it to another series just now
            assigned = try_assign_task(session, task.id, worker.id, now, policy)
            if assigned is not None:
                return assigned
        if pinning == "pinned":
            # Nothing taken after all: the first render task actually claimed pins it.
            _UNPIN.execute(session.connection(), {"job": candidate.job_id})
    return None
