"""Deleting a job with everything only it used: tasks, logs, outputs and input blobs."""

from __future__ import annotations

import shutil

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile


def delete_job(context: ManagerContext, session: Session, job: Job) -> list[str]:
    """Delete the job's rows; returns the hashes of blobs no other job refers to.

    The caller removes those blobs' files (`remove_blobs`) after the transaction has
    committed, so a failed transaction never leaves rows pointing at missing files.
    """
    hashes = set(session.scalars(select(JobFile.sha256).where(JobFile.job_id == job.id)))
    session.delete(job)
    session.flush()
    still_used = set(
        session.scalars(select(JobFile.sha256).where(JobFile.sha256.in_(hashes)).distinct())
    )
    orphans = sorted(hashes - still_used)
    if orphans:
        session.execute(delete(Blob).where(Blob.sha256.in_(orphans)))
    shutil.rmtree(context.logs.root / f"job-{job.id}", ignore_errors=True)
    return orphans


def remove_blobs(context: ManagerContext, hashes: list[str]) -> None:
    for sha in hashes:
        context.blobs.path_for(sha).unlink(missing_ok=True)
