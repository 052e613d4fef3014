"""People's job routes: submit, list, inspect, cancel, files and outputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import PurePosixPath
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.disposition import attachment, header_text
from farmhand.manager.api.downloads import blob_download, download, download_route, is_head
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.form_file import FormFile, form_body, form_schema
from farmhand.manager.api.limits import (
    declared_length,
    enforce_quota,
    manifest_body,
    refuse_hopeless_upload,
    within_allowance,
)
from farmhand.manager.api.ranges import etag_of, requested_part
from farmhand.manager.api.streaming import ClosingStreamingResponse
from farmhand.manager.api.uploads import KeptUpload, checked_name, ingest, receiving
from farmhand.manager.clock import utcnow
from farmhand.manager.connections import cut_off
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Blob, Job, JobFile, Task, User
from farmhand.manager.jobs.delete import delete_job
from farmhand.manager.jobs.shared import create_shared_job, create_uploaded_job
from farmhand.manager.jobs.submit import SubmitError, inputs_fixed_because, main_blend_version
from farmhand.manager.jobs.views import file_model, job_detail, job_summaries, task_page
from farmhand.manager.scheduling.state import (
    FINISHED_JOB_STATUSES,
    TransitionError,
    begin_deletion,
    cancel_job,
    cancel_task,
    pause_job,
    requeue_job,
    rerun_task,
    resume_job,
    shown_jobs,
)
from farmhand.manager.storage.archive import EntryVanished, StoredOutput, output_names
from farmhand.manager.storage.blobs import StoredBlob
from farmhand.manager.storage.gc import mark_used
from farmhand.manager.storage.zipplan import ZipEntry, ZipPlan, blob_facts, store_crc32s
from farmhand.shared.outputnames import (
    DOWNLOADED_KINDS,
    TemplateError,
    check_template,
    safe_component,
)
from farmhand.shared.paths import UnsafePathError, check_coexisting, safe_relative_path
from farmhand.shared.schemas import (
    JobAccepted,
    JobAction,
    JobActionOutcome,
    JobCreate,
    JobDetail,
    JobDetailQuery,
    JobListQuery,
    JobPatch,
    JobSettings,
    JobStatus,
    JobSummary,
    SharedJobCreate,
    TaskAction,
    TaskListQuery,
    TaskSummary,
)
from farmhand.shared.schemas import JobFile as JobFileModel

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

ERRORS = error_responses(400, 401, 404)

SETTINGS_FIELD = "settings"
"""The multipart submit's text field: its `JobSettings` as JSON."""
PATH_FIELD = "path"
"""`upload_job_file`'s text field: where the file goes among the job's inputs."""
PATH_MAX_LENGTH = 1024


def _inline_definitions(
    schema: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()
) -> Any:
    """`schema` with each `#/$defs/…` reference replaced by the definition it names.

    A reference in `openapi_extra` resolves against the whole OpenAPI document, whose
    components FastAPI fills only with the models routes declare, and the submit route
    declares none (it reads JSON or multipart itself). So its JSON body is described
    here in full, from the models themselves, and cannot point at a missing component.
    """
    if isinstance(schema, list):
        return [_inline_definitions(item, definitions, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"{name} contains itself, which cannot be written out in full")
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        return {
            **_inline_definitions(definitions[name], definitions, (*seen, name)),
            **_inline_definitions(rest, definitions, seen),
        }
    return {key: _inline_definitions(value, definitions, seen) for key, value in schema.items()}


def _json_job_schema() -> dict[str, Any]:
    """What `_json_job` accepts, as one self-contained JSON Schema: `SharedJobCreate` when
    `storage` is `"shared"`, else `JobCreate` (whose `storage` may then only be
    `"upload"`). The models alone would let `{"blend_path": …}` pass as a shared job,
    which `_json_job` reads as a `JobCreate` without files."""
    schema = TypeAdapter(JobCreate | SharedJobCreate).json_schema(mode="validation")
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline_definitions(schema, definitions)
    for branch in inlined["anyOf"]:
        storage = "shared" if branch["title"] == SharedJobCreate.__name__ else "upload"
        branch["properties"]["storage"] = {**branch["properties"]["storage"], "enum": [storage]}
        if storage == "shared":
            branch["required"] = [*branch.get("required", []), "storage"]
    return inlined


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _json_job_schema()},
            "multipart/form-data": {
                "schema": form_schema(
                    {
                        SETTINGS_FIELD: {
                            "type": "string",
                            "description": "JobSettings as a JSON string.",
                        }
                    }
                )
            },
        },
    }
}


