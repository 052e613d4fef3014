"""Error answers: always `{"detail": "..."}`, never a stack trace.

Validation errors become 400 with the first problem spelled out (FastAPI's default 422
body echoes the whole input back, which can include secrets).

The manager's storage failing under a request is one home here (`storage_fault`), for
the API's answers, the web sign-in page (`web/routes.py`), live event streams and the
reaper's passes alike:

- a full disk (or quota), under the blob store, the task logs or the database, is
  `507 Insufficient Storage`, said plainly;
- a data dir that cannot be written, read-only (EROFS: remounted read-only by the
  kernel after disk errors, or by an administrator; SQLite's `SQLITE_READONLY`) or not
  permitted (EACCES/EPERM on a file in it: ownership or mode changed under the running
  manager), is `507` too, naming which. Not 503: nothing passes by itself, as with a
  full disk an administrator must act, and 507 is what says "nothing was stored";
  clients retry either (the worker keeps its frames in its outbox meanwhile) and
  succeed once it is writable again, without a restart of the manager;
- a process out of file descriptors (EMFILE/ENFILE, or SQLite's "unable to open
  database file" while they are used up, `out_of_descriptors`) is `503` with
  `Retry-After`: it passes as connections close, so a retry soon may well succeed.

Each is logged as one line saying what is wrong and what to do, the first refusal of a
kind at once and then at most one line every `LOG_EVERY` seconds with how many were
refused meanwhile (`StorageLog`), not a traceback per request: a farm's workers retry
every few seconds. Each refusal also restarts the reaper's clock
(`ReaperClock.storage_refused`, its mark for any call refused for want of storage): a
worker whose heartbeats were refused was not silent, and must not be taken for dead
once the storage is back.

A database that cannot be used just now (`db.presence.unavailable`: PostgreSQL down or
unreachable, SQLite locked for a minute) is `503 Service Unavailable` with
`Retry-After`, and restarts the reaper's clock the same way
(`ReaperClock.database_unavailable`); the outage is logged once when it starts and once
when it ends, not per request, and the answer names neither the database's address nor
its error. Anything else unexpected is logged with its traceback on the manager and
answered with a plain 500. A read of a user's file that waited too long for its turn
(`file_reads.FileReadsBusy`) is `503` with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.presence import database_reason, unavailable
from farmhand.manager.file_reads import RETRY_AFTER_SECONDS, FileReadsBusy
from farmhand.manager.log_throttle import LOG_EVERY, LogThrottle
from farmhand.shared.schemas import ErrorResponse

log = structlog.get_logger(__name__)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for routes that answer these error codes with `ErrorResponse`."""
    return {code: {"model": ErrorResponse} for code in codes}


def describe_validation_error(error: RequestValidationError) -> str:
    """One line naming the first few bad fields; the 400 body of every farmhand server."""
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


UNAVAILABLE_DETAIL = (
    "the manager's database is unavailable just now (unreachable or not answering): "
    "nothing was done. Try again shortly; the manager's log says why"
)
RETRY_AFTER = 5
"""Seconds a client is asked to wait after a 503: an unavailable database, no file
descriptors to spare."""

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_PERMITTED = {errno.EACCES, errno.EPERM}
_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE}
_SQLITE_READONLY = 8
"""`SQLITE_READONLY` and its extended codes: "attempt to write a readonly database"."""
_SQLITE_FULL = 13
"""`SQLITE_FULL`: "database or disk is full"."""
_SQLITE_CANTOPEN = 14
"""`SQLITE_CANTOPEN`: "unable to open database file", whatever the reason (no errno)."""
_POSTGRES_DISK_FULL = "53100"


@dataclass(frozen=True)
class Refusal:
    """Why the manager refused a request for its storage or database: the answer, and the
    log's line (a storage fault's; an unavailable database is logged by the reaper's clock)."""

    kind: str
    status_code: int
    detail: str
    """What the client is told (no path: the data dir's layout is the operator's)."""
    problem: str
    """The log's line: what is wrong and what to do."""
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def answer(self) -> JSONResponse:
        return JSONResponse(
            status_code=self.status_code, content={"detail": self.detail}, headers=self.headers()
        )


