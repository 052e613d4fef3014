"""Runner routes: register, heartbeat, claim, report, and move files.

A runner may only touch tasks it currently holds (`task_is_held_by`); anything else
answers 409, which tells a late worker that its task was given to someone else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Literal, NamedTuple

import structlog
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, RunnerDep, gone_runner
from farmhand.manager.api.downloads import blob_download, download_route
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.events_stream import server_exiting
from farmhand.manager.api.ranges import etag_of, requested_part
from farmhand.manager.api.runner_tokens import redeem
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job, JobFile, Task, Worker
from farmhand.manager.db.prepared import Prepared
from farmhand.manager.events import FarmEvent
from farmhand.manager.scheduling.claim import claim_task
from farmhand.manager.scheduling.eligibility import pinned_range
from farmhand.manager.scheduling.reaper import ReapReport, put_offline
from farmhand.manager.scheduling.state import (
    AssignedTask,
    complete_task,
    fail_task,
    requeue_task,
    shown_jobs,
    task_is_held_by,
)
from farmhand.manager.scheduling.workers import (
    FORGOTTEN,
    GivenBack,
    abort_current,
    active_tasks,
    claiming_worker,
    display_status,
    give_back_forgotten,
    offline_namesake,
)
from farmhand.shared.frames import frame_label
from farmhand.shared.paths import UnsafePathError, safe_relative_path
from farmhand.shared.protocol import (
    MIN_WORKER_PROTOCOL,
    WORKER_PROTOCOL,
    declared_protocol,
    too_old,
)
from farmhand.shared.schemas import (
    CompletionOutcome,
    FrameFile,
    Heartbeat,
    HeartbeatReply,
    JobSettings,
    JobStatus,
    RunnerRegister,
    RunnerRegistered,
    TaskAssignment,
    TaskComplete,
    TaskFail,
    TaskFile,
    TaskOutcome,
    TaskProgress,
    TaskProgressReply,
    TaskRelease,
    TaskStatus,
    TileFile,
    TileSpec,
    WorkerStatus,
)

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/runner", tags=["runner"])

ERRORS = error_responses(400, 401, 404, 409)
CLAIM_ERRORS = {
    **ERRORS,
    426: {"description": "The worker runs a farmhand too old for this manager: upgrade it"},
}
OUTPUT_EXTENSIONS = {".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".webp", ".bmp"}


_STORED_FRAMES = Prepared(
    select(JobFile.frame).where(
        JobFile.job_id == bindparam("job"),
        JobFile.kind == "output",
        JobFile.frame.between(bindparam("first"), bindparam("last")),
    )
)
"""Which frames from `first` to `last` have a stored output (built once: it runs on every
completion). A range, not `IN` the task's frames: SQLAlchemy renders an `IN` list anew on
every execution; the caller keeps the task's own frames of what comes back."""
_ASSIGNED_JOB = Prepared(
    select(
        Job.id,
        Job.name,
        Job.main_file,
        Job.settings,
        Job.blender_saved,
        Job.blender_pinned,
        Job.scene_fps,
    ).where(Job.id == bindparam("job"))
)
"""What an assignment says about its job (columns only: no ORM object per dispatch)."""
_INPUT_FILES = Prepared(
    select(JobFile.path, JobFile.sha256, JobFile.size).where(
        JobFile.job_id == bindparam("job"), JobFile.kind == "input"
    )
)


def _given(name: str, type_: Any) -> Any:
    """A typed bind parameter that may be NULL (PostgreSQL must know its type)."""
    return cast(bindparam(name), type_)


def _unless_null(name: str, type_: Any, otherwise: Any, value: Any) -> Any:
    return case((_given(name, type_).is_(None), otherwise), else_=value)