def _visible_job(session: Session, caller: Caller, job_id: int) -> Job:
    """The job, if the caller may see it; someone else's job is 404 so ids don't leak,
    and so is one being deleted."""
    job = session.get(Job, job_id)
    if job is None or not caller.sees(job):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


def _changed(context: ManagerContext, job_id: int) -> None:
    """A job's tasks may have become claimable: tell live views and waiting claims."""
    context.events.job_changed(job_id)
    context.wakeup.notify()


def _accepted(context: ManagerContext, response: Response, job: Job) -> JobAccepted:
    location = f"/api/jobs/{job.id}"
    response.headers["Location"] = location
    response.headers["Retry-After"] = str(context.settings.retry_after)
    return JobAccepted(id=job.id, status=JobStatus(job.status), location=location)


async def _multipart_job(
    context: ManagerContext, request: Request, caller: Caller
) -> tuple[JobCreate, KeptUpload]:
    """A job of one .blend sent with its settings, the one-shot submit. The form is read
    here (`form_file.FormFile`), not by Starlette's parser, which received and spooled
    every byte before anything was checked: a .blend the sender's quota cannot take is
    refused before a byte of the body is read when its declared length says so, else
    at the first bytes past the room (a chunked body), and nothing of it is kept.
    Settings sent before the file (httpx sends its text fields first; curl in the
    order of its `-F`s) are checked before the file is received; after it, once it is,
    and a refusal then undoes the stored file, as does any later refusal of the job
    (`submit_job`, with the `KeptUpload` returned)."""
    await run_in_threadpool(
        partial(refuse_hopeless_upload, submitting=True),
        context,
        caller,
        declared_length(request.scope),
    )
    async with receiving(request, user=caller.name) as body:
        form = FormFile(body.headers.get("content-type", ""), body.stream(), texts=[SETTINGS_FIELD])
        name = checked_name(await form.filename(), ".blend")
        early = form.text(SETTINGS_FIELD)
        settings = None if early is None else _form_settings(early or "{}")
        chunks = within_allowance(context, caller, form.chunks(), submitting=True)
        stored, created = await ingest(context, chunks)
    kept = KeptUpload(context, caller.user_id, stored.sha256, created)
    try:
        if settings is None:
            settings = _form_settings(form.text(SETTINGS_FIELD) or "{}")
        await run_in_threadpool(kept.claim, stored)  # the job below names it
        job = JobCreate(**settings.model_dump(), main_file=name, files={name: stored.sha256})
    except Exception:
        await run_in_threadpool(kept.undo)
        raise
    return job, kept


