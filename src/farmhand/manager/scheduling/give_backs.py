"""A runner's last give-back, and whether it has been handed a task since.

A worker whose machine cannot work gives its task back with the reason and takes no
task for a while; the runners listing says so (`shared/protocol.status_note`) while the
runner idles and has been handed no task since. "Since" is read from the tasks a runner
started and the failures it had (`handed_since`), not written at each claim: the claim
is the farm's hot path (docs/PERFORMANCE.md).

That evidence goes away when a person runs a job's tasks again (they forget who ran
them, and their failures) or deletes the job; a runner whose only work since was there
then looked as if it had never worked since, and its old give-back came back hours
later. So whatever is about to forget a job's tasks first settles that job's give-backs
(`settle`): a runner it shows worked since forgets its give-back for good.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, aliased

from farmhand.manager.db.models import Task, TaskFailure, Worker


def handed_since(job_id: int | None = None) -> ColumnElement[bool]:
    """Whether `Worker` (in the enclosing query) started a task, or failed one, after
    its last give-back; only the tasks of `job_id`, if given."""
    handed = aliased(Task)
    failed_task = aliased(Task)
    started = select(handed.id).where(
        handed.worker_id == Worker.id, handed.started_at >= Worker.gave_back_at
    )
    failed = select(TaskFailure.id).where(
        TaskFailure.worker_id == Worker.id, TaskFailure.created_at >= Worker.gave_back_at
    )
    if job_id is not None:
        started = started.where(handed.job_id == job_id)
        failed = failed.join(failed_task, failed_task.id == TaskFailure.task_id).where(
            failed_task.job_id == job_id
        )
    return or_(started.exists(), failed.exists())


def settle(session: Session, job_id: int) -> None:
    """Forget the give-backs of the runners that `job_id`'s tasks show were handed work
    since, before those tasks forget who ran them; in the caller's transaction."""
    session.flush()
    session.execute(
        update(Worker)
        .where(Worker.gave_back_at.is_not(None), handed_since(job_id))
        .values(gave_back_at=None, gave_back_task_id=None, gave_back_reason=None)
        .execution_options(synchronize_session=False)
    )