_frames_in_task = func.json_array_length(Task.frames)
_PROGRESS = Prepared(
    update(Task)
    .where(
        Task.id == bindparam("task"),
        Task.status == TaskStatus.ACTIVE.value,
        Task.worker_id == bindparam("worker"),
        or_(
            _given("frames_done", Integer).is_(None),
            _given("frames_done", Integer) <= _frames_in_task,
            _given("frames_done", Integer) <= 1,  # a tile task: no frames, its tile is one
        ),
    )
    .values(
        progress_at=bindparam("now"),
        frames_done=_unless_null(
            "frames_done",
            Integer,
            Task.frames_done,
            case(
                (_given("frames_done", Integer) > _frames_in_task, _frames_in_task),
                else_=_given("frames_done", Integer),
            ),
        ),
        frame=func.coalesce(_given("frame", Integer), Task.frame),
        sample=_given("sample", Integer),
        samples_total=_given("samples_total", Integer),
        render_seconds=func.coalesce(_given("render_seconds", Float), Task.render_seconds),
        peak_memory_bytes=_unless_null(
            "peak_memory_bytes",
            BigInteger,
            Task.peak_memory_bytes,
            case(
                (
                    func.coalesce(Task.peak_memory_bytes, 0)
                    > _given("peak_memory_bytes", BigInteger),
                    Task.peak_memory_bytes,
                ),
                else_=_given("peak_memory_bytes", BigInteger),
            ),
        ),
    )
    .returning(Task.job_id)
    .execution_options(synchronize_session=False)
)
"""Progress of a task this runner holds, in one statement built once: frames done, the
frame and sample being rendered, render time, the peak memory so far. Returns the job
id, or nothing if the task is not held or `frames_done` is past the task's frames (a
tile task has none but uploads its tile, which the worker counts: 1 is allowed and
stored as 0)."""
_PROGRESS_FIELDS = {
    "frames_done",
    "frame",
    "sample",
    "samples_total",
    "render_seconds",
    "peak_memory_bytes",
}


_SCENE_FPS = Prepared(
    update(Job)
    .where(Job.id == bindparam("job"), Job.scene_fps.is_(None))
    .values(scene_fps=bindparam("fps"))
    .execution_options(synchronize_session=False)
)
"""The first report of a job's scene frame rate is kept (every worker opens the same file)."""


class _FramesPastTask(NamedTuple):
    """A progress report of more frames done than the held task has (refused: `400`)."""

    frames: int


def _progress_in(
    session: Session, values: dict[str, Any], scene_fps: float | None
) -> int | _FramesPastTask | None:
    """Progress of a held task (a group-commit operation); its job id, None if not held,
    or `_FramesPastTask` if it is held but `frames_done` is more than its frames.

    The frame count is checked by the update itself (no query first on this hot path);
    only a refused update looks again, to tell a bad count from a task gone."""
    connection = session.connection()
    job_id: int | None = _PROGRESS.scalar(connection, values)
    if job_id is None:
        if (values.get("frames_done") or 0) > 1:
            held = _HELD.first(connection, {"task": values["task"], "worker": values["worker"]})
            if held is not None:
                return _FramesPastTask(len(held.frames))
        return None
    if scene_fps is not None:
        _SCENE_FPS.execute(connection, {"job": job_id, "fps": scene_fps})
    return job_id


def _not_held(task_id: int) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"task {task_id} is not assigned to this runner any more; stop working on it",
    )


def _held_task(session: Session, task_id: int, worker_id: int) -> Task:
    task = session.get(Task, task_id)
    if not task_is_held_by(task, worker_id):
        raise _not_held(task_id)
    assert task is not None
    return task


_HELD = Prepared(
    select(Task.job_id, Task.frames, Task.type).where(
        Task.id == bindparam("task"),
        Task.status == TaskStatus.ACTIVE.value,
        Task.worker_id == bindparam("worker"),
    )
)
"""A task's job and frames, if the runner holds it (`task_is_held_by`, as one query)."""
_HELD_FOR_UPDATE = Prepared(_HELD.statement.with_for_update())


def tile_folder(frame: int) -> str:
    """The folder of a tiled frame's tiles in its job's file tree, `tiles/0007/`: a merge
    reads its frame's tiles from there (`_assignment`) and `runner_tiles` stores them."""
    return f"tiles/{frame_label(frame)}/"


LOOK_FIRST_BYTES = 1024 * 1024
"""A raw-body upload larger than this, or of unknown length, is preceded by a look
whether its task is still the runner's (`refuse_late_body`)."""


