"""Whose blobs are whose: a hash names a stored file only for those who may read it.

Blobs are content-addressed and kept once, whoever sent them. That must not make a
hash a key to the file: knowing the SHA-256 of someone else's .blend (a common asset, a
file they shared elsewhere, a leaked list) must neither tell a user it is stored nor let
them name it in a job and download it back. So a stored blob counts as *present for a
user* only if they may read it:

- they uploaded it themselves (`blob_uploads`: `PUT /api/blobs/{sha256}`, a resumable
  upload, a project zip, `/api/blend-info`), which proves they hold the bytes;
- it is a file (input or output) of a job they own;
- they are an admin (who sees every job anyway).

A `.blend` sent with a multipart job is recorded as uploaded by its sender before the
job naming it is made (`api/uploads.sent_by`, as every upload route does).

Anyone else is told it is missing (`/api/blobs/missing`, a resumable upload's start),
exactly as for a hash that is not stored, and a job naming it is refused as one naming
a file that was never uploaded. The client then uploads the bytes, which proves it
holds them; the store still keeps one copy on disk.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Blob, BlobUpload, Job, JobFile, User
from farmhand.manager.storage.blobs import StoredBlob

BATCH = 500
"""Hashes per statement: SQLite allows only so many bound parameters in one query."""

_NEW_UPLOAD = {
    "sqlite": sqlite_insert(BlobUpload).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(BlobUpload).on_conflict_do_nothing(),
}
NEW_BLOB = {
    "sqlite": sqlite_insert(Blob).on_conflict_do_nothing(index_elements=[Blob.sha256]),
    "postgresql": postgresql_insert(Blob).on_conflict_do_nothing(index_elements=[Blob.sha256]),
}
"""A blob's row unless it has one, per dialect: one statement, and two uploads of the
same bytes at once (a retry racing the first) cannot both insert."""


def _chunks(hashes: Collection[str]) -> Iterable[list[str]]:
    ordered = sorted(set(hashes))
    for start in range(0, len(ordered), BATCH):
        yield ordered[start : start + BATCH]


def is_admin(session: Session, user_id: int) -> bool:
    return session.scalar(select(User.role).where(User.id == user_id)) == "admin"


def readable(
    session: Session, user_id: int, hashes: Collection[str], *, admin: bool | None = None
) -> set[str]:
    """The hashes among `hashes` that are stored (have a row) and that the user may
    read (module docstring). `admin` None: looked up.

    The work done does not depend on whether a hash is stored, so neither the answer
    nor the time it takes tells a user about other people's files: each hash is looked
    up among the blobs, among the user's uploads and, if it is not one of those, among
    the files of the user's jobs (by hash: `ix_job_files_sha256`), so the cost grows
    with the hashes asked about, not with anyone's files.
    Use a read transaction: the pass holds no write lock then."""
    wanted = set(hashes)
    stored: set[str] = set()
    for chunk in _chunks(wanted):
        stored.update(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(chunk))))
    if admin is None:
        admin = is_admin(session, user_id)
    if admin:
        return stored
    mine: set[str] = set()
    for chunk in _chunks(wanted):
        mine.update(
            session.scalars(
                select(BlobUpload.sha256).where(
                    BlobUpload.user_id == user_id, BlobUpload.sha256.in_(chunk)
                )
            )
        )
    rest = wanted - mine
    for chunk in _chunks(rest):
        # Outputs, files added to a job with its upload route, uploads from before the
        # uploaders were recorded; or hashes that are someone else's or nobody's.
        mine.update(
            session.scalars(
                select(JobFile.sha256)
                .join(Job, Job.id == JobFile.job_id)
                .where(JobFile.sha256.in_(chunk), Job.owner_id == user_id)
            )
        )
    return mine & stored


def record_uploads(
    session: Session, user_id: int, stored: Iterable[StoredBlob], now: datetime
) -> None:
    """Record that the user sent these blobs' bytes, in the caller's transaction, and
    that they are touched (about to be named in a job: garbage collection spares them).

    Each blob's own row is recorded again if it is missing: garbage collection may have
    taken the row of an old, unused blob between its upload's recording and this (its
    file is then put back: `gc.remove_blob_files` looks for the row again). Sending a
    blob again changes nothing else."""
    blobs = {blob.sha256: blob for blob in stored}
    connection = session.connection()
    dialect = connection.dialect.name
    for chunk in _chunks(blobs):
        connection.execute(
            NEW_BLOB[dialect],
            [
                {
                    "sha256": sha,
                    "size": blobs[sha].size,
                    "crc32": blobs[sha].crc32,
                    "created_at": now,
                }
                for sha in chunk
            ],
        )
        session.execute(update(Blob).where(Blob.sha256.in_(chunk)).values(touched_at=now))
        connection.execute(
            _NEW_UPLOAD[dialect],
            [{"sha256": sha, "user_id": user_id, "uploaded_at": now} for sha in chunk],
        )