def _form_settings(raw: str) -> JobSettings:
    try:
        return JobSettings.model_validate_json(raw)
    except ValidationError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"invalid settings: {_first_error(error)}"
        ) from error


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses=ERRORS,
    openapi_extra=_CREATE_BODY,
    summary="Submit a job (JSON manifest of uploaded blobs, or multipart with the .blend)",
)
async def submit_job(
    request: Request, response: Response, context: Context, caller: UserDep
) -> JobAccepted:
    content_type = request.headers.get("content-type", "")
    job_request: JobCreate | SharedJobCreate
    kept: KeptUpload | None = None
    if content_type.startswith("multipart/form-data"):
        job_request, kept = await _multipart_job(context, request, caller)
    elif content_type.startswith("application/json"):
        # A manifest of 100,000 files takes a second to validate: not on the event loop,
        # where every runner's request would wait for it.
        body = await manifest_body(request, context.settings.max_json_depth)
        job_request = await run_in_threadpool(_json_job, body)
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send application/json (JobCreate) or multipart/form-data (file + settings)",
        )
    try:
        job = await _create_job(context, caller, job_request)
    except Exception:
        if kept is not None:  # the one-shot submit's .blend, refused with its job
            await run_in_threadpool(kept.undo)
        raise
    context.events.job_changed(job.id)
    return _accepted(context, response, job)