async def refuse_late_body(
    request: Request, context: ManagerContext, task_id: int, worker_id: int
) -> None:
    """A 409 before a byte of a big body is read, if the runner no longer holds the task.

    A worker back from a network split delivers what it rendered meanwhile (its outbox)
    for a task already given to another: without this it would send a multilayer EXR of
    hundreds of megabytes, have it written to the store, and only then hear that the
    task is gone (the bytes a stray for garbage collection). A small body is not looked
    at first: the look would cost every frame a database round trip, and the
    transaction that records the upload looks anyway (`lock_held_frame`, with a lock),
    so this is only a courtesy to the network and the disk, never the check that counts.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= LOOK_FIRST_BYTES:
        return

    def held() -> bool:
        with context.db.read() as session:
            found = _HELD.first(session.connection(), {"task": task_id, "worker": worker_id})
            return found is not None

    if not await run_in_threadpool(held):
        raise _not_held(task_id)


def lock_held_frame(
    session: Session, task_id: int, worker_id: int, job_id: int | None, frame: int
) -> int:
    """Before recording a file of `frame`: the task must still be this runner's (409)
    and the frame one of its own, of job `job_id` if the caller named one (400). The
    task's row stays locked until the commit, so two uploads for one frame record one
    after the other (PostgreSQL; SQLite's writers take turns anyway). The task's job."""
    held = _HELD_FOR_UPDATE.first(session.connection(), {"task": task_id, "worker": worker_id})
    if held is None:
        raise _not_held(task_id)
    if (job_id is not None and held.job_id != job_id) or frame not in held.frames:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"frame {frame} is not part of task {task_id}"
        )
    return int(held.job_id)


def seen_from(request: Request) -> str | None:
    """The address a runner's request comes from, as `RunnerInfo.address` shows it.

    uvicorn sets the client before we see it: the connection's peer, or, with
    `--proxy-headers`, the `X-Forwarded-For` of a proxy in `--forwarded-allow-ips` only
    (docs/SECURITY.md), so a runner reached directly cannot choose what is shown.
    An IPv4 address in IPv6 form (`::ffff:10.0.0.7`, a dual-stack socket) is shown as
    IPv4."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100] or None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RunnerRegistered,
    responses=ERRORS,
)
def register(body: RunnerRegister, context: Context, request: Request) -> RunnerRegistered:
    now = utcnow()
    with context.db.transaction() as session:
        if not redeem(session, body.token, now):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid registration token (unknown, expired, revoked or used up)",
            )
        secret = new_token("runner")
        worker = offline_namesake(
            session,
            body.name,
            quiet_since=now - timedelta(seconds=context.runner_ids.ttl),
            silent_since=now - timedelta(seconds=context.settings.heartbeat_timeout),
        )
        gone = ReapReport()
        if worker is not None and worker.status != WorkerStatus.OFFLINE.value:
            put_offline(session, worker, now, context.policy, gone)  # as the reaper would
        if worker is None:
            worker = Worker(name=body.name, registered_at=now)
            session.add(worker)
        worker.secret_hash = token_hash(secret)
        worker.status = WorkerStatus.IDLE.value
        worker.capabilities = _declared(body)
        worker.address = seen_from(request)
        worker.last_heartbeat = now
        _new_run(worker)
        taken_over = worker.id is not None
        session.flush()
        log.info(
            "runner registered again: took over its offline record"
            if taken_over
            else "runner registered",
            worker=worker.name,
            worker_id=worker.id,
        )
        _say_too_old(worker)
        registered = RunnerRegistered(worker_id=worker.id, name=worker.name, secret=secret)
    if taken_over:  # the old secret authenticates nothing from now on
        context.runner_ids.forget_worker(registered.worker_id)
    context.events.runner_changed(registered.worker_id)
    for job_id in gone.jobs:  # tasks the silent record held, back in the queue
        context.events.job_changed(job_id)
    if gone.jobs:
        context.wakeup.notify()
    return registered


def _new_run(worker: Worker) -> None:
    """Forget the last task the worker gave back (`release`): it registers, restarts or
    signs off, so a give-back of its earlier run (a fault it may have had, the task it
    gave back as it stopped) says nothing of what it does now, and the runners listing
    would show an idle runner, back and ready, as one that gave its work back."""
    worker.gave_back_at = None
    worker.gave_back_task_id = None
    worker.gave_back_reason = None


