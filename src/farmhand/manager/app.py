"""The manager's ASGI app factory.

`create_app(settings)` migrates the database, runs the first-start bootstrap and starts
the reaper; everything else is routers. The app keeps no state of its own beyond the
database and the blob store, so several managers may share both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy import make_url, select
from starlette.concurrency import run_in_threadpool

from farmhand import __version__
from farmhand.manager.api import (
    admin,
    blendinfo,
    blobs,
    events_stream,
    health,
    jobs,
    metrics,
    projects,
    runner,
    runner_frames,
    runner_outputs,
    runner_tiles,
    runner_tokens,
    runner_video,
    tokens,
    upload_sessions,
    usage,
    users,
)
from farmhand.manager.api import auth as auth_routes
from farmhand.manager.api.errors import (
    install_error_handlers,
    refused_for_storage,
    watch_descriptors,
)
from farmhand.manager.api.limits import (
    BodyInterrupted,
    BodyLimits,
    LimitsMiddleware,
    answer_interrupted,
)
from farmhand.manager.bootstrap import BootstrapReport, bootstrap
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.engine import Database, sqlite_file
from farmhand.manager.db.location import sqlite_on_network
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import Job
from farmhand.manager.db.presence import (
    check_database_url,
    check_schema,
    check_sqlite_file,
    check_sqlite_not_in_use,
    database_errors_said,
    database_reason,
    told_where,
    unavailable,
)
from farmhand.manager.heap import freeze_startup_objects
from farmhand.manager.jobs.delete import deletion_loop
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.reaper import ReapReport, reap
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.siblings import Siblings, siblings_dir
from farmhand.manager.storage.blobs import BlobStore
from farmhand.manager.storage.gc import gc_loop
from farmhand.manager.storage.logs import TaskLogs, set_aside_stale
from farmhand.manager.supervision import die_with_supervisor
from farmhand.manager.web import routes as web_routes
from farmhand.manager.web import thumbnails
from farmhand.shared.logconfig import configure_logging
from farmhand.shared.pathmap import check_variables

log = structlog.get_logger(__name__)


def prepare(settings: ManagerSettings) -> tuple[ManagerContext, BootstrapReport]:
    """Everything that must be true before the first request: folders, schema, admin.

    Refuses (`db.presence.StartRefused`, one line for the operator) a data dir holding
    a farm's files without their database, rather than starting a new farm on them."""
    check_variables(settings.path_variables)  # a typo in a share's root fails at start
    url = settings.resolved_database_url
    where = told_where(settings.database_url, settings.data_dir)
    check_database_url(url, where)  # `postgres://`: one line, not a traceback
    # A new data dir is the manager's alone (an existing one keeps the mode it has).
    made = [folder for folder in (settings.data_dir, *settings.data_dir.parents)
            if not folder.exists()]  # fmt: skip
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    unsafe = sqlite_on_network(url)
    if unsafe is not None:
        log.error("database on a network filesystem", problem=unsafe)
    database_file = sqlite_file(url)
    if database_file is not None:
        check_sqlite_file(settings.data_dir, database_file)  # before opening creates it
        check_sqlite_not_in_use(settings.data_dir, database_file)  # before migrating it
    db = Database(url)
    try:
        # A damaged file, PostgreSQL down, a wrong password: one line, not a traceback.
        with database_errors_said(url, where):
            check_schema(db.engine, settings.data_dir, _database_name(settings))
        # The storage folders (`blobs/`) only once the database answered: a start refused
        # for its database leaves the data dir as it found it.
        context = _context(settings, db)
        with database_errors_said(url, where):
            upgrade(db.engine)
            report = bootstrap(db, settings)
            set_aside_stale(context.logs.root, lambda ids: _jobs_among(context, ids), utcnow())
    except BaseException:
        db.dispose()
        for folder in made:  # the data dir first, then the parents this start made
            with contextlib.suppress(OSError):  # only if this start left it empty
                folder.rmdir()
        raise
    return context, report


def _database_name(settings: ManagerSettings) -> str:
    """The database as an operator knows it: its file, or its URL without the password."""
    url = settings.resolved_database_url
    database_file = sqlite_file(url)
    if database_file is not None:
        return str(database_file)
    return make_url(url).render_as_string(hide_password=True)


def _jobs_among(context: ManagerContext, ids: Collection[int]) -> set[int]:
    ordered = sorted(ids)
    found: set[int] = set()
    with context.db.read() as session:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            found.update(session.scalars(select(Job.id).where(Job.id.in_(chunk))))
    return found


def _context(settings: ManagerSettings, db: Database | None = None) -> ManagerContext:
    """The context of a manager process; its folders are made here (`BlobStore`)."""
    db = db if db is not None else Database(settings.resolved_database_url)
    context = ManagerContext(
        settings=settings,
        db=db,
        blobs=BlobStore(settings.blob_dir, settings.max_upload_bytes),
        logs=TaskLogs(settings.log_dir),
        policy=Policy.from_settings(settings),
    )
    db.on_wait(context.reaper_clock.database_waited)  # waited-for time counts as nobody's silence
    return context


