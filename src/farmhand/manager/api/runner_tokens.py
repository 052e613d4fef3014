"""Admin routes for runner registration tokens: list, create (shown once), revoke.

A registration token lets a machine join the farm as a runner; it is exchanged for the
runner's own secret at `POST /api/runner/register`. It may expire, admit a limited
number of runners (`max_uses`, 1 for single use) and be revoked; `redeem` is the one
place that decides whether it still admits someone. The answer to create carries the
exact `farmhand worker …` command to paste on the render machine.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import AdminDep, Context
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import RunnerRegistrationToken
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import RunnerTokenCreate, RunnerTokenCreated, RunnerTokenInfo

router = APIRouter(prefix="/api/admin/runner-tokens", tags=["admin"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}


def _usable(now: datetime) -> ColumnElement[bool]:
    """The one definition of a registration token that still admits a runner."""
    table = RunnerRegistrationToken
    return and_(
        table.revoked_at.is_(None),
        or_(table.expires_at.is_(None), table.expires_at > now),
        or_(table.max_uses.is_(None), table.uses < table.max_uses),
    )


def redeem(session: Session, secret: str, now: datetime) -> bool:
    """Count one registration against the token; False if it admits no one (any more).

    One conditional UPDATE, so two runners racing for the last use of a single-use
    token cannot both get in.
    """
    result = session.execute(
        update(RunnerRegistrationToken)
        .where(RunnerRegistrationToken.token_hash == token_hash(secret), _usable(now))
        .values(uses=RunnerRegistrationToken.uses + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def runner_token_info(row: RunnerRegistrationToken, now: datetime) -> RunnerTokenInfo:
    active = (
        row.revoked_at is None
        and (row.expires_at is None or row.expires_at > now)
        and (row.max_uses is None or row.uses < row.max_uses)
    )
    return RunnerTokenInfo(
        id=row.id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        uses=row.uses,
        max_uses=row.max_uses,
        active=active,
    )


def worker_command(manager_url: str, secret: str) -> str:
    """What to paste on a render machine (quoted for a POSIX shell)."""
    return f"farmhand worker --manager {shlex.quote(manager_url)} --token {shlex.quote(secret)}"


@router.get("", response_model=list[RunnerTokenInfo], responses=ERRORS)
def list_runner_tokens(context: Context, caller: AdminDep) -> list[RunnerTokenInfo]:
    now = utcnow()
    with context.db.transaction() as session:
        rows = session.scalars(
            select(RunnerRegistrationToken).order_by(RunnerRegistrationToken.id.desc())
        )
        return [runner_token_info(row, now) for row in rows]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=RunnerTokenCreated, responses=ERRORS
)
def create_runner_token(
    body: RunnerTokenCreate, request: Request, context: Context, caller: AdminDep
) -> RunnerTokenCreated:
    now = utcnow()
    secret = new_token("runner-registration")
    expires = now + timedelta(hours=body.expires_in_hours) if body.expires_in_hours else None
    with context.db.transaction() as session:
        row = RunnerRegistrationToken(
            token_hash=token_hash(secret), created_at=now, expires_at=expires,
            max_uses=body.max_uses,
        )  # fmt: skip
        session.add(row)
        session.flush()
        info = runner_token_info(row, now)
    manager_url = str(request.base_url).rstrip("/")
    return RunnerTokenCreated(
        token=info, secret=secret, command=worker_command(manager_url, secret)
    )


@router.delete(
    "/{token_id}", response_model=RunnerTokenInfo, responses=ERRORS, summary="Revoke a token"
)
def revoke_runner_token(token_id: int, context: Context, caller: AdminDep) -> RunnerTokenInfo:
    """Runners that already registered with it keep working: they hold their own secret."""
    now = utcnow()
    with context.db.transaction() as session:
        row = session.get(RunnerRegistrationToken, token_id)
        if row is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"registration token {token_id} not found"
            )
        if row.revoked_at is None:
            row.revoked_at = now
        return runner_token_info(row, now)