def _declared(body: RunnerRegister) -> dict[str, Any]:
    """The capabilities a registration declares. One that sends none is a script driving
    the API, not a farmhand worker (every worker has always sent its capabilities): it is
    taken as speaking this manager's protocol; a worker that sends them without saying
    which is older than the field (0)."""
    capabilities = body.capabilities.model_dump()
    if "capabilities" not in body.model_fields_set:
        capabilities["protocol"] = WORKER_PROTOCOL
    return capabilities


def _say_too_old(worker: Worker) -> None:
    """The manager's one log line about a worker it will give no task (`too_old`): at its
    registration, when a heartbeat changes what it declares, or at the first claim of a
    record stored before workers declared a protocol (`_claim_in`)."""
    reason = too_old(worker.capabilities)
    if reason is not None:
        log.warning(
            "runner too old: it gets no task until it is upgraded",
            worker=worker.name,
            worker_id=worker.id,
            protocol=declared_protocol(worker.capabilities),
            needed=MIN_WORKER_PROTOCOL,
        )


@router.post("/heartbeat", response_model=HeartbeatReply, responses=ERRORS)
def heartbeat(
    context: Context, worker_id: RunnerDep, request: Request, body: Heartbeat | None = None
) -> HeartbeatReply:
    """A keep-alive. Every field is optional, so is the body: a script written for
    JiggaBlend's runner API posts none."""
    body = body or Heartbeat()
    with context.db.transaction() as session:
        worker = session.get(Worker, worker_id)
        if worker is None:
            raise gone_runner(session, context, worker_id)
        worker.last_heartbeat = utcnow()
        worker.address = seen_from(request)  # a machine's address may change (DHCP)
        came_back = worker.status == WorkerStatus.OFFLINE.value
        if came_back:
            worker.status = WorkerStatus.IDLE.value
            log.info("runner back online", worker=worker.name, worker_id=worker.id)
        if body.capabilities is not None:
            said = worker.capabilities.get("protocol")
            worker.capabilities = body.capabilities.model_dump()
            if said != worker.capabilities["protocol"]:  # once, not every heartbeat
                _say_too_old(worker)
        jobs: list[int] = []
        if body.starting:
            _new_run(worker)
            reason = f"worker {worker.name} restarted"
            jobs = abort_current(session, worker, reason, utcnow(), context.policy)
        abort: list[int] = []
        if body.current_task_id is not None:
            task = session.get(Task, body.current_task_id)
            if not task_is_held_by(task, worker_id):
                abort.append(body.current_task_id)
        busy = bool(active_tasks(session, worker_id))
        reply = HeartbeatReply(status=display_status(worker, busy), abort_task_ids=abort)
    for job_id in jobs:
        context.events.job_changed(job_id)
    context.events.runner_changed(worker_id)
    if jobs:
        context.wakeup.notify()
    return reply


