"""The state machine of tasks and jobs: the only code that changes a status.

Tasks::

    queued ──claim──► active ──complete──► completed
      ▲                 │ │
      │   fail (retries │ └──fail (no retries left)──► failed
      │   left), release│
      └─────────────────┘        queued/active ──cancel──► canceled
    completed/failed/canceled ──requeue──► queued

A task may depend on others (`TaskDependency`); it is claimable only once they are
completed, and is canceled when one of them fails or is canceled.

Jobs are moved by hand only for cancel, pause and resume; otherwise their status is
*derived* from their tasks by `refresh_job`, in the same transaction as the task change
that prompted it, so a job never disagrees with its tasks:

- canceled stays canceled;
- failed tasks over the policy's share (by default: any) → failed, and the rest of its
  tasks are canceled so no worker spends time on a job that cannot complete;
- every task completed → completed; nothing left to run but some tasks were canceled
  one by one → canceled, its reason the first such task's ("task 0 canceled by admin");
- paused stays paused (its running tasks finish; no new ones start);
- any task active or completed → active; otherwise → queued;
- once nothing is left to run, a job with a failed task is failed.

A job being deleted (`DELETE /api/jobs/{id}?purge=true`) is first canceled and
marked `DELETING` in one short transaction (`begin_deletion`), then its rows go in
batches (`jobs/delete.py`); that status is its last, and the job row goes last of all::

    any status ──begin_deletion──► deleting ──(rows deleted in batches)──► gone

Every function takes the caller's session and makes no commit: the caller's
`Database.transaction()` is the unit of change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    delete,
    distinct,
    func,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from farmhand.manager.db.models import (
    Blocklist,
    Job,
    JobFile,
    Task,
    TaskDependency,
    TaskFailure,
    Worker,
)
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.db.statements import one_of
from farmhand.manager.scheduling.give_backs import settle
from farmhand.manager.scheduling.policy import Policy
from farmhand.shared.schemas import JobStatus, TaskStatus

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset({TaskStatus.ACTIVE, TaskStatus.CANCELED, TaskStatus.FAILED}),
    TaskStatus.ACTIVE: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.CANCELED}
    ),
    TaskStatus.COMPLETED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.FAILED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.CANCELED: frozenset({TaskStatus.QUEUED}),
}
"""queued → failed happens only when no worker is left that may run the task."""

FINISHED_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})

DELETING = "deleting"
"""The status of a job being deleted: gone for everyone (listings and every job route
answer as for a missing job, `shown_jobs`), never claimed (not a runnable status), its
tasks already canceled; `jobs/delete.py` removes its rows a batch at a time, and finishes
after a restart any deletion a stopped manager left. Not a `JobStatus`: no person or
worker is ever told of it, so the API's statuses stay as they were."""


def shown_jobs() -> ColumnElement[bool]:
    """The jobs that exist for people and workers: all but those being deleted."""
    return Job.status != DELETING


def being_deleted(job: Job) -> bool:
    return job.status == DELETING


UNFINISHED_TASK_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.ACTIVE.value)


class TransitionError(ValueError):
    """A status change the state machine does not allow (e.g. completing a canceled task)."""


def _move_task(task: Task, new: TaskStatus) -> None:
    old = TaskStatus(task.status)
    if new not in TASK_TRANSITIONS[old]:
        raise TransitionError(f"task {task.id} cannot go from {old} to {new}")
    task.status = new.value


def derive_job_status(
    current: JobStatus, task_counts: Counter[TaskStatus], failure_share: float = 0.0
) -> JobStatus:
    """The job status its tasks imply; see the module docstring for the rules."""
    if current is JobStatus.CANCELED:
        return current
    total = sum(task_counts.values())
    failed = task_counts[TaskStatus.FAILED]
    unfinished = task_counts[TaskStatus.QUEUED] + task_counts[TaskStatus.ACTIVE]
    if failed and (failed > failure_share * total or not unfinished):
        return JobStatus.FAILED
    if total and task_counts[TaskStatus.COMPLETED] == total:
        return JobStatus.COMPLETED
    if total and not unfinished and task_counts[TaskStatus.CANCELED]:
        return JobStatus.CANCELED  # some of its tasks were canceled one by one
    if current is JobStatus.PAUSED:
        return current
    if task_counts[TaskStatus.ACTIVE] or task_counts[TaskStatus.COMPLETED] or failed:
        return JobStatus.ACTIVE
    return JobStatus.QUEUED


