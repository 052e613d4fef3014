"""Liveness for load balancers and the demo: answers once the database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from farmhand import __version__
from farmhand.manager.api.deps import Context
from farmhand.shared.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(context: Context) -> Health:
    with context.db.read() as session:
        session.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=context.db.engine.dialect.name)