def _assignment(
    session: Session, task: AssignedTask, task_timeout: float | None = None
) -> TaskAssignment:
    connection = session.connection()
    job = _ASSIGNED_JOB.first(connection, {"job": task.job_id})
    assert job is not None  # the claim holds the job's task
    settings = JobSettings.model_validate(job.settings)
    files = _INPUT_FILES.all(connection, {"job": job.id})
    frame_files: list[FrameFile] = []
    tile_files: list[TileFile] = []
    if task.type == "merge":
        # The merge of a tiled frame works on that frame's tiles only (a job may tile a
        # range), each placed by its tile task. The folder (`tiles/0007/`, as
        # `runner_tiles.tile_path` stores them) keeps the query to the frame's rows, not
        # every tile of the job for every merge; the tile's own frame decides.
        [frame] = task.frames
        rows = session.execute(
            select(JobFile.path, JobFile.sha256, JobFile.size, Task.tile)
            .join(Task, Task.id == JobFile.task_id)
            .where(
                JobFile.job_id == job.id,
                JobFile.kind == "tile",
                JobFile.path.startswith(tile_folder(frame), autoescape=True),
            )
            .order_by(JobFile.path)
        )
        tiles = [
            (path, sha256, size, TileSpec.model_validate(spec)) for path, sha256, size, spec in rows
        ]
        tile_files = [
            TileFile(path=path, sha256=sha256, size=size, **tile.place)
            for path, sha256, size, tile in tiles
            if tile.frame == frame
        ]
    if task.type == "video":
        # A follow-up task works on the job's rendered frames, not on its .blend.
        frame_files = [
            FrameFile(path=f.path, sha256=f.sha256, size=f.size, frame=f.frame)
            for f in session.scalars(
                select(JobFile)
                .where(
                    JobFile.job_id == job.id,
                    JobFile.kind == "output",
                    JobFile.frame.is_not(None),
                )
                .order_by(JobFile.frame)
            )
            if f.frame is not None
        ]
    return TaskAssignment(
        task_id=task.id,
        job_id=job.id,
        job_name=job.name,
        type=task.type,
        frames=task.frames,
        main_file=job.main_file,
        files=[TaskFile(path=f.path, sha256=f.sha256, size=f.size) for f in files],
        output_format=settings.output_format,
        resolution_percentage=settings.resolution_percentage,
        samples=settings.samples,
        attempt=task.attempts,
        blender_saved=job.blender_saved,
        # The job's range narrowed to its pin (set by this very claim, for its first
        # render task): the worker picks the newest Blender inside what it is sent, so a
        # worker with 5.0 and 5.1 renders a job pinned to 5.0 with its 5.0.
        blender_version=(
            pinned_range(settings.blender_version, job.blender_pinned)
            if task.type == "render"
            else settings.blender_version
        ),
        device=settings.device,
        task_timeout=task_timeout,
        video=(
            settings.video.at_scene_fps(job.scene_fps)
            if task.type == "video" and settings.video is not None
            else None
        ),
        frame_files=frame_files,
        tile=TileSpec.model_validate(task.tile) if task.tile else None,
        tile_files=tile_files,
        storage=settings.storage,
        output_dir=settings.output_dir,
        output_template=settings.output_template,
    )


@dataclass(frozen=True)
class _Claimed:
    """What one look for work did: the task handed out (with the worker's name, for the
    log), if any, and the (job id, task id) of tasks the worker held but had forgotten."""

    found: tuple[TaskAssignment, str] | None
    given_back: list[GivenBack] = field(default_factory=list)
    offline: bool = False
    """The worker went offline while its long poll waited: it signed off (a worker
    stopping abandons its poll, which stays open here) or the reaper found it silent. No
    task is handed to it; the poll ends."""
    too_old: str | None = None
    """Why the worker gets no task at all: it runs a farmhand older than this manager
    needs (`shared/protocol.too_old`). Its claim is answered 426."""


def _claim_in(
    session: Session,
    context: ManagerContext,
    worker_id: int,
    first: bool,
    prefer_job: int | None = None,
) -> _Claimed:
    """One look for a task (a group-commit operation)."""
    # A claim is a sign of life, and says the worker runs nothing; the later looks of a
    # long poll need not say so again (they would be a database write per waiting worker
    # per poll).
    now = utcnow()
    worker = claiming_worker(session, worker_id, now, seen=first)
    if worker is None:
        raise gone_runner(session, context, worker_id)
    if not first and worker.status == WorkerStatus.OFFLINE.value:
        return _Claimed(None, offline=True)
    given_back = give_back_forgotten(session, worker_id, now, context.policy) if first else []
    refused = too_old(worker.capabilities)
    if refused is not None:
        if "protocol" not in worker.capabilities:
            # A record from before workers declared a protocol: its worker has not said
            # one since (an old worker sends its capabilities only when it starts). Stored
            # now, so the manager says so once, not at every claim.
            stored = session.get(Worker, worker_id)
            assert stored is not None
            stored.capabilities = {**stored.capabilities, "protocol": 0}
            _say_too_old(stored)
        return _Claimed(None, given_back, too_old=refused)
    task = claim_task(session, worker, now, context.policy, prefer_job=prefer_job)
    if task is None:
        return _Claimed(None, given_back)
    return _Claimed((_handed_out(session, context, task), worker.name), given_back)


def _handed_out(session: Session, context: ManagerContext, task: AssignedTask) -> TaskAssignment:
    assignment = _assignment(session, task, context.settings.task_timeout)
    if assignment.storage == "shared" or assignment.output_dir is not None:
        assignment.path_variables = context.settings.path_variables
    return assignment


