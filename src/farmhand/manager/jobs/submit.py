"""Submitting a job: check its inputs, store it and compile its tasks in one transaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile
from farmhand.manager.scheduling.compile import compile_job
from farmhand.shared.blendfile import READ_BYTES, looks_like_blend, saved_version
from farmhand.shared.paths import UnsafePathError, safe_relative_path
from farmhand.shared.schemas import JobCreate, JobSettings, JobStatus


class SubmitError(ValueError):
    """The submission is wrong in a way the submitter can fix; the message says how."""


def _check_manifest(main_file: str, files: dict[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for raw, sha in files.items():
        try:
            path = safe_relative_path(raw)
        except UnsafePathError as error:
            raise SubmitError(str(error)) from error
        if path in clean:
            raise SubmitError(f"path {path!r} appears twice in the manifest")
        clean[path] = sha
    try:
        main = safe_relative_path(main_file)
    except UnsafePathError as error:
        raise SubmitError(str(error)) from error
    if main not in clean:
        raise SubmitError(f"main_file {main!r} is not among the job's files")
    if PurePosixPath(main).suffix.lower() != ".blend":
        raise SubmitError(f"main_file {main!r} is not a .blend file")
    return clean


def create_job(context: ManagerContext, owner_id: int, request: JobCreate) -> Job:
    """Create and compile a job whose files are already in the blob store."""
    files = _check_manifest(request.main_file, request.files)
    main = safe_relative_path(request.main_file)
    if not context.blobs.has(files[main]):
        raise _missing([files[main]])
    with context.blobs.open(files[main]) as handle:
        head = handle.read(READ_BYTES)
    if not looks_like_blend(head):
        raise SubmitError(f"{main!r} is not a .blend file (its first bytes say otherwise)")
    # Which Blender saved it: only workers with one at least that new get the job.
    saved = saved_version(head)

    now = utcnow()
    settings = JobSettings.model_validate(request.model_dump(include=set(JobSettings.model_fields)))
    with context.db.transaction() as session:
        blobs = {
            blob.sha256: blob
            for blob in session.scalars(select(Blob).where(Blob.sha256.in_(set(files.values()))))
        }
        lacking = sorted(set(files.values()) - blobs.keys())
        if lacking:
            raise _missing(lacking)
        job = add_job(session, owner_id, settings, main, now, blender_saved=saved)
        session.add_all(
            JobFile(
                job_id=job.id,
                kind="input",
                path=path,
                sha256=sha,
                size=blobs[sha].size,
                created_at=now,
            )
            for path, sha in files.items()
        )
    context.wakeup.notify()
    return job


def add_job(
    session: Session,
    owner_id: int,
    settings: JobSettings,
    main: str,
    now: datetime,
    *,
    blender_saved: str | None = None,
) -> Job:
    """A queued animation job and its tasks, in the caller's transaction.

    Every way of submitting (uploaded files, shared storage) ends here, so a job row is
    always born with its tasks in the same transaction.
    """
    job = Job(
        owner_id=owner_id,
        name=settings.name or PurePosixPath(main).stem,
        type="animation",
        status=JobStatus.QUEUED.value,
        priority=settings.priority,
        settings=settings.model_dump(mode="json"),
        main_file=main,
        blender_saved=blender_saved,
        created_at=now,
    )
    session.add(job)
    session.flush()
    compile_job(session, job, settings, now)
    return job


def _missing(hashes: list[str]) -> SubmitError:
    shown = ", ".join(hashes[:5]) + (" …" if len(hashes) > 5 else "")
    return SubmitError(f"{len(hashes)} file(s) were not uploaded first: {shown}")
