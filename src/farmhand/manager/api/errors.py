"""Error answers: always `{"detail": "..."}`, never a stack trace.

Validation errors become 400 with the first problem spelled out (FastAPI's default 422
body echoes the whole input back, which can include secrets). Anything unexpected is
logged with its traceback on the manager and answered with a plain 500.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_400_BAD_REQUEST,
            content={"detail": describe_validation_error(error)},
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return JSONResponse(
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            content={"detail": "internal error; see the manager's log"},
        )