def _after_claim(
    context: ManagerContext, worker_id: int, claimed: _Claimed
) -> TaskAssignment | None:
    """What follows a committed look for work: log lines, live events, wake-ups."""
    for back in claimed.given_back:
        if back.failed is None:
            log.info(
                f"task given back: {FORGOTTEN}",
                job_id=back.job_id,
                task_id=back.task_id,
                worker_id=worker_id,
            )
        else:
            log.warning(
                "task failed: given back too often",
                job_id=back.job_id,
                task_id=back.task_id,
                worker_id=worker_id,
                reason=back.failed,
            )
        context.events.job_changed(back.job_id)
    if claimed.given_back:
        context.wakeup.notify()
    if claimed.found is None:
        return None
    return _assigned(context, worker_id, *claimed.found)


def _assigned(
    context: ManagerContext, worker_id: int, assignment: TaskAssignment, worker_name: str
) -> TaskAssignment:
    """What follows a committed claim: the log line and the live events."""
    log.info(
        "task assigned",
        job_id=assignment.job_id,
        task_id=assignment.task_id,
        worker=worker_name,
    )
    context.events.job_changed(assignment.job_id)
    context.events.runner_changed(worker_id)
    return assignment


@router.get(
    "/tasks",
    response_model=TaskAssignment,
    responses={**CLAIM_ERRORS, 204: {"description": "No task became available while waiting"}},
    summary="Claim the next task (long poll)",
)
async def claim(
    context: Context,
    worker_id: RunnerDep,
    wait: Annotated[float, Query(ge=0, le=60)] = 20.0,
    prefer_job: Annotated[
        int | None,
        Query(
            description="A job whose files (and Blender session) the worker holds: "
            "its tasks come first among jobs of equal priority and fair share (a job "
            "whose owner holds fewer workers still goes first)."
        ),
    ] = None,
) -> Any:
    deadline = time.monotonic() + min(wait, context.settings.max_claim_wait)
    first = True
    while True:
        claimed = await context.db.batched(
            partial(
                _claim_in, context=context, worker_id=worker_id, first=first, prefer_job=prefer_job
            )
        )
        first = False
        assignment = _after_claim(context, worker_id, claimed)
        if claimed.too_old is not None:
            raise HTTPException(status.HTTP_426_UPGRADE_REQUIRED, claimed.too_old)
        if assignment is not None:
            return assignment
        remaining = deadline - time.monotonic()
        if remaining <= 0 or claimed.offline:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        # A manager stopping answers its waiting claims at once (`Wakeup`: `wait` returns
        # at once once stopping), instead of having uvicorn cut them off after its
        # graceful timeout with a 500.
        await context.wakeup.wait(
            min(remaining, context.settings.claim_poll_interval), exiting=server_exiting
        )
        if context.wakeup.stopping:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await asyncio.sleep(0)


@router.post("/tasks/{task_id}/progress", response_model=TaskProgressReply, responses=ERRORS)
async def progress(
    task_id: int, body: TaskProgress, context: Context, worker_id: RunnerDep
) -> TaskProgressReply:
    values = {
        "task": task_id,
        "worker": worker_id,
        "now": utcnow(),
        **body.model_dump(include=_PROGRESS_FIELDS),
    }
    job_id = await context.db.batched(
        partial(_progress_in, values=values, scene_fps=body.scene_fps)
    )
    if isinstance(job_id, _FramesPastTask):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"frames_done ({body.frames_done}) is more than the task's {job_id.frames} "
            f"frame{'s' if job_id.frames != 1 else ''}",
        )
    if job_id is None:  # not (or no longer) this runner's task
        return TaskProgressReply(keep_going=False)
    context.logs.append(job_id, task_id, body.log_lines)
    context.events.publish(FarmEvent("task", task_id, job_id))
    return TaskProgressReply(keep_going=True)


