"""Deleting a job with everything only it used: tasks, logs, outputs and input blobs,
and the cached thumbnails of the blobs that go (`gc.remove_blob_files` removes those
with the blobs' files).

What "only it used" means, and why a blob someone just asked about survives, is the
storage policy in `farmhand.manager.storage.gc`.
"""

from __future__ import annotations

import shutil

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job, JobFile
from farmhand.manager.scheduling.give_backs import settle
from farmhand.manager.storage.gc import release_orphans, remove_blob_files


def delete_job(context: ManagerContext, session: Session, job: Job) -> list[str]:
    """Delete the job's rows; returns the hashes of blobs no other job refers to.

    The caller removes those blobs' files (`remove_blobs`) after the transaction has
    committed, so a failed transaction never leaves rows pointing at missing files.
    Blobs a client was told about within the grace period stay for garbage collection.
    """
    hashes = set(session.scalars(select(JobFile.sha256).where(JobFile.job_id == job.id)))
    settle(session, job.id)  # its tasks are all that may show who worked since a give-back
    session.delete(job)
    session.flush()
    orphans = release_orphans(session, context.settings, hashes, utcnow())
    context.logs.flush()  # lines still queued would make the folder again
    shutil.rmtree(context.logs.root / f"job-{job.id}", ignore_errors=True)
    return orphans


def remove_blobs(context: ManagerContext, hashes: list[str]) -> int:
    """Remove the files of blobs whose rows `delete_job` deleted, and their thumbnails;
    bytes freed."""
    return remove_blob_files(context, hashes)
