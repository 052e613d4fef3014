"""How much storage a user occupies: the quota's measure, and the admin usage views'.

A user's usage is the total size of the distinct blobs their jobs reference, inputs and
outputs alike, and of the blobs they uploaded that no job has ever used (a submission's
files before its job is made, or files never submitted: they stay on the disk for the
grace period, so they are someone's). Blobs are content-addressed, so a file used by ten
of their jobs counts once; a file shared with someone else's job counts for both,
because deleting one person's jobs would not free it.

A blob a job has used counts only while a job references it: a purged job's files stop
counting for its owner at once, even those garbage collection keeps for the retention
or the grace period (the policy is `storage/gc.py`'s).

The quota also counts a user's unfinished resumable uploads, by the size each announced
(`manager/api/limits.py` `enforce_quota`); they are no blobs yet, so not part of this
measure, and the admins' usage figures show them apart (`manager/api/usage.py`).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import CompoundSelect, Select, func, select, union
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Blob, BlobUpload, Job, JobFile
from farmhand.manager.storage.access import readable


def _unused_uploads(user_id: int) -> Select[str]:
    """What the user uploaded that no job has ever used. Garbage collection removes
    these once their grace period has passed, which is what makes counting them fair:
    waiting frees them, and their uploader may release one sooner (`gc.release_upload`)."""
    return (
        select(BlobUpload.sha256)
        .join(Blob, Blob.sha256 == BlobUpload.sha256)
        .where(BlobUpload.user_id == user_id, Blob.used_at.is_(None))
    )


def _user_blobs(user_id: int) -> CompoundSelect[str]:
    """The hashes a user's usage counts: their jobs' files, and their unused uploads.
    Without the second, uploading without ever submitting kept any amount on the disk
    outside the quota."""
    of_jobs = (
        select(JobFile.sha256).join(Job, Job.id == JobFile.job_id).where(Job.owner_id == user_id)
    )
    return union(of_jobs, _unused_uploads(user_id))


def user_usage_bytes(session: Session, user_id: int) -> int:
    """Bytes of the distinct blobs referenced by the user's jobs (inputs and outputs) or
    uploaded by them and never used by a job."""
    total = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.sha256.in_(_user_blobs(user_id)))
    )
    return int(total or 0)


def largest_counted_blob(session: Session, user_id: int) -> int:
    """The size of the largest blob `user_usage_bytes` counts (0 for none). A file of
    unknown content that is larger cannot be one of them, so it will cost its whole
    size: an upload read as it arrives (`limits.upload_allowance`) is refused once it passes
    both this and the room under the quota, before its hash is known."""
    largest = session.scalar(
        select(func.coalesce(func.max(Blob.size), 0)).where(Blob.sha256.in_(_user_blobs(user_id)))
    )
    return int(largest or 0)


def unused_upload_bytes(session: Session, user_id: int) -> int:
    """The part of `user_usage_bytes` that is uploads no job has used: what a 413 names
    apart, since deleting jobs does not free it."""
    total = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(
            Blob.sha256.in_(_unused_uploads(user_id))
        )
    )
    return int(total or 0)


def usage_with(session: Session, user_id: int, sha256s: Collection[str]) -> int:
    """The user's usage if their jobs also referenced these blobs (those not yet counted).

    Only blobs the user may read count (`storage/access.py`); someone else's file named
    by its hash counts nothing, as a hash that is not stored, so a quota's answer tells
    nothing about other people's files (a job naming one is refused anyway)."""
    current = user_usage_bytes(session, user_id)
    named = readable(session, user_id, sha256s) if sha256s else set()
    if not named:
        return current
    added = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(
            Blob.sha256.in_(named), Blob.sha256.not_in(_user_blobs(user_id))
        )
    )
    return current + int(added or 0)
