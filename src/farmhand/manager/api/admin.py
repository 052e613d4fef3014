"""Admin routes: the runners and their health."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from farmhand.manager.api.deps import AdminDep, Context
from farmhand.manager.db.models import Task, Worker
from farmhand.shared.schemas import RunnerInfo, TaskStatus, WorkerCapabilities, WorkerStatus

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/runners", response_model=list[RunnerInfo])
def list_runners(context: Context, caller: AdminDep) -> list[RunnerInfo]:
    with context.db.transaction() as session:
        current = {
            task.worker_id: task
            for task in session.scalars(select(Task).where(Task.status == TaskStatus.ACTIVE.value))
        }
        runners = []
        for worker in session.scalars(select(Worker).order_by(Worker.name, Worker.id)):
            task = current.get(worker.id)
            shown = WorkerStatus(worker.status)
            if shown is WorkerStatus.IDLE and task is not None:
                shown = WorkerStatus.BUSY
            runners.append(
                RunnerInfo(
                    id=worker.id,
                    name=worker.name,
                    status=shown,
                    last_heartbeat=worker.last_heartbeat,
                    current_task_id=task.id if task else None,
                    current_job_id=task.job_id if task else None,
                    capabilities=WorkerCapabilities.model_validate(worker.capabilities),
                    registered_at=worker.registered_at,
                )
            )
        return runners