STORAGE_FULL = Refusal(
    "full",
    status.HTTP_507_INSUFFICIENT_STORAGE,
    "the manager's storage is full; nothing was stored. "
    "Try again once an administrator has freed space.",
    "storage full: requests that store anything are refused (507) until space is freed",
)
READ_ONLY = Refusal(
    "read-only",
    status.HTTP_507_INSUFFICIENT_STORAGE,
    "the manager's data dir is read-only: nothing was stored. "
    "Try again once an administrator has made it writable.",
    "the data dir is read-only: requests that store anything are refused (507) until it "
    "is writable again (remount it read-write; no restart needed)",
)
NOT_PERMITTED = Refusal(
    "not-permitted",
    status.HTTP_507_INSUFFICIENT_STORAGE,
    "the manager may not write in its data dir (permission denied): nothing was stored. "
    "Try again once an administrator has given it back the right to.",
    "the data dir cannot be written (permission denied): requests that store anything are "
    "refused (507) until the manager's account may write there again (no restart needed)",
)
NO_DESCRIPTORS = Refusal(
    "descriptors",
    status.HTTP_503_SERVICE_UNAVAILABLE,
    "the manager is out of file descriptors just now: nothing was done. Try again shortly.",
    "out of file descriptors: raise the limit (ulimit -n, or LimitNOFILE= under systemd); "
    "requests that need one are answered 503 meanwhile",
    retry_after=RETRY_AFTER,
)


def is_storage_full(error: BaseException) -> bool:
    """Whether `error` is a disk (or quota) running out of space under the manager, from
    a file write or from the database (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`)."""
    return storage_fault(error) is STORAGE_FULL


