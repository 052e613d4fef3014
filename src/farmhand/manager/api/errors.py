"""Error answers: always `{"detail": "..."}`, never a stack trace.

Validation errors become 400 with the first problem spelled out (FastAPI's default 422
body echoes the whole input back, which can include secrets). A full disk, under the
blob store, the task logs or the database, is `507 Insufficient Storage` with that said
plainly: clients retry 5xx (the worker keeps its frames in its outbox meanwhile), and the
operator reads one clear log line per refusal instead of a traceback. Each refusal also
restarts the reaper's clock (`ReaperClock.storage_full`): a worker whose heartbeats were
refused was not silent, and must not be taken for dead once space is back. A database
that cannot be used just now (`db.presence.unavailable`: PostgreSQL down or unreachable,
SQLite locked for a minute) is `503 Service Unavailable` with `Retry-After`, and restarts
the reaper's clock the same way (`ReaperClock.database_unavailable`); the outage is
logged once when it starts and once when it ends, not per request, and the answer names
neither the database's address nor its error. Anything else unexpected is logged with
its traceback on the manager and answered with a plain 500. A read of a user's file that
waited too long for its turn (`file_reads.FileReadsBusy`) is `503` with `Retry-After`.
"""

from __future__ import annotations

import errno
from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError

from farmhand.manager.clock import utcnow
from farmhand.manager.db.presence import database_reason, unavailable
from farmhand.manager.file_reads import RETRY_AFTER_SECONDS, FileReadsBusy
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
"""Seconds a client is asked to wait after a 503 for an unavailable database."""

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13
"""`SQLITE_FULL`: "database or disk is full"."""
_POSTGRES_DISK_FULL = "53100"


def is_storage_full(error: BaseException) -> bool:
    """Whether `error` is a disk (or quota) running out of space under the manager, from
    a file write or from the database (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`)."""
    if isinstance(error, OSError):
        return error.errno in _NO_SPACE
    if isinstance(error, DBAPIError):
        cause = error.orig
        return (
            getattr(cause, "sqlite_errorcode", None) == _SQLITE_FULL
            or getattr(cause, "sqlstate", None) == _POSTGRES_DISK_FULL
        )
    return False


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
        context = getattr(request.app.state, "farm", None)
        if unavailable(error):
            if context is not None:  # logs the outage's first refusal, not each
                reason = database_reason(error, context.db.url)
                context.reaper_clock.database_unavailable(utcnow(), reason)
            log.debug("database unavailable: request refused", path=request.url.path)
            return JSONResponse(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                content={"detail": UNAVAILABLE_DETAIL},
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        if not is_storage_full(error):
            return _internal_error(request)
        if context is not None:
            context.reaper_clock.storage_full(utcnow())
        log.error(
            "storage full: request refused",
            path=request.url.path,
            method=request.method,
            error=str(error)[:200],
        )
        return JSONResponse(
            status_code=status.HTTP_507_INSUFFICIENT_STORAGE,
            content={
                "detail": "the manager's storage is full; nothing was stored. "
                "Try again once an administrator has freed space."
            },
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return _internal_error(request)
