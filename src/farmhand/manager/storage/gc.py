"""Freeing blobs no job needs: garbage collection, and what deleting a job frees.

The policy (one home for it; docs/STORAGE.md explains it to people):

- A blob is *referenced* while a `job_files` row (an input or an output) names it.
- A blob is *used* once a job has named it (`blobs.used_at`, set by `mark_used`, which
  every place recording a job's file calls in the same transaction: a submission's
  inputs, an input added to a job, a runner's frames, tiles, passes and videos). Marking
  where a reference starts is the one place that sees every reference: they end in many
  (a purge, a retried frame replacing its file, an input replaced).
- A blob is *recent* while less than the grace period (`blob_grace_seconds`) has passed
  since it was created or since a client last learned the manager holds it
  (`touched_at`: a dedup hit in `/api/blobs/missing` or a repeated upload). A client
  uploads blobs first and creates the job naming them after, so a recent blob may be
  about to be referenced: it is never removed.
- Garbage collection removes unreferenced blobs no job has ever used once they are no
  longer recent: uploads no job named (an aborted submission, files sent and never
  submitted). They count for their uploaders' quota meanwhile (`storage/usage.py`);
  an uploader may release theirs sooner (`release_upload`, as a canceled `farmhand
  submit` does), otherwise this is how that usage goes away.
- It removes unreferenced blobs a job has used once `max(blob_retention_days, grace)`
  has passed since they were created or touched: whatever a deleted job left, which a
  resubmission within that time then uploads nothing for. They count for no one's
  quota meanwhile: they are kept for the farm's sake, not the user's.
- Deleting a job (`DELETE /api/jobs/{id}?purge=true`) frees at once the blobs only it
  referenced, except recently touched ones, which garbage collection takes later.

Removal is race-safe: the rows go in DELETEs whose WHERE re-checks every condition
(so a job created meanwhile keeps its blobs; on PostgreSQL the foreign key refuses the
delete outright), and a file is first moved aside and put back if its row survived.

A pass never holds the database's write lock for long (on SQLite there is one for the
whole farm, and every worker's heartbeat, upload and completion waits for it: 80,000
collectable blobs deleted in one transaction held it for 7 s). It reads the candidates
`BATCH` at a time outside any write transaction, deletes each batch's rows in a short
transaction of its own and removes their files after that commit, as deleting a job does
(`jobs/delete.py`). Two passes at once (two manager processes) each delete only rows
still collectable and remove only the files of the rows their own statement deleted; a
pass stopped between a commit and its files leaves stray files, which the next pass
sweeps.

What is derived from a blob goes with it: its cached thumbnails are removed where its
file is (`remove_blob_files`), and each pass sweeps the thumbnail cache of whatever that
missed (`storage/thumbnail_cache.py`).
"""

from __future__ import annotations

import asyncio
import enum
import os
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, BlobUpload, Job, JobFile
from farmhand.manager.db.presence import unavailable
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage import thumbnail_cache
from farmhand.manager.storage.blobs import BlobStore
from farmhand.shared.blobpaths import iter_blobs

log = structlog.get_logger(__name__)

BATCH = 500
"""Hashes per statement: SQLite allows only so many bound parameters in one query."""


@dataclass(frozen=True)
class GcReport:
    removed: int
    freed_bytes: int
    kept_unreferenced: int
    """Unreferenced blobs still inside their retention or grace period."""
    stray_files: int = 0
    """Files in the store without a row (a crash between storing and recording)."""
    thumbnails: int = 0
    """Cached thumbnails the sweep removed (those of the blobs removed go with their files
    and are not counted): of blobs gone, or named as the manager no longer makes them."""


def _unreferenced() -> ColumnElement[bool]:
    return ~exists().where(JobFile.sha256 == Blob.sha256)


def _unclaimed() -> ColumnElement[bool]:
    """No one's upload of the blob is on record (`blob_uploads`)."""
    return ~exists().where(BlobUpload.sha256 == Blob.sha256)


def _quiet_since(cutoff: datetime) -> ColumnElement[bool]:
    """Neither created nor touched after `cutoff`."""
    return and_(Blob.created_at < cutoff, or_(Blob.touched_at.is_(None), Blob.touched_at < cutoff))


