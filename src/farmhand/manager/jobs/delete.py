"""Deleting a job with everything only it used: tasks, logs, outputs and input blobs,
and the cached thumbnails of the blobs that go (`gc.remove_blob_files` removes those
with the blobs' files).

A deletion never holds the database's write lock for long (on SQLite there is one for
the whole farm: a big job's tasks and frames deleted in one transaction once kept every
worker's heartbeat, upload and completion waiting for a minute, past the heartbeat
timeout). It goes in steps, each its own short transaction:

1. the route marks the job `DELETING` (`scheduling.state.begin_deletion`): from that
   commit on it is gone for everyone, atomically, and nothing of it is claimed;
2. `delete_job` removes its files' rows, `BATCH_ROWS` at a time, freeing the blobs only
   they used (their files go after each batch's commit), then its tasks' rows (their
   failures and dependencies go with them), then its logs folder, and last the job row;
3. a deletion a stopped manager (or a failed request) left is finished by
   `deletion_loop` when the manager starts, and then every `gc_interval`.

Each step may run again, or in two processes at once, to the same end: a batch deletes
whatever rows of the job are left, and frees only the blobs of the rows it deleted.

What "only it used" means, and why a blob someone just asked about survives, is the
storage policy in `farmhand.manager.storage.gc`.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job, JobFile, Task
from farmhand.manager.db.presence import unavailable
from farmhand.manager.scheduling.state import DELETING
from farmhand.manager.storage.gc import release_orphans, remove_blob_files

log = structlog.get_logger(__name__)

BATCH_ROWS = 500
"""Rows one transaction of a deletion removes at most (and hashes per statement, within
SQLite's bound parameters): a few milliseconds of the write lock each, so the runners'
writes wait for one batch at most, never for the whole job."""

_running: set[tuple[str, int]] = set()
_running_lock = threading.Lock()


@contextmanager
def _ours(context: ManagerContext, job_id: int) -> Iterator[bool]:
    """Whether this thread is the process's only one deleting the job (the request that
    began it, or `deletion_loop` finishing it): two would only take turns at the same
    rows. Keyed by database too: tests run several managers in one process."""
    key = (context.db.url, job_id)
    with _running_lock:
        mine = key not in _running
        _running.add(key)
    try:
        yield mine
    finally:
        if mine:
            with _running_lock:
                _running.discard(key)


def delete_job(context: ManagerContext, job_id: int) -> bool:
    """Remove a job `begin_deletion` marked, and its rows, logs and unused blobs, in
    short transactions (module docstring); nothing if it is not marked or is gone.
    False if another thread of this process is deleting it."""
    with _ours(context, job_id) as mine:
        if not mine:
            return False
        while _delete_files(context, job_id):
            pass
        while _delete_tasks(context, job_id):
            pass
        context.logs.flush()  # lines still queued would make the folder again
        shutil.rmtree(context.logs.root / f"job-{job_id}", ignore_errors=True)
        with context.db.transaction() as session:
            # Its blocklist entries go with it (a handful: one per worker at most).
            session.execute(
                delete(Job)
                .where(Job.id == job_id, Job.status == DELETING)
                .execution_options(synchronize_session=False)
            )
        return True


def _delete_files(context: ManagerContext, job_id: int) -> bool:
    """Delete a batch of the job's files' rows and free the blobs nothing else uses;
    whether there were any. The blobs' files go after the commit, so a failed
    transaction never leaves rows naming missing files."""
    batch = select(JobFile.id).where(JobFile.job_id == job_id).limit(BATCH_ROWS)
    with context.db.transaction() as session:
        hashes = set(
            session.scalars(
                delete(JobFile)
                .where(JobFile.id.in_(batch.scalar_subquery()))
                .returning(JobFile.sha256)
                .execution_options(synchronize_session=False)
            )
        )
        # Blobs a client was told about within the grace period stay for garbage
        # collection; so does one another job (or another batch of this one) still names.
        orphans = release_orphans(session, context.settings, hashes, utcnow())
    remove_blob_files(context, orphans)
    return bool(hashes)


def _delete_tasks(context: ManagerContext, job_id: int) -> bool:
    """Delete a batch of the job's tasks (their failures and dependencies go with them
    through their foreign keys); whether there were any."""
    batch = select(Task.id).where(Task.job_id == job_id).limit(BATCH_ROWS)
    with context.db.transaction() as session:
        deleted = session.scalars(
            delete(Task)
            .where(Task.id.in_(batch.scalar_subquery()))
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        ).all()
    return bool(deleted)


def finish_deletions(context: ManagerContext) -> None:
    """Finish every deletion that was begun and not finished (a manager stopped in the
    middle, a request that failed on a database error)."""
    with context.db.read() as session:
        marked = list(session.scalars(select(Job.id).where(Job.status == DELETING)))
    for job_id in marked:
        if delete_job(context, job_id):
            log.info("finished deleting a job a stop had cut short", job_id=job_id)


async def deletion_loop(context: ManagerContext) -> None:
    """Finish left deletions soon after start, then every `gc_interval` (if garbage
    collection runs): until then such a job is invisible and unclaimable, only its
    storage waits."""
    # Like the reaper: one reaper interval after start, and one stat of the database
    # file before each pass. A pass at the very start, on a file being moved away, opened
    # a new connection there and so made an empty database at its path.
    await asyncio.sleep(context.settings.reaper_interval)
    while True:
        try:
            if context.db.check_file() is None:
                await run_in_threadpool(finish_deletions, context)
        except Exception as error:
            if unavailable(error):  # an outage, said once by the reaper: not a bug
                log.warning("finishing job deletions skipped: the database is unavailable")
            else:
                log.exception("finishing job deletions failed; trying again next time")
        if context.settings.gc_interval <= 0:
            return
        await asyncio.sleep(context.settings.gc_interval)