def task_counts(session: Session, job_id: int) -> Counter[TaskStatus]:
    rows = session.execute(
        select(Task.status, func.count()).where(Task.job_id == job_id).group_by(Task.status)
    )
    return Counter({TaskStatus(status): count for status, count in rows})


def refresh_job(session: Session, job: Job, now: datetime, policy: Policy) -> JobStatus:
    """Re-derive the job's status from its tasks and apply what follows from it."""
    session.flush()
    counts = task_counts(session, job.id)
    old = JobStatus(job.status)
    new = derive_job_status(old, counts, policy.job_failure_share)
    if new is JobStatus.ACTIVE and job.started_at is None:
        job.started_at = now
    if new is not old:
        job.status = new.value
        job.finished_at = now if new in FINISHED_JOB_STATUSES else None
        if new is JobStatus.FAILED:
            failed = _why_failed(session, job.id)
            if failed is not None:
                error = quoted_error(failed.last_error or "no reason given")
                job.status_reason = f"task {failed.index} failed: {error}"
            _cancel_unfinished_tasks(session, job.id, now, JOB_FAILED)
        elif new is JobStatus.CANCELED:
            canceled = _why_canceled(session, job.id)
            if canceled is not None:
                why = quoted_error(canceled.last_error or "no reason given")
                how = why if why.startswith("canceled") else f"canceled: {why}"
                job.status_reason = f"task {canceled.index} {how}"
    return new


def _why_failed(session: Session, job_id: int) -> Task | None:
    """The failed task a failed job's reason quotes: the first one no worker was left to
    run, if any (then nothing could have completed the job, whatever failed on its own
    before, under a failure share), else its first failed task."""
    failed = select(Task).where(Task.job_id == job_id, Task.status == TaskStatus.FAILED.value)
    return session.scalar(
        failed.where(Task.last_error.startswith(NOBODY_LEFT, autoescape=True))
        .order_by(Task.index)
        .limit(1)
    ) or session.scalar(failed.order_by(Task.index).limit(1))


def _why_canceled(session: Session, job_id: int) -> Task | None:
    """The canceled task a job that ended canceled (some of its tasks canceled one by
    one, the others completed) quotes: the first one canceled on its own, by a person,
    rather than for a task it depended on (the video after a canceled frame), else its
    first canceled task."""
    canceled = select(Task).where(Task.job_id == job_id, Task.status == TaskStatus.CANCELED.value)
    return session.scalar(
        canceled.where(~Task.last_error.contains(DEPENDENCY_ENDED, autoescape=True))
        .order_by(Task.index)
        .limit(1)
    ) or session.scalar(canceled.order_by(Task.index).limit(1))


def _job(session: Session, task: Task) -> Job:
    job = session.get(Job, task.job_id)
    assert job is not None
    return job


JOB_FAILED = "canceled: the job failed"
"""Why the unfinished tasks of a job that failed were canceled (`refresh_job`)."""


def _frames_kept(task_id: int | InstrumentedAttribute[int]) -> Select[int]:
    """How many of a task's frames have a stored output: what a task that ends without
    completing (canceled, failed for good) counts as done. Its last progress report lags
    a frame uploaded since (or was zeroed by a failure), yet the frame is on the job's
    page and in its download, and the job's count must agree with them. `task_id`: an
    id, or `Task.id` in an UPDATE of several."""
    return select(func.count(distinct(JobFile.frame))).where(
        JobFile.task_id == task_id, JobFile.kind == "output", JobFile.frame.is_not(None)
    )


_ENDED_FRAMES_DONE = case(
    (
        func.json_array_length(Task.frames) > 0,
        _frames_kept(Task.id).correlate(Task).scalar_subquery(),
    ),
    else_=Task.frames_done,
)
"""`_keep_frames_done` in an UPDATE of several tasks."""


def _keep_frames_done(session: Session, task: Task) -> None:
    """`_frames_kept` as the task's `frames_done`; a task of no frames (a tile, a video)
    keeps its own."""
    if task.frames:
        task.frames_done = session.scalar(_frames_kept(task.id)) or 0


def _fail_for_good(task: Task, now: datetime) -> None:
    """A queued or active task that will not run again. Its `last_error` is the
    caller's to say, and so is its `frames_done` (`_keep_frames_done`, or
    `_ENDED_FRAMES_DONE` for many at once)."""
    _move_task(task, TaskStatus.FAILED)
    task.finished_at = now