def touch_blobs(session: Session, user_id: int, hashes: Collection[str], now: datetime) -> None:
    """Mark blobs a client of the user was just told are here: it may reference them any
    moment. The blobs are touched (collection spares them), and so are the user's own
    claims to them (`asked_at`): a release of theirs keeps those (`release_upload`)."""
    ordered = sorted(set(hashes))
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start : start + BATCH]
        session.execute(update(Blob).where(Blob.sha256.in_(chunk)).values(touched_at=now))
        session.execute(
            update(BlobUpload)
            .where(BlobUpload.user_id == user_id, BlobUpload.sha256.in_(chunk))
            .values(asked_at=now)
            .execution_options(synchronize_session=False)
        )


def mark_used(session: Session, hashes: Collection[str], now: datetime) -> None:
    """Mark blobs a job is naming as its files, in the transaction recording them: from
    now on they are kept for the retention once unreferenced, and no longer count as
    their uploaders' unused uploads (module docstring)."""
    ordered = sorted(set(hashes))
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start : start + BATCH]
        session.execute(
            update(Blob)
            .where(Blob.sha256.in_(chunk), Blob.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )


def _collectable(settings: ManagerSettings, now: datetime) -> ColumnElement[bool]:
    """Unreferenced, and quiet for the grace period if no job ever used it, else for
    `max(blob_retention_days, grace)`."""
    retention = max(timedelta(days=settings.blob_retention_days), _grace(settings))
    unused = and_(Blob.used_at.is_(None), _quiet_since(now - _grace(settings)))
    return and_(_unreferenced(), or_(unused, _quiet_since(now - retention)))


def _grace(settings: ManagerSettings) -> timedelta:
    return timedelta(seconds=settings.blob_grace_seconds)


def release_orphans(
    session: Session, settings: ManagerSettings, hashes: Collection[str], now: datetime
) -> list[str]:
    """Delete the rows of these blobs if nothing references them and nobody touched them
    within the grace period; the hashes whose rows went (remove their files with
    `remove_blob_files` after the commit)."""
    if not hashes:
        return []
    grace_cutoff = now - _grace(settings)
    freeable = and_(_unreferenced(), or_(Blob.touched_at.is_(None), Blob.touched_at < grace_cutoff))
    return _delete_rows(session, hashes, freeable)


def _delete_rows(
    session: Session, candidates: Collection[str], condition: ColumnElement[bool]
) -> list[str]:
    """Delete the candidates' rows that still meet `condition`; the hashes this
    statement deleted (not those another process deleted meanwhile: their files are
    its to remove)."""
    ordered = sorted(candidates)
    deleted: list[str] = []
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start : start + BATCH]
        deleted += session.scalars(
            delete(Blob)
            .where(Blob.sha256.in_(chunk), condition)
            .returning(Blob.sha256)
            .execution_options(synchronize_session=False)
        )
    return sorted(deleted)


def undo_uploads(
    context: ManagerContext, user_id: int, sent: Collection[str], created: Collection[str]
) -> None:
    """Undo what a refused upload recorded: the user's new claims to the files it sent
    (`sent`), and the rows of the blobs it created (`created`) that nothing else names
    (no job's file, no one's upload), then their files (`remove_blob_files`, which keeps
    any whose row survived). For an upload refused after it was stored (a project zip,
    or a .blend, over the quota once counted; a file Blender cannot read), so that it
    costs its sender nothing. Blobs stored before the request are never touched."""
    with context.db.transaction() as session:
        if sent:
            session.execute(
                delete(BlobUpload)
                .where(BlobUpload.user_id == user_id, BlobUpload.sha256.in_(list(sent)))
                .execution_options(synchronize_session=False)
            )
        if created:
            session.execute(
                delete(Blob)
                .where(
                    Blob.sha256.in_(list(created)),
                    _unreferenced(),
                    _unclaimed(),
                )
                .execution_options(synchronize_session=False)
            )
    if created:
        remove_blob_files(context, created)


