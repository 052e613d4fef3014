"""Admin routes: runners (health and control) and blocklists."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, aliased

from farmhand.manager.api.deps import AdminDep, Context
from farmhand.manager.api.errors import error_responses
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blocklist, DeletedRunner, Job, Task, Worker
from farmhand.manager.scheduling.give_backs import handed_since
from farmhand.manager.scheduling.state import forgive
from farmhand.manager.scheduling.workers import (
    ScheduleError,
    abort_current,
    apply_action,
    check_schedule,
    display_status,
    in_sleep_window,
)
from farmhand.shared.protocol import GaveBack, status_note
from farmhand.shared.schemas import (
    BlocklistEntry,
    RunnerAction,
    RunnerInfo,
    SleepSchedule,
    TaskStatus,
    TileSpec,
    WorkerCapabilities,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])
ERRORS = error_responses(400, 401, 403, 404)


def _runner_info(
    worker: Worker, current: tuple[Task, str] | None, gave_back: GaveBack | None
) -> RunnerInfo:
    """`current` is the runner's active task with its job's name; `gave_back` the task it
    gave back last, if it has been handed none since (`_gave_back`)."""
    task, job_name = current if current else (None, None)
    shown = display_status(worker, busy=task is not None)
    return RunnerInfo(
        id=worker.id,
        name=worker.name,
        status=shown,
        admin_state=worker.admin_state,
        asleep=worker.asleep,
        sleep_schedule=(
            SleepSchedule.from_stored(worker.sleep_schedule) if worker.sleep_schedule else None
        ),
        last_heartbeat=worker.last_heartbeat,
        current_task_id=task.id if task else None,
        current_job_id=task.job_id if task else None,
        current_task_index=task.index if task else None,
        current_job_name=job_name,
        current_task_frames_done=task.frames_done if task else None,
        current_task_frame_count=len(task.frames) if task else None,
        current_task_tile=TileSpec.model_validate(task.tile) if task and task.tile else None,
        address=worker.address,
        capabilities=WorkerCapabilities.model_validate(worker.capabilities),
        registered_at=worker.registered_at,
        status_note=status_note(worker.capabilities, shown, gave_back),
    )


def _gave_back(session: Session, worker_id: int | None = None) -> dict[int, GaveBack]:
    """The last task each runner (or the one `worker_id`) gave back itself, for those
    handed no task since: by runner id.

    Read here, at listing time, so that the claim writes nothing for it (it is the
    farm's hot path, docs/PERFORMANCE.md): `scheduling/give_backs.py` says how."""
    named = aliased(Task)
    query = (
        select(
            Worker.id,
            Worker.name,
            Worker.gave_back_task_id,
            Worker.gave_back_reason,
            named.job_id,
            named.index,
        )
        .outerjoin(named, named.id == Worker.gave_back_task_id)
        .where(Worker.gave_back_at.is_not(None), ~handed_since())
    )
    if worker_id is not None:
        query = query.where(Worker.id == worker_id)
    return {
        row.id: GaveBack(
            task=(
                f"task {row.index} of job {row.job_id}"
                if row.job_id is not None
                else "a task of a deleted job"
            ),
            reason=row.gave_back_reason or "",
            worker=row.name,
        )
        for row in session.execute(query)
    }


def _active_tasks() -> Select[Task, str]:
    """Active tasks with their jobs' names: a runner's row names what it renders without
    the caller fetching the job (a big job's every task) for it."""
    return (
        select(Task, Job.name)
        .join(Job, Job.id == Task.job_id)
        .where(Task.status == TaskStatus.ACTIVE.value)
    )


def _current_task(session: Session, worker_id: int) -> tuple[Task, str] | None:
    row = session.execute(_active_tasks().where(Task.worker_id == worker_id).limit(1)).first()
    return (row[0], row[1]) if row else None


def _worker(session: Session, worker_id: int) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"runner {worker_id} not found")
    return worker


def _announce(context: ManagerContext, worker_id: int, jobs: list[int]) -> None:
    for job_id in jobs:
        context.events.job_changed(job_id)
    context.events.runner_changed(worker_id)
    if jobs:
        context.wakeup.notify()


@router.get("/runners", response_model=list[RunnerInfo], responses=ERRORS)
def list_runners(context: Context, caller: AdminDep) -> list[RunnerInfo]:
    with context.db.read() as session:
        current = {
            task.worker_id: (task, job_name) for task, job_name in session.execute(_active_tasks())
        }
        gave_back = _gave_back(session)
        return [
            _runner_info(worker, current.get(worker.id), gave_back.get(worker.id))
            for worker in session.scalars(select(Worker).order_by(Worker.name, Worker.id))
        ]