def _cancel(session: Session, task: Task, now: datetime, reason: str) -> None:
    """Cancel a queued or active task; its `last_error` says why (`TaskSummary.last_error`:
    why it was canceled)."""
    _move_task(task, TaskStatus.CANCELED)
    task.finished_at = now
    task.last_error = reason
    _keep_frames_done(session, task)


def _cancel_unfinished_tasks(session: Session, job_id: int, now: datetime, reason: str) -> None:
    """`_cancel` of each queued or active task of the job (both may be canceled), in one
    UPDATE: loading and writing back 9,000 queued tasks one by one held the write lock
    for a second when such a job was canceled or deleted."""
    session.flush()
    session.execute(
        update(Task)
        .where(Task.job_id == job_id, Task.status.in_(UNFINISHED_TASK_STATUSES))
        .values(
            status=TaskStatus.CANCELED.value,
            finished_at=now,
            last_error=reason,
            frames_done=_ENDED_FRAMES_DONE,
        )
    )


DEPENDENCY_ENDED = "it depends on is"
"""What the reason of a task canceled by `_cancel_dependents` says after the index of
the task it waited for (`_why_canceled` looks for it)."""


def _cancel_dependents(session: Session, task: Task, now: datetime) -> None:
    """A task that will not complete takes the tasks waiting for it down with it.

    A task may wait for this one both directly and through another of its dependents (a
    tiled range's video waits for each tile and for each frame's merge): canceled with
    the first one, it is passed by when its turn comes, not canceled twice."""
    waiting = select(TaskDependency.task_id).where(TaskDependency.depends_on_id == task.id)
    dependents = session.scalars(
        select(Task).where(Task.id.in_(waiting), Task.status.in_(UNFINISHED_TASK_STATUSES))
    ).all()
    for dependent in dependents:
        if dependent.status not in UNFINISHED_TASK_STATUSES:
            continue  # canceled already, through one of the others
        _cancel(session, dependent, now, f"task {task.index} {DEPENDENCY_ENDED} {task.status}")
        _cancel_dependents(session, dependent, now)


def _cancel_waiting_on_ended(session: Session, job_id: int, now: datetime) -> None:
    """`_cancel_dependents` for every task of the job that failed or was canceled, at
    once: after many failed together (no worker left to run them), one query rather than
    one a task, and a job that goes on (its failure share not reached) does not keep a
    video waiting for frames that will never come. Each is canceled naming the first
    task it waited for that ended."""
    session.flush()
    ended = (TaskStatus.FAILED.value, TaskStatus.CANCELED.value)
    rows = session.execute(
        select(Task, _PREREQUISITE.index, _PREREQUISITE.status)
        .join(TaskDependency, TaskDependency.task_id == Task.id)
        .join(_PREREQUISITE, _PREREQUISITE.id == TaskDependency.depends_on_id)
        .where(
            Task.job_id == job_id,
            Task.status.in_(UNFINISHED_TASK_STATUSES),
            _PREREQUISITE.status.in_(ended),
        )
        .order_by(Task.id, _PREREQUISITE.index)
    ).all()
    for task, index, status in rows:
        if task.status in UNFINISHED_TASK_STATUSES:  # else canceled by an earlier row
            _cancel(session, task, now, f"task {index} {DEPENDENCY_ENDED} {status}")
            _cancel_dependents(session, task, now)


_ASSIGN = Prepared(
    update(Task)
    .where(Task.id == bindparam("task"), Task.status == TaskStatus.QUEUED.value)
    .values(
        status=TaskStatus.ACTIVE.value,
        worker_id=bindparam("worker"),
        attempts=Task.attempts + 1,
        started_at=bindparam("now"),
        progress_at=bindparam("now"),
        finished_at=None,
        frames_done=0,
    )
    .returning(Task.id, Task.job_id, Task.type, Task.frames, Task.attempts, Task.tile)
    .execution_options(synchronize_session=False)
)
"""The claim's compare-and-set, built once (it runs on every dispatch)."""
_JOB_STATUS = Prepared(select(Job.status).where(Job.id == bindparam("job")))


@dataclass(frozen=True)
class AssignedTask:
    """What a claim hands out, read back by the claiming UPDATE itself (no second query)."""

    id: int
    job_id: int
    type: str
    frames: list[int]
    attempts: int
    tile: dict[str, int] | None = None