async def _create_job(
    context: ManagerContext, caller: Caller, job_request: JobCreate | SharedJobCreate
) -> Job:
    if isinstance(job_request, SharedJobCreate):
        creating = partial(create_shared_job, context, caller.user_id, job_request)
    else:
        if job_request.storage == "shared":
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "storage 'shared' takes a blend_path on the share (JSON), not uploaded files",
            )
        files = list(job_request.files.values())
        await run_in_threadpool(partial(enforce_quota, submitting=True), context, caller, files)
        creating = partial(create_uploaded_job, context, caller.user_id, job_request)
    # A tiled job's .blend is read to refuse a stereo scene (`tiles_refusal`): seconds,
    # so in turn with the manager's other reads of users' files, holding no shared thread.
    reads = isinstance(job_request, JobCreate) and job_request.tiles is not None
    try:
        return await context.file_reads.run(creating, in_turn=reads)
    except SubmitError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _json_job(body: bytes) -> JobCreate | SharedJobCreate:
    """A JSON job: files already uploaded, or (`storage: "shared"`) on shared storage."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None  # the model's validation says what is wrong
    shared = isinstance(data, dict) and data.get("storage") == "shared"
    model: type[JobCreate | SharedJobCreate] = SharedJobCreate if shared else JobCreate
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"invalid job: {_first_error(error)}"
        ) from error


def _next_page(request: Request, response: Response, total: int, offset: int, limit: int) -> None:
    """`X-Total-Count`, and a `Link: <…>; rel="next"` while more lie past this page: the
    same query with the next offset, as a path relative to the manager (right behind a
    proxy that rewrites the host or the scheme)."""
    response.headers["X-Total-Count"] = str(total)
    if offset + limit < total:
        following = request.url.include_query_params(offset=offset + limit)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'


@router.get(
    "",
    response_model=list[JobSummary],
    responses=ERRORS,
    summary="Jobs, newest first, a page at a time (X-Total-Count, Link rel=next)",
)
def list_jobs(
    request: Request,
    response: Response,
    params: Annotated[JobListQuery, Query()],
    context: Context,
    caller: UserDep,
) -> list[JobSummary]:
    where = [shown_jobs()]
    if not caller.is_admin:
        where.append(Job.owner_id == caller.user_id)
    if params.status:
        where.append(Job.status.in_([s.value for s in params.status]))
    if params.owner is not None:
        where.append(Job.owner_id.in_(select(User.id).where(User.name == params.owner)))
    with context.db.read() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
        page = session.scalars(
            select(Job)
            .where(*where)
            .order_by(Job.id.desc())
            .offset(params.offset)
            .limit(params.limit)
        ).all()
        summaries = job_summaries(session, page)
    _next_page(request, response, total, params.offset, params.limit)
    return summaries


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    responses=ERRORS,
    summary="One job; with tasks=false without its task list (see /tasks for pages)",
)
def get_job(
    job_id: int,
    response: Response,
    params: Annotated[JobDetailQuery, Query()],
    context: Context,
    caller: UserDep,
) -> JobDetail:
    with context.db.read() as session:
        job = _visible_job(session, caller, job_id)
        detail = job_detail(session, job, with_tasks=params.tasks)
    if detail.status not in FINISHED_JOB_STATUSES:
        response.headers["Retry-After"] = str(context.settings.retry_after)
    return detail


@router.get(
    "/{job_id}/tasks",
    response_model=list[TaskSummary],
    responses=ERRORS,
    summary="A page of a job's tasks in index order (X-Total-Count, Link rel=next)",
)
def list_tasks(
    job_id: int,
    request: Request,
    response: Response,
    params: Annotated[TaskListQuery, Query()],
    context: Context,
    caller: UserDep,
) -> list[TaskSummary]:
    with context.db.read() as session:
        job = _visible_job(session, caller, job_id)
        total, page = task_page(session, job, params.status, params.offset, params.limit)
    _next_page(request, response, total, params.offset, params.limit)
    return page


@router.delete(
    "/{job_id}",
    response_model=JobSummary,
    responses={**ERRORS, 204: {"description": "Deleted (purge=true)"}},
    summary="Cancel a job; with purge=true delete it and its outputs",
)
def cancel(
    job_id: int, context: Context, caller: UserDep, purge: bool = False
) -> JobSummary | Response:
    with context.db.transaction() as session:
        job = _visible_job(session, caller, job_id)
        if purge:  # gone for everyone at this commit; its rows go in batches after
            begin_deletion(session, job, utcnow(), f"canceled by {caller.name}")
        else:
            cancel_job(session, job, utcnow(), f"canceled by {caller.name}")
            summary = job_summaries(session, [job])[0]
    context.events.job_changed(job_id)
    if purge:
        delete_job(context, job_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return summary


@router.patch("/{job_id}", response_model=JobSummary, responses=ERRORS, summary="Change priority")
def patch_job(job_id: int, body: JobPatch, context: Context, caller: UserDep) -> JobSummary:
    with context.db.transaction() as session:
        job = _visible_job(session, caller, job_id)
        job.priority = body.priority
        job.settings = {**job.settings, "priority": body.priority}
        summary = job_summaries(session, [job])[0]
    _changed(context, job_id)
    return summary


@router.post(
    "/{job_id}/actions",
    response_model=JobActionOutcome,
    responses={**ERRORS, **error_responses(409)},
    summary="Pause, resume, or requeue a job's failed or all tasks",
)
def job_action(job_id: int, body: JobAction, context: Context, caller: UserDep) -> JobActionOutcome:
    now = utcnow()
    requeued: int | None = None
    with context.db.transaction() as session:
        job = _visible_job(session, caller, job_id)
        try:
            if body.action == "pause":
                pause_job(session, job, now, context.policy)
            elif body.action == "resume":
                resume_job(session, job, now, context.policy)
            else:
                only_failed = body.action == "requeue-failed"
                requeued = requeue_job(
                    session,
                    job,
                    now,
                    context.policy,
                    only_failed=only_failed,
                    reason=f"requeued by {caller.name}",
                )
        except TransitionError as error:
            raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
        summary = job_summaries(session, [job])[0]
    _changed(context, job_id)
    return JobActionOutcome(**summary.model_dump(), requeued=requeued)


@router.post(
    "/{job_id}/tasks/{task_id}/actions",
    response_model=JobSummary,
    responses=ERRORS,
    summary="Requeue or cancel one task",
)
def task_action(
    job_id: int, task_id: int, body: TaskAction, context: Context, caller: UserDep
) -> JobSummary:
    now = utcnow()
    with context.db.transaction() as session:
        job = _visible_job(session, caller, job_id)
        task = session.get(Task, task_id)
        if task is None or task.job_id != job_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found")
        if body.action == "requeue":
            rerun_task(session, task, now, context.policy, f"requeued by {caller.name}")
        else:
            cancel_task(session, task, now, context.policy, f"canceled by {caller.name}")
        summary = job_summaries(session, [job])[0]
    _changed(context, job_id)
    return summary


_UPLOAD_BODY = form_body(
    {
        PATH_FIELD: {
            "type": "string",
            "maxLength": PATH_MAX_LENGTH,
            "description": "Where the file goes among the job's inputs (a relative path).",
        }
    },
    required=[PATH_FIELD],
)


@router.post(
    "/{job_id}/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=JobFileModel,
    responses={**ERRORS, **error_responses(409, 413)},
    summary="Add or replace an input file of a job no worker has started",
    openapi_extra=_UPLOAD_BODY,
)
async def upload_job_file(
    job_id: int, request: Request, context: Context, caller: UserDep
) -> JobFileModel:
    """Add an input, or replace one (the main .blend too), while no frame can have been
    rendered from the job's inputs (`inputs_fixed_because`).

    The job (404, and 409 once its inputs are fixed) and the caller's quota (413, by
    the declared length) are looked at before a byte of the body is read, and the
    `path` field, sent before the file as clients do, before the file's bytes are: the
    form is read here (`form_file.FormFile`), not by FastAPI before the route, so a
    hopeless upload is refused at once, and one of no declared length at its first
    bytes past the quota, nothing of it kept. A `path` sent after the file is checked
    once the file is in. All of it is checked again in the transaction that records
    the file: a worker may claim a task while a big file streams in, and the file must
    then not change under it. A refusal once the file is stored undoes it
    (`KeptUpload`): a bad `path` after the file must not leave it on the disk, outside
    every quota."""

    def check(clean: str | None) -> tuple[str, dict[str, Any]]:
        with context.db.transaction() as session:
            job = _visible_job(session, caller, job_id)
            _inputs_changeable(session, job, clean)
            return job.main_file, dict(job.settings)

    job = await run_in_threadpool(check, None)
    await run_in_threadpool(refuse_hopeless_upload, context, caller, declared_length(request.scope))
    async with receiving(request, user=caller.name) as body:
        form = FormFile(body.headers.get("content-type", ""), body.stream(), texts=[PATH_FIELD])
        await form.filename()  # the name it had on the sender's disk: `path` names it here
        early = form.text(PATH_FIELD)
        if early is not None:
            await run_in_threadpool(check, _input_path(early))
        stored, created = await ingest(context, within_allowance(context, caller, form.chunks()))
    kept = KeptUpload(context, caller.user_id, stored.sha256, created)
    try:
        answer = await _place_input(context, caller, job_id, form, stored, job, early, check)
    except Exception:
        await run_in_threadpool(kept.undo)  # refused once in: it costs nothing, and goes
        raise
    context.events.job_changed(job_id)
    return answer


async def _place_input(
    context: ManagerContext,
    caller: Caller,
    job_id: int,
    form: FormFile,
    stored: StoredBlob,
    job: tuple[str, dict[str, Any]],
    early: str | None,
    check: Callable[[str | None], tuple[str, dict[str, Any]]],
) -> JobFileModel:
    """`upload_job_file` once the file is stored: its `path` (checked against the job
    now if it came after the file; `early` was before), the quota again, the main
    file's version, then the row. `job`: its main file and settings, which never change
    once it is submitted."""
    clean = _input_path(form.text(PATH_FIELD))
    if early is None:
        await run_in_threadpool(check, clean)
    main_file, settings = job
    await run_in_threadpool(enforce_quota, context, caller, [stored.sha256])
    saved: str | None = None
    if clean == main_file:
        # Read before the transaction below, not in it: reading a tiled job's scene
        # may take seconds on a big file, and every runner's report waits meanwhile.
        # A job's main file and settings (but its priority) never change once submitted.
        tiled = settings.get("tiles") is not None
        reading = partial(
            main_blend_version,
            context,
            clean,
            stored.sha256,
            blender_range=settings.get("blender_version"),
            tiled=tiled,
        )
        try:
            saved = await context.file_reads.run(reading, in_turn=tiled)
        except SubmitError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error

    def record() -> JobFileModel:
        with context.db.transaction() as session:
            job = _visible_job(session, caller, job_id)
            _inputs_changeable(session, job, clean)
            if clean == job.main_file:
                job.blender_saved = saved
            row = session.scalar(
                select(JobFile).where(
                    JobFile.job_id == job_id, JobFile.kind == "input", JobFile.path == clean
                )
            )
            if row is None:
                row = JobFile(job_id=job_id, kind="input", path=clean, created_at=utcnow())
                session.add(row)
            row.sha256, row.size = stored.sha256, stored.size
            mark_used(session, [stored.sha256], utcnow())
            session.flush()
            return _file_model(row)

    return await run_in_threadpool(record)


def _input_path(raw: str | None) -> str:
    """The `path` field of `upload_job_file`'s form, as a safe relative path; else a 400."""
    if raw is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"multipart field {PATH_FIELD!r} is required"
        )
    if len(raw) > PATH_MAX_LENGTH:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{PATH_FIELD!r} is longer than {PATH_MAX_LENGTH} characters",
        )
    try:
        return safe_relative_path(raw)
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _inputs_changeable(session: Session, job: Job, path: str | None) -> None:
    """409 if the job's inputs are fixed; 400 if `path` cannot join its other inputs on
    a worker's disk (a file and a folder at once, or a name differing only in case).
    `path` None: the inputs being fixed only (the path is not known yet)."""
    fixed = inputs_fixed_because(session, job)
    if fixed is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, fixed)
    if path is None:
        return
    inputs = set(
        session.scalars(
            select(JobFile.path).where(JobFile.job_id == job.id, JobFile.kind == "input")
        )
    )
    try:
        check_coexisting(inputs | {path})
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _file_model(row: JobFile) -> JobFileModel:
    return file_model(row)