def storage_fault(error: BaseException, data_dir: Path | None = None) -> Refusal | None:
    """Which storage fault `error` is, if it is one (the module's docstring): from a file
    the manager opened or wrote, or from its database.

    Permission denied counts only for a file inside `data_dir` (a file elsewhere, a
    share's, is no fault of the manager's storage); a read-only file system anywhere
    under the manager is one, since the manager writes nowhere else."""
    if isinstance(error, OSError):
        code = error.errno
        if code in _NO_SPACE:
            return STORAGE_FULL
        if code == errno.EROFS:
            return READ_ONLY
        if code in _NO_DESCRIPTORS:
            return NO_DESCRIPTORS
        if code in _NOT_PERMITTED and _inside(error.filename, data_dir):
            return NOT_PERMITTED
        return None
    if isinstance(error, DBAPIError):
        cause = error.orig
        if getattr(cause, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return STORAGE_FULL
        code = getattr(cause, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF
        if primary == _SQLITE_FULL:
            return STORAGE_FULL
        if primary == _SQLITE_READONLY:
            return READ_ONLY
        if primary == _SQLITE_CANTOPEN and out_of_descriptors():
            return NO_DESCRIPTORS
    return None


def _inside(filename: object, data_dir: Path | None) -> bool:
    if data_dir is None or not isinstance(filename, str | bytes | os.PathLike):
        return False
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(data_dir.resolve())
    except (OSError, ValueError):
        return False


DESCRIPTORS_SPARE = 8
"""Descriptors within which of the limit a process counts as out of them: SQLite says
only "unable to open database file", and by the time that is looked into, a few may
have been given back (a connection closed meanwhile)."""


def out_of_descriptors() -> bool:
    """Whether this process has (all but `DESCRIPTORS_SPARE` of) its open-files limit in
    use now. SQLite does not say why it could not open a file; while the manager runs
    the file is there (a deleted one is `Database.check_file`'s), so a failure to open
    it with the descriptors used up is that."""
    try:
        opened = len(os.listdir("/proc/self/fd"))
    except OSError as error:
        return error.errno in _NO_DESCRIPTORS
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return False
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft != resource.RLIM_INFINITY and opened >= soft - DESCRIPTORS_SPARE


DESCRIPTOR_WATCH_SECONDS = 5.0


async def watch_descriptors(every: float = DESCRIPTOR_WATCH_SECONDS) -> None:
    """Say it when this process has run out of file descriptors, every `every` seconds
    while it lasts (as `StorageLog` allows), until cancelled.

    Requests that fail for want of one say it themselves; connections do not. uvloop's
    accept loop (libuv) accepts and at once closes a connection it has no descriptor
    for, and tells no one: the client sees its connection reset, the log nothing.
    asyncio's own loop pauses accepting a second and reports it to the loop's error
    handler (`app._loop_errors` logs it here too)."""
    while True:
        await asyncio.sleep(every)
        if await asyncio.to_thread(out_of_descriptors):
            STORAGE_LOG.refused(
                NO_DESCRIPTORS,
                OSError(errno.EMFILE, os.strerror(errno.EMFILE)),
                doing="accepting connections",
            )


class StorageLog:
    """Logs each kind of storage fault once when first refused, then at most once every
    `LOG_EVERY` seconds with the count refused meanwhile (`log_throttle`, the policy's
    home): while it lasts every retry of every worker is refused, and a line (or a
    traceback) each buried the log. Any thread."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._throttle = LogThrottle(every)

    def refused(self, fault: Refusal, error: BaseException, **where: object) -> None:
        due = self._throttle.occurred(fault.kind, refused=1)
        if due is None:
            return
        kept = due.counts["refused"] - 1  # this refusal is the line's own
        said = {} if due.first else {"refused_since_last_line": kept}
        log.error(fault.problem, **where, error=_said(error), **said)


def _said(error: BaseException) -> str:
    """The error on one line, short (SQLAlchemy's text carries the statement)."""
    return " ".join(str(getattr(error, "orig", None) or error).split())[:200]


STORAGE_LOG = StorageLog()
"""The log of storage faults of this process (a test may put a fresh one in its place)."""


def refused_for_storage(
    context: ManagerContext | None, error: BaseException, **where: object
) -> Refusal | None:
    """If `error` is a storage fault (`storage_fault`): note it on the reaper's clock, log
    it (`StorageLog`) and return it, for the caller to answer with. `where` goes to the
    log line (path, method, what was doing it)."""
    data_dir = context.settings.data_dir if context is not None else None
    fault = storage_fault(error, data_dir)
    if fault is None:
        return None
    if context is not None:
        context.reaper_clock.storage_refused(utcnow())
    STORAGE_LOG.refused(fault, error, **where)
    return fault


DATABASE_UNAVAILABLE = Refusal(
    "database", status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE_DETAIL, "", RETRY_AFTER
)
"""An unavailable database's answer; the reaper's clock logs the outage, not this."""


def refusal(request: Request, error: BaseException) -> Refusal | None:
    """The answer for an error the manager's database or storage caused, rather than a
    bug: an unavailable database, or a storage fault (each noted and logged as the
    module's docstring says); None for anything else. The API's handler and the web
    sign-in form answer with it, each in its own form."""
    context: ManagerContext | None = getattr(request.app.state, "farm", None)
    if unavailable(error):
        if context is not None:  # logs the outage's first refusal, not each
            reason = database_reason(error, context.db.url)
            context.reaper_clock.database_unavailable(utcnow(), reason)
        log.debug("database unavailable: request refused", path=request.url.path)
        return DATABASE_UNAVAILABLE
    return refused_for_storage(context, error, path=request.url.path, method=request.method)


def _internal_error(request: Request) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content={"detail": "internal error; see the manager's log"},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_400_BAD_REQUEST,
            content={"detail": describe_validation_error(error)},
        )

    @app.exception_handler(FileReadsBusy)
    async def _reads_busy(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": str(error)},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(OverflowError)
    async def _out_of_range(request: Request, error: Exception) -> JSONResponse:
        # An id or number beyond what the database stores (SQLite: 64-bit integers);
        # no such row can exist, and the fault is in the request.
        log.info("value out of range", path=request.url.path, error=str(error)[:200])
        return JSONResponse(
            status_code=status.HTTP_400_BAD_REQUEST,
            content={"detail": "a number in the request is out of range"},
        )

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, error: Exception) -> JSONResponse:
        # The database refused a value (PostgreSQL: an integer out of range, a NUL byte
        # in text); the request carried it.
        log.info("value refused by the database", path=request.url.path, error=str(error)[:200])
        return JSONResponse(
            status_code=status.HTTP_400_BAD_REQUEST,
            content={"detail": "a value in the request is out of range or cannot be stored"},
        )

    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def _storage(request: Request, error: Exception) -> JSONResponse:
        answer = refusal(request, error)
        return _internal_error(request) if answer is None else answer.answer()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return _internal_error(request)