class Release(enum.Enum):
    """What `release_upload` did (the answer to `DELETE /api/blobs/{sha256}`)."""

    NOT_THEIRS = "not theirs"
    """The user never sent these bytes (or they are not stored): nothing to release."""
    IN_THEIR_JOB = "in their job"
    """A job of the user's names the file: it counts as the job's, which holds it."""
    ASKED_SINCE = "asked since"
    """The user was told the blob is stored after they sent it (another submit of
    theirs may be about to name it): their claim is kept, for collection to take after
    the grace."""
    RELEASED = "released"
    """The user's claim is gone; so are the blob and its file if nothing else held them."""


def release_upload(context: ManagerContext, user_id: int, sha256: str) -> Release:
    """Give up the user's upload of a blob no job of theirs uses, so that it stops
    counting against their quota at once instead of after the grace period (what a
    canceled submit sent). Not if the user was told it is stored since they sent it
    (`asked_at`, by `touch_blobs`): another submit of theirs may be about to name it,
    and would be refused if their claim went (`storage/access.py`). Their claim
    (`blob_uploads`) goes; the blob's row and file go too unless anything else holds
    them: another user's claim, any job (also one that used it once: it is then kept
    for the retention, as any file a job had), or a client told about it since the claim
    (`touched_at` later). So no one else's file or job is ever affected.

    The answer depends on the user's own claim and jobs only, never on other people's
    (`storage/access.py`): whether anyone else holds the file, or asked for it, decides
    only whether the file stays, which the user is not told. `uploaded_at` is the
    user's first upload (`access.record_uploads` keeps it when they send the bytes
    again), so an ask between two uploads of theirs still keeps the claim. The DELETE
    re-checks every condition in its statement, and the file goes after the commit
    (`remove_blob_files`, which keeps it if a row came back)."""
    with context.db.transaction() as session:
        claim = session.execute(
            select(BlobUpload.uploaded_at, BlobUpload.asked_at).where(
                BlobUpload.user_id == user_id, BlobUpload.sha256 == sha256
            )
        ).one_or_none()
        if claim is None:
            return Release.NOT_THEIRS
        claimed, asked = claim
        theirs = select(JobFile.job_id).join(Job, Job.id == JobFile.job_id)
        if session.scalar(
            select(exists(theirs.where(JobFile.sha256 == sha256, Job.owner_id == user_id)))
        ):
            return Release.IN_THEIR_JOB
        if asked is not None and asked >= claimed:  # only asked while held: ties too
            return Release.ASKED_SINCE
        session.execute(
            delete(BlobUpload)
            .where(BlobUpload.user_id == user_id, BlobUpload.sha256 == sha256)
            .execution_options(synchronize_session=False)
        )
        gone = _delete_rows(
            session,
            [sha256],
            and_(
                _unreferenced(),
                Blob.used_at.is_(None),
                _unclaimed(),
                or_(Blob.touched_at.is_(None), Blob.touched_at <= claimed),
            ),
        )
    if gone:
        remove_blob_files(context, gone)
    return Release.RELEASED


def remove_blob_files(context: ManagerContext, hashes: Iterable[str]) -> int:
    """Remove the files of blobs whose rows are gone, and their cached thumbnails; bytes
    freed (of the blobs).

    The files are moved aside first, then their rows are looked up again: an upload of
    the same bytes that recorded the blob meanwhile gets its file back (and keeps its
    thumbnails).
    """
    ordered = sorted(hashes)
    freed = 0
    for start in range(0, len(ordered), BATCH):
        freed += _remove_batch(context, ordered[start : start + BATCH])
    return freed


