"""Submitting a job: check its inputs, store it and compile its tasks in one transaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile, Task
from farmhand.manager.scheduling.compile import compile_job
from farmhand.manager.storage.access import readable
from farmhand.manager.storage.gc import mark_used
from farmhand.shared.blendfile import READ_BYTES, cannot_open, looks_like_blend, saved_version
from farmhand.shared.blendscene import rendered_views_bounded, tiles_refusal
from farmhand.shared.paths import UnsafePathError, check_coexisting, safe_relative_path
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
        check_coexisting(clean)
    except UnsafePathError as error:
        raise SubmitError(str(error)) from error
    try:
        main = safe_relative_path(main_file)
    except UnsafePathError as error:
        raise SubmitError(str(error)) from error
    if main not in clean:
        raise SubmitError(f"main_file {main!r} is not among the job's files")
    if PurePosixPath(main).suffix.lower() != ".blend":
        raise SubmitError(f"main_file {main!r} is not a .blend file")
    return clean


def main_blend_version(
    context: ManagerContext, path: str, sha256: str, *, blender_range: str | None, tiled: bool
) -> str | None:
    """The Blender version that saved the stored blob `sha256`, to be the main file
    `path` of a job asking for Blenders in `blender_range`, in tiles if `tiled`; a
    SubmitError if its first bytes are not a .blend's, if no Blender in the range can
    open it, or if its scene renders several views and the job asks for tiles
    (`tiles_refusal`: every tile task would fail on the worker).

    Whatever sets a job's main file calls this (a submission, a replacement uploaded
    later), so the job never holds a main file Blender cannot open, nor one that only
    Blenders outside its range could (it would wait forever: no worker added later
    helps), nor a stereo scene to render in tiles, and its `blender_saved` (only workers
    with a Blender at least that new get the job) is always that of the file it holds."""
    with context.blobs.open(sha256) as handle:
        head = handle.read(READ_BYTES)
    if not looks_like_blend(head):
        raise SubmitError(f"{path!r} is not a .blend file (its first bytes say otherwise)")
    saved = saved_version(head)
    problem = cannot_open(saved, blender_range, repr(path)) or tiles_refusal(
        context.blobs.path_for(sha256), tiled, repr(path), read=rendered_views_bounded
    )
    if problem is not None:
        raise SubmitError(problem)
    return saved


def inputs_fixed_because(session: Session, job: Job) -> str | None:
    """Why the job's input files can no longer change, or None while they can.

    Inputs change only while no frame can have been rendered from them: the job is queued
    or paused and none of its tasks was ever handed to a worker. A paused job may still
    have tasks running (pausing starts no new ones), and a worker that rendered a task
    holds the old files in its cache; new inputs then would give frames of two versions.
    Call it in the (write) transaction that changes the inputs: on PostgreSQL it locks
    the job's tasks, so a claim waits for that transaction and then hands out the new
    inputs; on SQLite the transaction is the only writer anyway."""
    if job.status not in (JobStatus.QUEUED.value, JobStatus.PAUSED.value):
        return f"job {job.id} is {job.status}; its inputs are fixed"
    session.execute(select(Task.id).where(Task.job_id == job.id).with_for_update())
    started = session.scalar(
        select(Task.index)
        .where(Task.job_id == job.id, Task.attempts > 0)
        .order_by(Task.index)
        .limit(1)
    )
    if started is not None:
        return (
            f"job {job.id} has started rendering (task {started} was handed to a worker); "
            "its inputs are fixed: submit a new job"
        )
    return None


def create_job(context: ManagerContext, owner_id: int, request: JobCreate) -> Job:
    """Create and compile a job whose files are already in the blob store.

    Every file must be one the owner may read (`storage/access.py`: they uploaded it,
    it is a file of one of their jobs, or they are an admin): someone else's file,
    named by its hash, is refused exactly as a file never uploaded, before anything of
    it is read, so the answer tells nothing about other people's files."""
    files = _check_manifest(request.main_file, request.files)
    main = safe_relative_path(request.main_file)
    with context.db.read() as session:
        allowed = readable(session, owner_id, set(files.values()))
    lacking = sorted(set(files.values()) - allowed)
    if lacking:
        raise _missing(lacking)
    if not context.blobs.has(files[main]):
        raise _missing([files[main]])
    settings = JobSettings.model_validate(request.model_dump(include=set(JobSettings.model_fields)))
    saved = main_blend_version(
        context,
        main,
        files[main],
        blender_range=settings.blender_version,
        tiled=settings.tiles is not None,
    )

    now = utcnow()
    with context.db.transaction() as session:
        blobs = {
            blob.sha256: blob
            for blob in session.scalars(select(Blob).where(Blob.sha256.in_(set(files.values()))))
        }
        lacking = sorted(set(files.values()) - blobs.keys())
        if lacking:
            raise _missing(lacking)
        job = add_job(session, owner_id, settings, main, now, blender_saved=saved)
        if request.missing_count:
            job.missing_files = list(request.missing_files)
            job.missing_count = request.missing_count
        # One executemany, not an ORM object per file: a job may list 100,000 files, and
        # the database's write lock (every runner's report waits on it) is held meanwhile.
        session.execute(
            insert(JobFile),
            [
                {
                    "job_id": job.id,
                    "kind": "input",
                    "path": path,
                    "sha256": sha,
                    "size": blobs[sha].size,
                    "created_at": now,
                }
                for path, sha in files.items()
            ],
        )
        mark_used(session, blobs.keys(), now)
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