@router.get("/{job_id}/files", response_model=list[JobFileModel], responses=ERRORS)
def list_files(job_id: int, context: Context, caller: UserDep) -> list[JobFileModel]:
    with context.db.read() as session:
        _visible_job(session, caller, job_id)
        rows = session.scalars(
            select(JobFile).where(JobFile.job_id == job_id).order_by(JobFile.kind, JobFile.path)
        ).all()
        return [_file_model(row) for row in rows]


DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **error_responses(416),
    200: {"content": {"application/octet-stream": {}}},
    206: {"description": "The one byte range a `Range` header asked for (see API.md)"},
}
"""A single file's download: whole, or the range asked for (`ranges.py`)."""


@download_route(
    router,
    "/{job_id}/files/{file_id}/download",
    responses=DOWNLOAD_RESPONSES,
    response_class=StreamingResponse,
    summary="One file of a job, whole or the byte range asked for (Range, If-Range); "
    "HEAD: its headers only",
)
def download_file(
    job_id: int, file_id: int, request: Request, context: Context, caller: UserDep
) -> Response:
    with context.db.read() as session:
        _visible_job(session, caller, job_id)
        row = session.get(JobFile, file_id)
        if row is None or row.job_id != job_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"file {file_id} not found")
        sha, name, size = row.sha256, PurePosixPath(row.path).name, row.size
    part = requested_part(request.headers, size, etag_of(sha))
    return blob_download(
        context, request, job_id, sha, name, part, {"Content-Disposition": attachment(name)}
    )


TemplateQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Name outputs by this template, e.g. '{job}/{frame:04d}.{ext}' "
        "(default: the job's output_template, else 'frames/0001.png').",
    ),
]


def _named_outputs(
    session: Session, job: Job, template: str | None, frame: int | None = None
) -> list[tuple[str, StoredOutput]]:
    """The job's downloadable files (`DOWNLOADED_KINDS`) by their download names, or
    only frame `frame` (an `output`) if given.

    The template names frames; every other file keeps the path the files list shows
    (`video.webm`, `passes/00-File_Output/Depth0001.exr`). A pass has its frame's
    number, but a template gives one name per frame, which is the frame's: so a pass
    is given to `output_names` without it."""
    chosen = template if template is not None else job.settings.get("output_template")
    query = select(
        JobFile.kind, JobFile.path, JobFile.sha256, JobFile.frame, JobFile.task_id
    ).where(JobFile.job_id == job.id)
    if frame is not None:
        query = query.where(JobFile.kind == "output", JobFile.frame == frame)
    else:
        query = query.where(JobFile.kind.in_(DOWNLOADED_KINDS))
    outputs = [
        StoredOutput(path, sha, frame_no if kind == "output" else None, task_id)
        for kind, path, sha, frame_no, task_id in session.execute(query.order_by(JobFile.path))
    ]
    try:
        if chosen is not None:
            check_template(chosen)
        return output_names(job.name, job.id, outputs, chosen)
    except TemplateError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _zip_response(
    context: ManagerContext,
    request: Request,
    job: Job,
    what: str,
    entries: list[tuple[str, str]],
    facts: dict[str, tuple[int, int | None]],
) -> Response:
    """A zip of `entries` (name, blob), saved by a browser as `job-7-<the job's
    name><what>.zip`; `facts`: each blob's size and CRC-32 (`zipplan.blob_facts`).

    The name is the job's name as `{job}` makes it (`safe_component`: letters of any
    script kept), sent as every download's is (`disposition.attachment`: RFC 6266's
    UTF-8 `filename*` and an ASCII stand-in `filename`).

    Laid out before it is sent (`zipplan.py`), so it has an exact `Content-Length`, an
    `ETag`, and answers `Range` and `If-Range` as a single file does (`ranges.py`): a
    cut-off download resumes. A blob whose CRC-32 was never taken has it taken here,
    once (`store_crc32s`): the first zip of an old job reads its files before its
    answer begins. One gone by then (the job purged meanwhile) is a `404`; one gone
    later cuts the answer off (`_ZipStream`).

    A `HEAD` (`downloads.py`) takes no CRC-32: the zip's length and ETag do not depend
    on them, so its answer reads no file, and its plan's missing CRC-32s are stand-ins
    never sent. A file whose CRC-32 the `GET` would take is only looked for, so that
    one gone is the same `404`."""
    try:
        if any(sha not in facts for _, sha in entries):  # its row collected meanwhile
            raise FileNotFoundError
        untaken = {sha for _, sha in entries if facts[sha][1] is None}
        if is_head(request):
            if not all(context.blobs.has(sha) for sha in untaken):
                raise FileNotFoundError
            crcs = dict.fromkeys(untaken, 0)
        else:
            crcs = store_crc32s(context.db, context.blobs.path_for, untaken)
    except FileNotFoundError:
        log.warning("download refused: a file of it was deleted meanwhile", job=job.id)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"a file of job {job.id} was deleted meanwhile"
        ) from None
    for sha, (_, crc) in facts.items():
        if crc is not None:
            crcs[sha] = crc
    plan = ZipPlan(
        [ZipEntry(name, sha, facts[sha][0], crcs[sha]) for name, sha in entries],
        job.created_at,
        context.blobs.path_for,
    )
    part = requested_part(request.headers, plan.size, plan.etag)
    filename = f"job-{job.id}-{safe_component(job.name)}{what}.zip"
    return download(
        request,
        partial(plan.iter_bytes, part.start, part.length),
        status_code=part.status_code,
        media_type="application/zip",
        headers={"Content-Disposition": attachment(filename), **part.headers},
        streamed=partial(_ZipStream, job.id),
    )