def try_assign_task(
    session: Session, task_id: int, worker_id: int, now: datetime, policy: Policy
) -> AssignedTask | None:
    """Hand a queued task to a worker, if it is still queued (compare-and-set).

    The conditional UPDATE is what makes claiming atomic across threads and managers: of
    two workers racing for one task, exactly one sees a changed row (and gets it back
    through RETURNING; SQLite ≥ 3.35 and PostgreSQL both have it).
    """
    connection = session.connection()
    row = _ASSIGN.first(connection, {"task": task_id, "worker": worker_id, "now": now})
    if row is None:
        return None
    assigned = AssignedTask(*row)
    job_status = _JOB_STATUS.scalar(connection, {"job": assigned.job_id})
    if job_status != JobStatus.ACTIVE.value:
        # An active job with one more active task is still active: the (per-job
        # aggregate) re-derivation is only needed for the job's first task.
        job = session.get(Job, assigned.job_id)
        assert job is not None
        refresh_job(session, job, now, policy)
    return assigned


def complete_task(session: Session, task_id: int, now: datetime, policy: Policy) -> JobStatus:
    """Complete an active task (only active → completed is allowed); the job's status after.

    One UPDATE, no task loaded: this runs on every dispatch. The job is re-derived only
    when the completion can change its status: for an active or paused job that still
    has queued or active tasks it cannot (a completion adds no failure and leaves
    something to run, so `derive_job_status` would answer the same). Checking that is one
    indexed lookup; counting the job's tasks by status scans all of them (20,000 in the
    load benchmark).
    """
    session.flush()
    connection = session.connection()
    job_id = _COMPLETE.scalar(connection, {"task": task_id, "now": now})
    if job_id is None:
        raise TransitionError(f"task {task_id} is not active; only active tasks complete")
    current = _JOB_STATUS.scalar(connection, {"job": job_id})
    assert current is not None
    status = JobStatus(current)
    if status in (JobStatus.ACTIVE, JobStatus.PAUSED) and (
        _UNFINISHED_LEFT.scalar(connection, {"job": job_id}) is not None
    ):
        return status
    job = session.get(Job, job_id)
    assert job is not None
    return refresh_job(session, job, now, policy)


_COMPLETE = Prepared(
    update(Task)
    .where(Task.id == bindparam("task"), Task.status == TaskStatus.ACTIVE.value)
    .values(
        status=TaskStatus.COMPLETED.value,
        finished_at=bindparam("now"),
        frames_done=func.json_array_length(Task.frames),
    )
    .returning(Task.job_id)
    .execution_options(synchronize_session=False)
)


_UNFINISHED_LEFT = Prepared(
    select(Task.id)
    .where(Task.job_id == bindparam("job"), one_of(Task.status, UNFINISHED_TASK_STATUSES))
    .limit(1)
)


def _ended_meanwhile(job: Job) -> JobStatus:
    """For `fail_task` and `requeue_task` given a task that is no longer active: ended
    earlier in the same transaction by a loop over several (the reaper's stuck tasks, a
    worker's forgotten ones), where one's failure failed the job and so canceled the
    others. Nothing is left to do; failing or requeueing a canceled task was a
    `TransitionError` that rolled the whole pass back, at every pass."""
    return JobStatus(job.status)


def fail_task(
    session: Session, task: Task, reason: str, now: datetime, policy: Policy
) -> JobStatus:
    """Record a failed attempt: retry, blocklist the worker, or fail the task for good.

    The task is retried until it has failed `max_attempts` times (a job may lower or
    raise that). A worker that has failed `blocklist_threshold` different tasks of this
    job is blocklisted from it (`_maybe_blocklist`); if that leaves no worker that may
    run the job's tasks, they fail with that reason instead of waiting forever.
    """
    job = _job(session, task)
    if task.status != TaskStatus.ACTIVE.value:
        return _ended_meanwhile(job)
    worker_id = task.worker_id
    session.add(TaskFailure(task_id=task.id, worker_id=worker_id, reason=reason, created_at=now))
    task.failures += 1
    task.last_error = reason
    task.frames_done = 0
    max_attempts = job.settings.get("max_attempts") or policy.max_attempts
    if task.failures >= max_attempts:
        _fail_for_good(task, now)
        _keep_frames_done(session, task)
        _cancel_dependents(session, task, now)
    else:
        _move_task(task, TaskStatus.QUEUED)
        task.worker_id = None
    if worker_id is not None:
        _maybe_blocklist(session, job, task.type, worker_id, now, policy)
    return refresh_job(session, job, now, policy)


