"""Admin routes for storage: who uses how much, and garbage collection on demand.

Usage counts, besides the blobs, the bytes held in unfinished resumable uploads
(`storage/partial_uploads.py`), in total and per user: they are on the disk but in no
blob yet, and count towards their owner's quota by their announced size. The thumbnail
cache is reported too: it is on the same disk, outside the blob store."""

from __future__ import annotations

import shutil

from fastapi import APIRouter
from sqlalchemy import exists, func, select
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import AdminDep, Context
from farmhand.manager.api.errors import error_responses
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile, User
from farmhand.manager.scheduling.state import shown_jobs
from farmhand.manager.storage import thumbnail_cache
from farmhand.manager.storage.gc import collect_garbage
from farmhand.manager.storage.partial_uploads import OpenUpload
from farmhand.manager.storage.usage import user_usage_bytes
from farmhand.shared.schemas import GcResult, StorageUsage, UserUsage

router = APIRouter(prefix="/api/admin", tags=["admin"])
ERRORS = error_responses(401, 403)


def storage_usage(context: ManagerContext) -> StorageUsage:
    uploads: dict[int, list[OpenUpload]] = {}
    for upload in context.blobs.partials.open_uploads():
        uploads.setdefault(upload.session.owner_id, []).append(upload)
    with context.db.read() as session:
        count, total = session.execute(
            select(func.count(), func.coalesce(func.sum(Blob.size), 0)).select_from(Blob)
        ).one()
        referenced = session.scalar(
            select(func.coalesce(func.sum(Blob.size), 0)).where(
                exists().where(JobFile.sha256 == Blob.sha256)
            )
        )
        job_counts: dict[int, int] = {
            owner: count
            for owner, count in session.execute(
                # A job being deleted is gone for everyone, here too (its files still
                # count in `bytes` until they are removed: they are still on disk).
                select(Job.owner_id, func.count()).where(shown_jobs()).group_by(Job.owner_id)
            )
        }
        users = [
            UserUsage(
                user_id=user.id,
                name=user.name,
                role=user.role,
                jobs=job_counts.get(user.id, 0),
                bytes=user_usage_bytes(session, user.id),
                open_uploads=len(uploads.get(user.id, ())),
                open_upload_bytes=sum(u.received for u in uploads.get(user.id, ())),
                open_upload_reserved_bytes=sum(u.session.size for u in uploads.get(user.id, ())),
            )
            for user in session.scalars(select(User).order_by(User.id))
        ]
    thumbnails = thumbnail_cache.cache_size(thumbnail_cache.cache_dir(context.settings.data_dir))
    disk = shutil.disk_usage(context.blobs.root)
    return StorageUsage(
        blobs=int(count),
        total_bytes=int(total),
        referenced_bytes=int(referenced or 0),
        unreferenced_bytes=int(total) - int(referenced or 0),
        open_uploads=sum(len(held) for held in uploads.values()),
        open_upload_bytes=sum(u.received for held in uploads.values() for u in held),
        thumbnail_files=thumbnails.files,
        thumbnail_bytes=thumbnails.bytes,
        disk_total_bytes=disk.total,
        disk_free_bytes=disk.free,
        blob_retention_days=context.settings.blob_retention_days,
        blob_grace_seconds=context.settings.blob_grace_seconds,
        user_quota_bytes=context.settings.user_quota_bytes,
        users=sorted(users, key=lambda u: (-u.bytes - u.open_upload_bytes, u.name)),
    )


@router.get(
    "/usage",
    response_model=StorageUsage,
    responses=ERRORS,
    summary="Storage used: the blob store, the disk under it, and per user",
)
def get_usage(context: Context, caller: AdminDep) -> StorageUsage:
    return storage_usage(context)


@router.post(
    "/gc",
    response_model=GcResult,
    responses=ERRORS,
    summary="Run garbage collection now (it also runs every gc_interval seconds)",
)
async def run_gc(context: Context, caller: AdminDep) -> GcResult:
    report = await run_in_threadpool(collect_garbage, context, utcnow())
    return GcResult(
        removed=report.removed,
        freed_bytes=report.freed_bytes,
        kept_unreferenced=report.kept_unreferenced,
        stray_files=report.stray_files,
    )
