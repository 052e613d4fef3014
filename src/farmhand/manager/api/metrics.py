"""`GET /metrics`: the farm in Prometheus' text format, for dashboards and alerts.

Every value is read from the database (and the data directory's disk) when scraped, so
any manager process sharing the database answers the same and a restart loses nothing.
Readers: admins, or whoever holds `FARMHAND_METRICS_TOKEN` (a scraper's token that can
read this and nothing else). Runner names appear as label values; they are escaped.
"""

from __future__ import annotations

import hmac
import shutil
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farmhand import __version__
from farmhand.manager.api.deps import Context, Credentials, current_admin, current_user
from farmhand.manager.api.errors import error_responses
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Blocklist, Job, JobFile, Task, Worker
from farmhand.manager.scheduling.workers import display_status
from farmhand.shared.metrics import CONTENT_TYPE, Family, render
from farmhand.shared.schemas import JobStatus, TaskStatus, WorkerStatus

router = APIRouter(tags=["metrics"])


def metrics_reader(request: Request, context: Context, credentials: Credentials) -> None:
    """The metrics token, or else an admin's credentials (401/403 as for admin routes)."""
    token = context.settings.metrics_token
    if token and credentials and hmac.compare_digest(credentials.credentials, token):
        return
    current_admin(current_user(request, context, credentials))


def _by_status(family: Family, counts: dict[str, int], statuses: list[str], **labels: str) -> None:
    """Every status gets a sample, 0 included: a series that vanishes reads as 'no data'."""
    for status in statuses:
        family.add(counts.get(status, 0), status=status, **labels)


def _jobs(session: Session, now: datetime) -> list[Family]:
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    jobs = Family("farmhand_jobs", "Jobs in the database, by status.")
    _by_status(jobs, counts, [s.value for s in JobStatus])
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == "queued"))
    waiting = Family(
        "farmhand_oldest_queued_job_age_seconds",
        "How long the oldest job nobody has started rendering has waited (0: none waits).",
    ).add(max((now - oldest).total_seconds(), 0.0) if oldest else 0)
    return [jobs, waiting]


def _tasks(session: Session) -> list[Family]:
    counts: dict[str, dict[str, int]] = {"render": {}}
    for task_type, status, count in session.execute(
        select(Task.type, Task.status, func.count()).group_by(Task.type, Task.status)
    ):
        counts.setdefault(task_type, {})[status] = count
    tasks = Family("farmhand_tasks", "Tasks of the jobs in the database, by type and status.")
    for task_type, by_status in sorted(counts.items()):
        _by_status(tasks, by_status, [s.value for s in TaskStatus], type=task_type)
    # A frame is its `output` row (a tiled still's merged image too); its preview JPEG
    # and File Output passes carry its number as well, and tiles and a video none.
    stored = select(func.count()).where(JobFile.kind == "output", JobFile.frame.is_not(None))
    frames = Family(
        "farmhand_frames_stored", "Rendered frames stored, verified, for jobs not deleted."
    ).add(session.scalar(stored) or 0)
    return [tasks, frames]


def _runners(session: Session, now: datetime) -> list[Family]:
    busy = set(session.scalars(select(Task.worker_id).where(Task.status == "active")))
    counts: dict[str, int] = {}
    age = Family(
        "farmhand_runner_heartbeat_age_seconds",
        "Seconds since each runner was last heard from (alert on a machine gone quiet).",
    )
    for worker in session.scalars(select(Worker).order_by(Worker.id)):
        status = display_status(worker, busy=worker.id in busy).value
        counts[status] = counts.get(status, 0) + 1
        if worker.last_heartbeat is not None:
            seconds = max((now - worker.last_heartbeat).total_seconds(), 0.0)
            age.add(round(seconds, 3), id=str(worker.id), name=worker.name)
    runners = Family("farmhand_runners", "Registered runners, by the status the web UI shows.")
    _by_status(runners, counts, [s.value for s in WorkerStatus])
    # An entry bars a runner from one task type of a job: one failing a job's renders
    # and its video is two entries, and one runner kept off that job.
    kept_off = select(Blocklist.worker_id, Blocklist.job_id).distinct().subquery()
    blocklisted = Family(
        "farmhand_blocklist_entries",
        "Runners kept off a job (some or all of its task types) after failing its tasks: "
        "one per runner and job.",
    ).add(session.scalar(select(func.count()).select_from(kept_off)) or 0)
    return [runners, age, blocklisted]


def _storage(session: Session, context: ManagerContext) -> list[Family]:
    count, size = session.execute(select(func.count(), func.sum(Blob.size))).one()
    disk = shutil.disk_usage(context.settings.data_dir)
    return [
        Family("farmhand_blobs", "Files in the blob store.").add(count or 0),
        Family("farmhand_blob_bytes", "Bytes in the blob store.").add(size or 0),
        Family("farmhand_data_disk_free_bytes", "Free bytes on the data directory's disk.").add(
            disk.free
        ),
        Family("farmhand_data_disk_size_bytes", "Size of the data directory's disk.").add(
            disk.total
        ),
    ]


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4."},
        **error_responses(401, 403),
    },
    summary="The farm's jobs, tasks, runners and storage, for Prometheus",
)
def metrics(context: Context, _: Annotated[None, Depends(metrics_reader)]) -> PlainTextResponse:
    now = utcnow()
    with context.db.read() as session:
        families = [
            Family("farmhand_info", "This manager's version and database.").add(
                1, version=__version__, database=context.db.engine.dialect.name
            ),
            *_jobs(session, now),
            *_tasks(session),
            *_runners(session, now),
            *_storage(session, context),
        ]
    return PlainTextResponse(render(families), media_type=CONTENT_TYPE)