def _maybe_blocklist(
    session: Session, job: Job, task_type: str, worker_id: int, now: datetime, policy: Policy
) -> None:
    """Blocklist the worker from the job's `task_type` tasks once it has failed
    `blocklist_threshold` *different* ones.

    Tasks, not attempts: the blocklist is for a machine that fails whatever of the job it
    is given (a missing add-on, a GPU out of memory), while one task failing again and
    again is the retry rule's business (`max_attempts`). The two only part ways when a
    worker fails one task repeatedly, and the claim hands a failed task back to the
    worker that failed it only when no other worker could take it: counting those
    attempts would blocklist a job's last worker for being the last, failing the whole
    job with "no worker left" before the task had the attempts its job allows (and
    hiding its error behind that reason).
    """
    session.flush()
    failed_tasks = session.scalar(
        select(func.count(distinct(TaskFailure.task_id)))
        .select_from(TaskFailure)
        .join(Task, Task.id == TaskFailure.task_id)
        .where(Task.job_id == job.id, Task.type == task_type, TaskFailure.worker_id == worker_id)
    )
    if (failed_tasks or 0) < policy.blocklist_threshold:
        return
    exists = session.scalar(
        select(Blocklist.id).where(
            Blocklist.worker_id == worker_id,
            Blocklist.job_id == job.id,
            Blocklist.task_type == task_type,
        )
    )
    if exists is None:
        worker = session.get(Worker, worker_id)
        session.add(
            Blocklist(
                worker_id=worker_id,
                job_id=job.id,
                task_type=task_type,
                reason=f"failed {failed_tasks} {task_type} task{'' if failed_tasks == 1 else 's'} "
                "of this job",
                created_at=now,
            )
        )
        session.flush()
        _fail_if_nobody_left(session, job, task_type, worker.name if worker else "?", now)


NOBODY_LEFT = "no worker left that may run it"
"""How the reason of a task failed by `_fail_if_nobody_left` begins (`_why_failed` looks
for it)."""

QUOTED_ERROR_CHARS = 300
"""How much of a task's own error a "no worker left" reason quotes: Blender's error may
be a page of output, and the job's reason is one line in `farmhand job` and the web."""


def quoted_error(error: str) -> str:
    """`error` on one line, cut to `QUOTED_ERROR_CHARS`."""
    line = " ".join(error.split())
    if len(line) <= QUOTED_ERROR_CHARS:
        return line
    return line[: QUOTED_ERROR_CHARS - 1] + "…"


def _fail_if_nobody_left(
    session: Session, job: Job, task_type: str, last_blocked: str, now: datetime
) -> None:
    """Fail the job's queued `task_type` tasks when no worker may run them any more.

    A job pinned to a Blender series that has nothing to show for it yet (no render
    task completed or running) is released from its pin instead: the pin exists so that
    one job's frames and tiles match, and with nothing rendered there is nothing to
    match, so the job goes on with the farm's other Blenders. Once output exists in the
    pinned series, the job fails as any other.

    Each task's reason quotes the last error the task itself failed with (or, for one
    that never failed, the job's last failure of this type: what blocklisted the
    workers), so the cause is not hidden behind "no worker left".
    """
    # Imported here: eligibility is the claim module's business, and it imports us.
    from farmhand.manager.scheduling.eligibility import eligible_workers

    if eligible_workers(session, job, task_type):
        return
    if (
        task_type == "render"
        and job.blender_pinned
        and session.scalar(_RENDERED, {"job": job.id}) is None
    ):
        job.blender_pinned = None
        session.flush()
        if eligible_workers(session, job, task_type):
            return
    blocked = session.scalar(
        select(func.count())
        .select_from(Blocklist)
        .where(Blocklist.job_id == job.id, Blocklist.task_type == task_type)
    )
    others = "none other available"
    if task_type == "render" and job.blender_pinned:
        others += f" renders with Blender {job.blender_pinned}, which its first render used"
    reason = f"{NOBODY_LEFT} ({blocked} blocklisted, last: {last_blocked}; {others})"
    own: dict[int, str] = {}
    latest: str | None = None
    for task_id, error in session.execute(
        select(TaskFailure.task_id, TaskFailure.reason)
        .join(Task, Task.id == TaskFailure.task_id)
        .where(Task.job_id == job.id, Task.type == task_type)
        .order_by(TaskFailure.id)
    ):
        own[task_id] = latest = error
    for task in session.scalars(
        select(Task).where(
            Task.job_id == job.id, Task.type == task_type, Task.status == TaskStatus.QUEUED.value
        )
    ):
        _fail_for_good(task, now)
        if task.id in own:
            task.last_error = f"{reason}; its last error: {quoted_error(own[task.id])}"
        elif latest is not None:
            task.last_error = f"{reason}; the job's last {task_type} error: {quoted_error(latest)}"
        else:
            task.last_error = reason
    session.flush()
    session.execute(
        update(Task)
        .where(
            Task.job_id == job.id,
            Task.type == task_type,
            Task.status == TaskStatus.FAILED.value,
            Task.finished_at == now,
        )
        .values(frames_done=_ENDED_FRAMES_DONE)
    )
    _cancel_waiting_on_ended(session, job.id, now)