@router.post(
    "/runners/{worker_id}/actions",
    response_model=RunnerInfo,
    responses=ERRORS,
    summary="Enable, disable or drain a runner, now or after its current task",
)
def runner_action(
    worker_id: int, body: RunnerAction, context: Context, caller: AdminDep
) -> RunnerInfo:
    with context.db.transaction() as session:
        worker = _worker(session, worker_id)
        jobs = apply_action(session, worker, body.action, body.when, utcnow(), context.policy)
        info = _runner_info(
            worker, _current_task(session, worker_id), _gave_back(session, worker_id).get(worker_id)
        )
    _announce(context, worker_id, jobs)
    return info


@router.put(
    "/runners/{worker_id}/sleep-schedule",
    response_model=RunnerInfo,
    responses=ERRORS,
    summary="Set (or clear, with no windows) the hours a runner must not render",
)
def set_sleep_schedule(
    worker_id: int, body: SleepSchedule, context: Context, caller: AdminDep
) -> RunnerInfo:
    try:
        check_schedule(body)
    except ScheduleError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    now = utcnow()
    with context.db.transaction() as session:
        worker = _worker(session, worker_id)
        worker.sleep_schedule = body.model_dump() if body.windows else None
        asleep = bool(body.windows) and in_sleep_window(body, now)
        jobs: list[int] = []
        if asleep and not worker.asleep and body.when == "now":
            reason = f"worker {worker.name} went to sleep"
            jobs = abort_current(session, worker, reason, now, context.policy)
        worker.asleep = asleep
        info = _runner_info(
            worker, _current_task(session, worker_id), _gave_back(session, worker_id).get(worker_id)
        )
    _announce(context, worker_id, jobs)
    return info


@router.delete(
    "/runners/{worker_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Delete a runner: its secret is refused from now on, its running task goes back "
    "to the queue, and it cannot register again by itself",
)
def delete_runner(worker_id: int, context: Context, caller: AdminDep) -> Response:
    """Its secret is remembered as deleted (`DeletedRunner`), so that the worker hears it
    was locked out (`deps.runner_deleted`) rather than that it is unknown, which would
    have it register again with the shared registration token."""
    now = utcnow()
    with context.db.transaction() as session:
        worker = _worker(session, worker_id)
        jobs = abort_current(session, worker, f"worker {worker.name} was deleted", now,
                             context.policy)  # fmt: skip
        session.add(
            DeletedRunner(
                secret_hash=worker.secret_hash,
                worker_id=worker.id,
                name=worker.name,
                deleted_at=now,
                deleted_by=caller.name,
            )
        )
        session.delete(worker)
    context.runner_ids.forget_worker(worker_id)
    _announce(context, worker_id, jobs)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/blocklist", response_model=list[BlocklistEntry], responses=ERRORS)
def list_blocklist(
    context: Context,
    caller: AdminDep,
    job_id: Annotated[
        int | None, Query(description="Only the entries of this job (default: every job's).")
    ] = None,
) -> list[BlocklistEntry]:
    """A `job_id` of no job is a 404, as an unknown entry is: an empty list would say
    the job has no blocklisted workers (`farmhand blocklist clear --job 12` said it
    cleared 0 entries of a job that does not exist)."""
    query = (
        select(Blocklist, Worker.name)
        .join(Worker, Worker.id == Blocklist.worker_id)
        .order_by(Blocklist.id)
    )
    if job_id is not None:
        query = query.where(Blocklist.job_id == job_id)
    with context.db.read() as session:
        if job_id is not None and not caller.sees(session.get(Job, job_id)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
        rows = session.execute(query).all()
        return [
            BlocklistEntry(
                id=entry.id,
                worker_id=entry.worker_id,
                worker=name,
                job_id=entry.job_id,
                task_type=entry.task_type,
                reason=entry.reason,
                created_at=entry.created_at,
            )
            for entry, name in rows
        ]


@router.delete("/blocklist/{entry_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def clear_blocklist_entry(entry_id: int, context: Context, caller: AdminDep) -> Response:
    with context.db.transaction() as session:
        entry = session.get(Blocklist, entry_id)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"blocklist entry {entry_id} not found")
        job_id = entry.job_id
        forgive(session, job_id, entry.worker_id, entry.task_type)
    context.events.job_changed(job_id)
    context.wakeup.notify()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
