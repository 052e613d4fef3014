"""Which workers may run which work: availability, fit (tags, task types), blocklist.

Used by the claim (may *this* worker take *this* job?) and by the retry and blocklist
rules (is there *any other* worker that could?), so both ask the same questions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Blocklist, Job, Worker
from farmhand.shared.schemas import WorkerStatus


def available(worker: Worker) -> bool:
    """Online, enabled and awake: the worker may take new work at all."""
    return (
        worker.status != WorkerStatus.OFFLINE.value
        and worker.admin_state == "enabled"
        and not worker.asleep
    )


def task_types(worker: Worker) -> list[str]:
    types: list[str] = worker.capabilities.get("task_types") or ["render"]
    return types


def fits(worker: Worker, job_settings: dict[str, Any], task_type: str) -> bool:
    """The worker runs this task type and has every tag the job requires."""
    required = set(job_settings.get("required_tags") or ())
    tags = set(worker.capabilities.get("tags") or ())
    return task_type in task_types(worker) and required <= tags


def eligible_workers(
    session: Session, job: Job, task_type: str, exclude: Collection[int] = ()
) -> list[Worker]:
    """Available workers that fit the job and are not blocklisted from it."""
    blocked = set(
        session.scalars(
            select(Blocklist.worker_id).where(
                Blocklist.job_id == job.id, Blocklist.task_type == task_type
            )
        )
    )
    return [
        worker
        for worker in session.scalars(
            select(Worker).where(
                Worker.status != WorkerStatus.OFFLINE.value,
                Worker.admin_state == "enabled",
                Worker.asleep.is_(False),
            )
        )
        if worker.id not in blocked
        and worker.id not in exclude
        and fits(worker, job.settings, task_type)
    ]