_RENDERED = (
    select(Task.id)
    .where(
        Task.job_id == bindparam("job"),
        Task.type == "render",
        one_of(Task.status, (TaskStatus.COMPLETED.value, TaskStatus.ACTIVE.value)),
    )
    .limit(1)
)
"""A render task of the job that has output, or is making it: with its job's pin."""


def requeue_task(
    session: Session, task: Task, reason: str, now: datetime, policy: Policy
) -> JobStatus:
    """Give an active task back to the queue without counting a failure.

    For work lost through no fault of the task: a worker shutting down, going silent,
    being disabled or falling asleep.
    """
    if task.status != TaskStatus.ACTIVE.value:
        return _ended_meanwhile(_job(session, task))
    settle(session, task.job_id)  # the task is about to forget who ran it
    _move_task(task, TaskStatus.QUEUED)
    task.worker_id = None
    task.frames_done = 0
    task.last_error = reason
    return refresh_job(session, _job(session, task), now, policy)


def rerun_task(
    session: Session, task: Task, now: datetime, policy: Policy, reason: str
) -> JobStatus:
    """A person asks for a finished (or running) task to run again, from scratch;
    `reason` (`requeued by …`) becomes its `last_error`.

    The tasks that depend on it (the video of the frames) run again after it: what they
    made came from what is being redone. The tasks they all wait for that failed or were
    canceled run again before them (`_requeue_ended_prerequisites`).
    """
    job = _job(session, task)
    settle(session, job.id)
    _back_to_queue(task, reason)
    _rerun_dependents(session, task)
    _requeue_ended_prerequisites(session, job.id)
    _forgive_if_nobody_else(session, job)
    if JobStatus(job.status) in FINISHED_JOB_STATUSES:
        job.status = JobStatus.ACTIVE.value
        job.status_reason = None
        job.finished_at = None
    return refresh_job(session, job, now, policy)


def _back_to_queue(task: Task, reason: str) -> None:
    """A person's requeue: the task runs again from scratch, its failures forgotten;
    `reason` says why it is back in the queue."""
    if TaskStatus(task.status) is not TaskStatus.QUEUED:
        _move_task(task, TaskStatus.QUEUED)
    for name, value in _FROM_SCRATCH.items():
        setattr(task, name, value)
    task.last_error = reason


_FROM_SCRATCH: dict[str, Any] = {
    "worker_id": None,
    "frames_done": 0,
    "failures": 0,
    "finished_at": None,
}
"""What a person's requeue resets besides the status (`_back_to_queue`, and
`_requeue_ended_prerequisites` for many at once)."""


_PREREQUISITE = aliased(Task)
_DEPENDENT = aliased(Task)


def _rerun_outdated(session: Session, job_id: int) -> int:
    """Run again the job's running tasks that depend on a task back in the queue (a merge
    or a video under way when its tiles or frames were requeued): what they are making
    comes from what is being redone. Left running, they completed with the old tiles or
    frames and never ran again. As `rerun_task` does for one task; returns how many."""
    session.flush()
    waiting_on_queued = (
        select(TaskDependency.task_id)
        .join(_PREREQUISITE, _PREREQUISITE.id == TaskDependency.depends_on_id)
        .where(_PREREQUISITE.status == TaskStatus.QUEUED.value)
    )
    outdated = session.scalars(
        select(Task).where(
            Task.job_id == job_id,
            Task.status == TaskStatus.ACTIVE.value,
            Task.id.in_(waiting_on_queued),
        )
    ).all()
    for task in outdated:
        _back_to_queue(task, "tasks it depends on run again")
        _rerun_dependents(session, task)
    return len(outdated)