class _ZipStream(ClosingStreamingResponse):
    """A job's zip (`_zip_response`) that, when one of its files is deleted while it is
    sent (`EntryVanished`: the job purged meanwhile), is cut off: one WARNING line naming
    the job and the file, and the connection closed without the answer's end, so that
    the client sees an incomplete download (and the zip has no end either). Not a
    traceback of an unhandled error, the answer having begun long before."""

    def __init__(self, job_id: int, content: Iterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._job_id = job_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except EntryVanished as gone:
            log.warning(
                "download cut off: a file of it was deleted meanwhile",
                path=scope.get("path"),
                job=self._job_id,
                file=gone.name,
                blob=str(gone.path),
            )
            cut_off(scope)


ZIP_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **error_responses(416),
    200: {"content": {"application/zip": {}}},
    206: {"description": "The one byte range a `Range` header asked for (see API.md)"},
}
"""A job's zip: whole, or the range asked for (`ranges.py`, `zipplan.py`)."""


@download_route(
    router,
    "/{job_id}/outputs.zip",
    responses=ZIP_RESPONSES,
    response_class=StreamingResponse,
    summary="Every output in one zip (frames, the video, File Output passes), streamed "
    "(constant memory), whole or the byte range asked for (Range, If-Range), frames "
    "named by a template; HEAD: its headers only",
)
def download_outputs(
    job_id: int,
    request: Request,
    context: Context,
    caller: UserDep,
    template: TemplateQuery = None,
) -> Response:
    with context.db.read() as session:
        job = _visible_job(session, caller, job_id)
        named = _named_outputs(session, job, template)
        facts = blob_facts(session, job_id)
    entries = [(name, out.sha256) for name, out in named]
    return _zip_response(context, request, job, "", entries, facts)