def _remove_batch(context: ManagerContext, hashes: list[str]) -> int:
    trash_dir = context.blobs.root / "tmp"
    trash_dir.mkdir(parents=True, exist_ok=True)
    moved: list[tuple[str, Path, Path, int]] = []
    for sha in hashes:
        path = context.blobs.path_for(sha)
        trash = trash_dir / f"gc-{sha[:16]}-{uuid.uuid4().hex}"
        try:
            size = path.stat().st_size
            os.replace(path, trash)
        except FileNotFoundError:
            continue
        moved.append((sha, path, trash, size))
    if not moved:
        return 0
    with context.db.read() as session:
        revived = set(
            session.scalars(select(Blob.sha256).where(Blob.sha256.in_([m[0] for m in moved])))
        )
    freed = 0
    gone: list[str] = []
    for sha, path, trash, size in moved:
        if sha in revived and not path.exists():
            os.replace(trash, path)
            continue
        trash.unlink(missing_ok=True)
        freed += size
        gone.append(sha)
    thumbnail_cache.remove_thumbnails(thumbnail_cache.cache_dir(context.settings.data_dir), gone)
    return freed


def _stray_files(store: BlobStore, known: set[str], cutoff: datetime) -> list[Path]:
    """Files with no row, last written before `cutoff` (an upload writes the file, then
    the row, so a young file may be one whose row is on its way)."""
    return [
        blob
        for sha, blob, stat in iter_blobs(store.root)
        if sha not in known and stat.st_mtime < cutoff.timestamp()
    ]


def _collect_blobs(context: ManagerContext, eligible: ColumnElement[bool]) -> tuple[int, int]:
    """Remove the collectable blobs `BATCH` at a time, each batch's rows in a short
    transaction of its own and their files after its commit (module docstring); the
    blobs removed and the bytes freed. Candidates are read in hash order outside the
    write lock; the DELETE checks each again."""
    removed = freed = 0
    after = ""
    while True:
        with context.db.read() as session:
            batch = list(
                session.scalars(
                    select(Blob.sha256)
                    .where(Blob.sha256 > after, eligible)
                    .order_by(Blob.sha256)
                    .limit(BATCH)
                )
            )
        if not batch:
            return removed, freed
        after = batch[-1]
        with context.db.transaction() as session:
            gone = _delete_rows(session, batch, eligible)
        removed += len(gone)
        freed += remove_blob_files(context, gone)


def collect_garbage(context: ManagerContext, now: datetime) -> GcReport:
    """One garbage collection pass (the periodic loop and `farmhand admin gc` call this)."""
    settings = context.settings
    removed, freed = _collect_blobs(context, _collectable(settings, now))
    with context.db.read() as session:
        known = set(session.scalars(select(Blob.sha256)))
        kept = session.scalar(select(func.count()).select_from(Blob).where(_unreferenced()))
    strays = _stray_files(context.blobs, known, now - _grace(settings))
    for stray in strays:
        try:
            size = stray.stat().st_size
            stray.unlink()
        except OSError:
            continue
        freed += size
    thumbnails = thumbnail_cache.sweep(
        thumbnail_cache.cache_dir(settings.data_dir), known, now - _grace(settings)
    )
    report = GcReport(
        removed=removed,
        freed_bytes=freed,
        kept_unreferenced=kept or 0,
        stray_files=len(strays),
        thumbnails=thumbnails.files,
    )
    if removed or strays or thumbnails.files:
        log.info(
            "garbage collected",
            blobs=report.removed,
            freed_bytes=report.freed_bytes,
            stray_files=report.stray_files,
            kept_unreferenced=report.kept_unreferenced,
            thumbnails=thumbnails.files,
            thumbnail_bytes=thumbnails.bytes,
        )
    return report


async def gc_loop(context: ManagerContext) -> None:
    """Collect garbage every `gc_interval` seconds (the first pass one interval after
    start: a manager restarting in a crash loop should not scan the store each time).

    Like the reaper and the deletion loop, each pass first makes sure the database file
    is still the one opened (`Database.check_file`, one stat): a pass on a file moved
    away or deleted would open a new connection at its path, and so make an empty
    database there, which the next start refuses."""
    interval = context.settings.gc_interval
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            if context.db.check_file() is not None:
                continue  # said once, by whichever loop noticed; every use is refused now
            await run_in_threadpool(collect_garbage, context, utcnow())
        except Exception as error:
            if unavailable(error):  # an outage, said once by the reaper: not a bug
                log.warning("garbage collection skipped: the database is unavailable")
                continue
            log.exception("garbage collection pass failed; trying again next time")