def _forgive_if_nobody_else(session: Session, job: Job) -> None:
    """After a person requeued a task: for each type of the job's queued tasks, if every
    worker that may work now and fits them is blocklisted from them, that blocklist is
    cleared, as a job's requeue clears it (`forgive`). Else they would wait for ever with
    no reason said: tasks that failed because no worker was left, back in the queue for
    a video that depends on them, and nothing to fail them again (`_fail_if_nobody_left`
    runs on a failure)."""
    # Imported here: eligibility is the claim module's business, and it imports us.
    from farmhand.manager.scheduling.eligibility import available_workers, barred_workers, fits

    session.flush()
    queued = (
        select(Task.type)
        .where(Task.job_id == job.id, Task.status == TaskStatus.QUEUED.value)
        .distinct()
    )
    workers = available_workers(session)
    for task_type in session.scalars(queued).all():
        barred = barred_workers(session, job.id, task_type)
        if not barred:
            continue
        saved, pinned = job.blender_saved, job.blender_pinned
        fitting = [w for w in workers if fits(w, job.settings, task_type, saved, pinned)]
        if fitting and all(w.id in barred for w in fitting):
            forgive(session, job.id, task_type=task_type)


REQUEUED_FOR_DEPENDENT = "a task that depends on it runs again"
"""The `last_error` of a task requeued because a task waiting for it was
(`_requeue_ended_prerequisites`)."""


def _requeue_ended_prerequisites(session: Session, job_id: int) -> None:
    """Every failed or canceled task of the job that a queued one waits for runs again,
    and so on up (a video's merges, then their tiles): a task a person requeued (or one
    that depends on it, requeued with it) would otherwise wait in the queue for ever for
    a frame canceled by hand or with its job, and the job never end. An UPDATE a level,
    not a query a task: a canceled job of 3,000 frames and a video took 6,000
    statements."""
    ended = (TaskStatus.FAILED.value, TaskStatus.CANCELED.value)
    while True:
        session.flush()
        waited_for = (
            select(TaskDependency.depends_on_id)
            .join(_DEPENDENT, _DEPENDENT.id == TaskDependency.task_id)
            .where(_DEPENDENT.job_id == job_id, _DEPENDENT.status == TaskStatus.QUEUED.value)
        )
        result = session.execute(
            update(Task)
            .where(Task.job_id == job_id, Task.status.in_(ended), Task.id.in_(waited_for))
            .values(
                status=TaskStatus.QUEUED.value, last_error=REQUEUED_FOR_DEPENDENT, **_FROM_SCRATCH
            )
            .execution_options(synchronize_session="fetch")
        )
        if not getattr(result, "rowcount", 0):
            return


def _rerun_dependents(session: Session, task: Task) -> None:
    waiting = select(TaskDependency.task_id).where(TaskDependency.depends_on_id == task.id)
    for dependent in session.scalars(
        select(Task).where(Task.id.in_(waiting), Task.status != TaskStatus.QUEUED.value)
    ):
        _back_to_queue(dependent, f"task {task.index} it depends on runs again")
        _rerun_dependents(session, dependent)


def cancel_task(
    session: Session, task: Task, now: datetime, policy: Policy, reason: str
) -> JobStatus:
    """Cancel a queued or running task (`reason`, `canceled by …`, becomes its
    `last_error`); a finished one is left as it is."""
    if TaskStatus(task.status) in (TaskStatus.QUEUED, TaskStatus.ACTIVE):
        _cancel(session, task, now, reason)
        _cancel_dependents(session, task, now)
    return refresh_job(session, _job(session, task), now, policy)


def cancel_job(session: Session, job: Job, now: datetime, reason: str) -> JobStatus:
    """Cancel a job and its unfinished tasks (`reason` is the job's and theirs); workers
    learn of it on their next call."""
    if JobStatus(job.status) in FINISHED_JOB_STATUSES:
        return JobStatus(job.status)
    job.status = JobStatus.CANCELED.value
    job.status_reason = reason
    job.finished_at = now
    _cancel_unfinished_tasks(session, job.id, now, reason)
    return JobStatus.CANCELED


def begin_deletion(session: Session, job: Job, now: datetime, reason: str) -> None:
    """Start deleting a job, atomically for everyone else: it is canceled (a worker on
    one of its tasks is told to stop, `reason` says why) and marked `DELETING`, so it
    vanishes from every listing and route and nothing of it is claimed from the commit
    on. Its rows stay for `jobs/delete.py` to remove in short transactions: deleting
    them all in this one held the database's only write lock for a minute on a big job,
    and every worker's heartbeat waited behind it.

    Its give-backs are settled in the same transaction, before its tasks go: they are
    all that may show who worked since one (`give_backs.settle`)."""
    cancel_job(session, job, now, reason)
    settle(session, job.id)
    job.status = DELETING