def _complete_in(
    session: Session,
    task_id: int,
    worker_id: int,
    context: ManagerContext,
    claim_next: bool = False,
) -> tuple[int, JobStatus, _Claimed | None]:
    """Complete a task the runner holds whose outputs are all stored, and maybe claim its
    next task in the same transaction (a group-commit operation)."""
    connection = session.connection()
    task = _HELD.first(connection, {"task": task_id, "worker": worker_id})
    if task is None:
        return _completed_before(session, task_id, worker_id, context, claim_next)
    stored = (
        set(
            _STORED_FRAMES.scalars(
                connection,
                {"job": task.job_id, "first": min(task.frames), "last": max(task.frames)},
            )
        )
        if task.frames
        else set()
    )
    lacking = [frame for frame in task.frames if frame not in stored]
    if lacking:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"no output was uploaded for frame(s) {lacking[:10]}; upload them or fail the task",
        )
    if task.type == "video" and not session.scalar(
        select(JobFile.id).where(JobFile.task_id == task_id, JobFile.frame.is_(None))
    ):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no video was uploaded; upload it or fail the task"
        )
    if (
        task.type == "render"
        and not task.frames
        and not session.scalar(
            select(JobFile.id).where(JobFile.task_id == task_id, JobFile.kind == "tile")
        )
    ):  # a render task without frames is a tile of a still
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no tile was uploaded; upload it or fail the task"
        )
    job_status = complete_task(session, task_id, utcnow(), context.policy)
    # Its files and Blender session are warm: the same job's tasks come first, among
    # jobs equal on priority and fair share.
    found = _claim_in(session, context, worker_id, True, task.job_id) if claim_next else None
    return task.job_id, job_status, found


_COMPLETED_BY = Prepared(
    select(Task.job_id, Job.status)
    .join(Job, Job.id == Task.job_id)
    .where(
        Task.id == bindparam("task"),
        Task.status == TaskStatus.COMPLETED.value,
        Task.worker_id == bindparam("worker"),
        shown_jobs(),  # a job being deleted answers as a gone one: 409
    )
)
_STILL_HOLDS = Prepared(
    select(Task.id, Task.job_id, Task.type, Task.frames, Task.attempts, Task.tile)
    .where(Task.worker_id == bindparam("worker"), Task.status == TaskStatus.ACTIVE.value)
    .order_by(Task.started_at.desc())
    .limit(1)
)


def _completed_before(
    session: Session,
    task_id: int,
    worker_id: int,
    context: ManagerContext,
    claim_next: bool,
) -> tuple[int, JobStatus, _Claimed | None]:
    """The same completion again, from the worker that made it: its answer was lost (the
    worker retries a call whose reply never came). It gets the answer again, with the
    task the first answer handed out, if it still holds one; a 409 would leave that task
    with a worker that does not know it has it until the task timeout."""
    connection = session.connection()
    done = _COMPLETED_BY.first(connection, {"task": task_id, "worker": worker_id})
    if done is None:
        raise _not_held(task_id)
    found = None
    if claim_next:
        held = _STILL_HOLDS.first(connection, {"worker": worker_id})
        if held is not None:
            name = session.scalar(select(Worker.name).where(Worker.id == worker_id)) or ""
            found = _Claimed((_handed_out(session, context, AssignedTask(*held)), name))
        else:
            found = _claim_in(session, context, worker_id, True, done.job_id)
    return done.job_id, JobStatus(done.status), found


@router.post("/tasks/{task_id}/complete", response_model=CompletionOutcome, responses=ERRORS)
async def complete(
    task_id: int,
    body: TaskComplete,
    context: Context,
    worker_id: RunnerDep,
    claim_next: Annotated[
        bool,
        Query(
            alias="next",
            description="Also claim the worker's next task now (no waiting): one request "
            "instead of two between tasks. `next_task` in the answer (none for a worker too "
            "old for this manager: the completion counts, its next claim is answered 426).",
        ),
    ] = False,
) -> CompletionOutcome:
    job_id, job_status, found = await context.db.batched(
        partial(
            _complete_in,
            task_id=task_id,
            worker_id=worker_id,
            context=context,
            claim_next=claim_next,
        )
    )
    context.logs.append(job_id, task_id, body.log_lines)
    log.info("task completed", job_id=job_id, task_id=task_id, worker_id=worker_id)
    _changed(context, job_id, worker_id)
    outcome = CompletionOutcome(task_status=TaskStatus.COMPLETED, job_status=job_status)
    if found is not None:
        outcome.next_task = _after_claim(context, worker_id, found)
    return outcome


