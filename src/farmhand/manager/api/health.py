"""Liveness for load balancers and the demo: answers once the database answers.

A 503 while the SQLite file the manager opened is gone (deleted or replaced while it
runs: `Database.check_file`), when it answers nothing that needs the database: a
probe restarts it, and the start then says what is missing. A 503 with `Retry-After`
too while the database cannot be used just now (PostgreSQL down or unreachable: the
error handler's `db.presence.unavailable`): a restart would not mend that, so a probe
should take the manager out of rotation rather than restart it, and readmit it once this
answers 200 again."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from farmhand import __version__
from farmhand.manager.api.deps import Context
from farmhand.manager.api.errors import error_responses
from farmhand.manager.db.engine import DatabaseGone
from farmhand.shared.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=error_responses(503))
def healthz(context: Context) -> Health:
    if context.db.gone is not None:
        raise DatabaseGone()
    with context.db.read() as session:
        session.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=context.db.engine.dialect.name)