def pause_job(session: Session, job: Job, now: datetime, policy: Policy) -> JobStatus:
    """No new tasks of the job start; running ones finish (their frames are kept)."""
    if JobStatus(job.status) in FINISHED_JOB_STATUSES:
        raise TransitionError(f"job {job.id} is {job.status}; only unfinished jobs pause")
    job.status = JobStatus.PAUSED.value
    return refresh_job(session, job, now, policy)


def resume_job(session: Session, job: Job, now: datetime, policy: Policy) -> JobStatus:
    if JobStatus(job.status) is not JobStatus.PAUSED:
        raise TransitionError(f"job {job.id} is {job.status}, not paused")
    job.status = JobStatus.QUEUED.value
    return refresh_job(session, job, now, policy)


def requeue_job(
    session: Session, job: Job, now: datetime, policy: Policy, *, only_failed: bool, reason: str
) -> int:
    """Run a job's failed (and canceled) tasks again, or all of its tasks; `reason`
    (`requeued by …`) becomes their `last_error`. Returns how many went back to the queue.

    The job's blocklist is cleared too: the person asking has presumably fixed the cause.
    Running all of them again also frees the job of its Blender pin, unless a render task
    is still running (its frame or tile stays): every tile and frame will be rendered
    again, so the next first render may pick any Blender, and a job pinned to a Blender
    no worker has any more can run on the others. Failed ones alone keep the pin: they
    must match the frames that stay.

    A paused job stays paused: its tasks are back in the queue, but none starts until
    someone resumes it (as after requeueing or canceling one of its tasks). With no task
    to requeue, only the blocklist is cleared.
    """
    wanted = [TaskStatus.FAILED.value, TaskStatus.CANCELED.value]
    if not only_failed:
        wanted.append(TaskStatus.COMPLETED.value)
    settle(session, job.id)
    requeued = 0
    for task in session.scalars(select(Task).where(Task.job_id == job.id, Task.status.in_(wanted))):
        _back_to_queue(task, reason)
        requeued += 1
    if requeued:
        requeued += _rerun_outdated(session, job.id)
    forgive(session, job.id)
    if not requeued:
        # Nothing runs again, so the job is as it was: a completed job keeps its status
        # reason and its finish time, which re-deriving it would have moved to now.
        return 0
    if not only_failed and session.scalar(_RENDER_RUNNING, {"job": job.id}) is None:
        job.blender_pinned = None
    if JobStatus(job.status) is not JobStatus.PAUSED:
        job.status = JobStatus.QUEUED.value
    job.status_reason = None
    job.finished_at = None
    refresh_job(session, job, now, policy)
    return requeued


def forgive(
    session: Session, job_id: int, worker_id: int | None = None, task_type: str | None = None
) -> None:
    """Clear a job's blocklist entries (of one worker and task type, or all) *and* the
    failures that led to them.

    Whoever clears a blocklist says the cause is fixed (a requeue, or an admin clearing
    an entry). Left behind, the old failures would still count: the worker's next
    failure would blocklist it again at once, and the claim would still steer it away
    from tasks it failed before the fix.
    """
    settle(session, job_id)  # the failures it deletes may be all that shows work since
    tasks = select(Task.id).where(Task.job_id == job_id)
    entries = delete(Blocklist).where(Blocklist.job_id == job_id)
    failures = delete(TaskFailure)
    if worker_id is not None:
        entries = entries.where(Blocklist.worker_id == worker_id)
        failures = failures.where(TaskFailure.worker_id == worker_id)
    if task_type is not None:
        entries = entries.where(Blocklist.task_type == task_type)
        tasks = tasks.where(Task.type == task_type)
    session.flush()
    session.execute(entries.execution_options(synchronize_session=False))
    session.execute(
        failures.where(TaskFailure.task_id.in_(tasks)).execution_options(synchronize_session=False)
    )


_RENDER_RUNNING = (
    select(Task.id)
    .where(
        Task.job_id == bindparam("job"),
        Task.type == "render",
        Task.status == TaskStatus.ACTIVE.value,
    )
    .limit(1)
)


def task_is_held_by(task: Task | None, worker_id: int) -> bool:
    """Whether a worker may still report on a task: it is active and assigned to it."""
    return (
        task is not None and task.status == TaskStatus.ACTIVE.value and task.worker_id == worker_id
    )