@router.post("/tasks/{task_id}/fail", response_model=TaskOutcome, responses=ERRORS)
def fail(task_id: int, body: TaskFail, context: Context, worker_id: RunnerDep) -> TaskOutcome:
    with context.db.transaction() as session:
        task = _held_task(session, task_id, worker_id)
        context.logs.append(task.job_id, task_id, [*body.log_lines, f"FAILED: {body.reason}"])
        job_status = fail_task(session, task, body.reason, utcnow(), context.policy)
        log.warning(
            "task failed",
            job_id=task.job_id,
            task_id=task.id,
            worker_id=worker_id,
            reason=body.reason,
            task_status=task.status,
        )
        outcome = TaskOutcome(task_status=TaskStatus(task.status), job_status=job_status)
        job_id = task.job_id
    _changed(context, job_id, worker_id)
    context.wakeup.notify()
    return outcome


def _changed(context: ManagerContext, job_id: int, worker_id: int) -> None:
    context.events.job_changed(job_id)
    context.events.runner_changed(worker_id)


@router.post("/tasks/{task_id}/release", response_model=TaskOutcome, responses=ERRORS)
def release(task_id: int, body: TaskRelease, context: Context, worker_id: RunnerDep) -> TaskOutcome:
    with context.db.transaction() as session:
        task = _held_task(session, task_id, worker_id)
        now = utcnow()
        job_status = requeue_task(session, task, body.reason, now, context.policy)
        # Why this runner may sit idle now (a fault of its machine, or it is stopping):
        # the runners listing says it until it is handed a task (`api/admin`).
        session.execute(
            update(Worker)
            .where(Worker.id == worker_id)
            .values(gave_back_at=now, gave_back_task_id=task.id, gave_back_reason=body.reason)
        )
        log.info("task released", job_id=task.job_id, task_id=task.id, worker_id=worker_id)
        outcome = TaskOutcome(task_status=TaskStatus(task.status), job_status=job_status)
        job_id = task.job_id
    _changed(context, job_id, worker_id)
    context.wakeup.notify()
    return outcome


@router.post("/sign-off", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def sign_off(context: Context, worker_id: RunnerDep) -> Response:
    now = utcnow()
    with context.db.transaction() as session:
        worker = session.get(Worker, worker_id)
        if worker is None:
            raise gone_runner(session, context, worker_id)
        worker.status = WorkerStatus.OFFLINE.value
        _new_run(worker)
        jobs = set()
        for task in session.scalars(
            select(Task).where(Task.worker_id == worker_id, Task.status == TaskStatus.ACTIVE.value)
        ):
            requeue_task(session, task, f"worker {worker.name} signed off", now, context.policy)
            jobs.add(task.job_id)
        log.info("runner signed off", worker=worker.name, worker_id=worker_id)
    for job_id in jobs:
        context.events.job_changed(job_id)
    context.events.runner_changed(worker_id)
    context.wakeup.notify()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@download_route(
    router,
    "/files/{job_id}/{file_path:path}",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        **error_responses(416),
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "The one byte range a `Range` header asked for (see API.md)"},
    },
    summary="Download an input file of a job whose task this runner holds (Range, If-Range); "
    "HEAD: its headers only",
)
def download_input(
    job_id: int,
    file_path: str,
    request: Request,
    context: Context,
    worker_id: RunnerDep,
    kind: Annotated[
        Literal["input", "output", "tile"],
        Query(
            description="output: a rendered frame, for follow-up tasks (video); tile: a "
            "tile of a tiled still, for its merge task."
        ),
    ] = "input",
) -> Response:
    try:
        clean = safe_relative_path(file_path)
    except UnsafePathError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    with context.db.transaction() as session:
        holds = session.scalar(
            select(Task.id).where(
                Task.job_id == job_id,
                Task.worker_id == worker_id,
                Task.status == TaskStatus.ACTIVE.value,
            )
        )
        if holds is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task of job {job_id} is yours")
        row = session.scalar(
            select(JobFile).where(
                JobFile.job_id == job_id, JobFile.kind == kind, JobFile.path == clean
            )
        )
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no file {clean!r}")
        sha, size = row.sha256, row.size
    part = requested_part(request.headers, size, etag_of(sha))
    return blob_download(context, request, job_id, sha, clean, part, {"X-Content-SHA256": sha})