@download_route(
    router,
    "/{job_id}/outputs/{frame}",
    responses=DOWNLOAD_RESPONSES,
    response_class=StreamingResponse,
    summary="One rendered frame, whole or the byte range asked for (Range, If-Range); its "
    "file name follows the template; HEAD: its headers only",
)
def download_frame(
    job_id: int,
    frame: int,
    request: Request,
    context: Context,
    caller: UserDep,
    template: TemplateQuery = None,
) -> Response:
    with context.db.read() as session:
        job = _visible_job(session, caller, job_id)
        named = _named_outputs(session, job, template, frame=frame)
        if not named:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no frame {frame}")
        name, output = named[0]
        size = session.scalar(select(Blob.size).where(Blob.sha256 == output.sha256))
    part = requested_part(request.headers, size, etag_of(output.sha256))
    headers = {
        "Content-Disposition": attachment(PurePosixPath(name).name),
        "X-Output-Name": header_text(name),
    }
    return blob_download(context, request, job_id, output.sha256, name, part, headers)


@download_route(
    router,
    "/{job_id}/inputs.zip",
    responses=ZIP_RESPONSES,
    response_class=StreamingResponse,
    summary="The job's input files (its .blend and assets, as uploaded) in one zip, "
    "streamed, whole or the byte range asked for (Range, If-Range); HEAD: its headers only",
)
def download_inputs(job_id: int, request: Request, context: Context, caller: UserDep) -> Response:
    with context.db.read() as session:
        job = _visible_job(session, caller, job_id)
        rows = session.execute(
            select(JobFile.path, JobFile.sha256)
            .where(JobFile.job_id == job_id, JobFile.kind == "input")
            .order_by(JobFile.path)
        ).all()
        facts = blob_facts(session, job_id)
    entries = [(path, sha) for path, sha in rows]
    return _zip_response(context, request, job, "-inputs", entries, facts)


@router.get(
    "/{job_id}/tasks/{task_id}/log",
    response_class=PlainTextResponse,
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
)
def task_log(job_id: int, task_id: int, context: Context, caller: UserDep) -> PlainTextResponse:
    with context.db.read() as session:
        _visible_job(session, caller, job_id)
        task = session.get(Task, task_id)
        if task is None or task.job_id != job_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found")
    return PlainTextResponse(context.logs.read(job_id, task_id))