async def _reaper_loop(context: ManagerContext) -> None:
    def reap_once() -> ReapReport:
        with context.db.transaction() as session:
            return reap(
                session,
                utcnow(),
                heartbeat_timeout=context.settings.heartbeat_timeout,
                task_timeout=context.settings.task_timeout,
                clock=context.reaper_clock,
                policy=context.policy,
            )

    while True:
        await asyncio.sleep(context.settings.reaper_interval)
        try:
            # One stat: a database file deleted or replaced stops all database use (logged).
            if context.db.check_file() is not None:
                continue
            report = await run_in_threadpool(reap_once)
            context.reaper_clock.database_answered(utcnow())
            for job_id in report.jobs:
                context.events.job_changed(job_id)
            for worker_id in report.workers:
                context.events.runner_changed(worker_id)
            if report:
                context.wakeup.notify()
        except Exception as error:
            if unavailable(error):  # the time the database is away counts against nobody
                context.reaper_clock.database_unavailable(
                    utcnow(), database_reason(error, context.db.url)
                )
            elif refused_for_storage(context, error, doing="reaper pass") is None:
                log.exception("reaper pass failed; trying again")


LoopErrorHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def _loop_errors(previous: LoopErrorHandler | None) -> LoopErrorHandler:
    """The event loop's error handler: the server's accept loop out of file descriptors
    (EMFILE/ENFILE; it pauses and tries again by itself) is said in `api/errors.py`'s
    one line, at most once a minute, rather than as a traceback per failed accept; the
    rest goes where it went."""

    def handle(loop: asyncio.AbstractEventLoop, details: dict[str, Any]) -> object:
        error = details.get("exception")
        said = isinstance(error, OSError) and refused_for_storage(
            None, error, doing="accepting connections"
        )
        if said:  # a storage fault: logged as such
            return None
        if previous is not None:
            return previous(loop, details)
        loop.default_exception_handler(details)
        return None

    return handle


PROCESS_SETTINGS = "FARMHAND_MANAGER_PROCESS_SETTINGS"
"""Where `farmhand manager --processes N` leaves its flags for the processes it starts."""


def app_from_environment() -> FastAPI:
    """The app of one of several manager processes (`farmhand manager --processes N`).

    Uvicorn starts each process by importing this factory; the parent has already
    migrated and bootstrapped the database (`prepare`) and put its command-line settings
    in the environment (`PROCESS_SETTINGS`), the rest comes from `FARMHAND_*` as usual.
    """
    flags = json.loads(os.environ[PROCESS_SETTINGS])
    configure_logging("manager", flags.pop("log_level", "INFO"), traced=True)
    die_with_supervisor()  # a SIGKILLed supervisor must not leave this process serving
    settings = ManagerSettings.from_flags(flags)
    # `prepare` ran once, in the parent, before any of these processes started.
    app = create_app(settings, _context(settings))
    freeze_startup_objects()
    return app


def create_app(settings: ManagerSettings, context: ManagerContext | None = None) -> FastAPI:
    if context is None:
        context, _ = prepare(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_errors(loop.get_exception_handler()))
        context.wakeup.bind(loop)
        context.events.bind(loop)
        siblings = None
        if settings.processes > 1:
            # One of several processes of this manager: live events and wake-ups made
            # here must reach the others' browsers and waiting claims.
            siblings = Siblings(siblings_dir(settings.data_dir))
            context.events.share_with(siblings)
            context.wakeup.share_with(siblings)
            context.reaper_clock.share_with(siblings)
            siblings.start(loop)
        reaper = asyncio.create_task(_reaper_loop(context))
        collector = asyncio.create_task(gc_loop(context))
        deleter = asyncio.create_task(deletion_loop(context))  # deletions a stop cut short
        descriptors = asyncio.create_task(watch_descriptors())  # "out of file descriptors"
        try:
            yield
        finally:
            for loop_task in (reaper, collector, deleter, descriptors):
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            if siblings is not None:
                siblings.close()
            context.logs.close()
            context.db.dispose()

    app = FastAPI(
        title="farmhand manager",
        version=__version__,
        description="A distributed render farm for Blender. See docs/API.md.",
        lifespan=lifespan,
    )
    app.state.farm = context
    install_error_handlers(app)
    app.add_exception_handler(BodyInterrupted, answer_interrupted)
    app.add_middleware(LimitsMiddleware, limits=BodyLimits.from_settings(settings))
    # Runner routes first: they are most of the traffic (three calls a task), and a request
    # is matched against the routes in order. No path of the routers before it overlaps.
    for module in (
        runner, runner_frames, health, blobs, jobs, projects, runner_video, runner_outputs,
        runner_tiles,
        admin, users, tokens, runner_tokens, blendinfo, events_stream, thumbnails, web_routes,
        upload_sessions, usage, metrics,
    ):  # fmt: skip
        app.include_router(module.router)
    app.include_router(auth_routes.router)
    return app
