"""A person's own API tokens: list, create (the secret is shown once), revoke.

Tokens are 256-bit secrets stored as SHA-256 hashes (`farmhand.manager.auth.tokens`);
a revoked token stays listed with its revocation time, so a person can see what a
script that stopped working was using.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from farmhand.manager.api.deps import Context, UserDep
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import ApiToken
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import TokenCreate, TokenCreated, TokenInfo

router = APIRouter(prefix="/api/tokens", tags=["tokens"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}


def token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, created_at=row.created_at, revoked_at=row.revoked_at)


@router.get("", response_model=list[TokenInfo], responses=ERRORS)
def list_tokens(context: Context, caller: UserDep) -> list[TokenInfo]:
    # Only reads: a snapshot, so the list answers while a long write runs.
    with context.db.read() as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == caller.user_id).order_by(ApiToken.id.desc())
        )
        return [token_info(row) for row in rows]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated, responses=ERRORS)
def create_token(body: TokenCreate, context: Context, caller: UserDep) -> TokenCreated:
    secret = new_token("api")
    with context.db.transaction() as session:
        row = ApiToken(
            user_id=caller.user_id,
            name=body.name,
            token_hash=token_hash(secret),
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return TokenCreated(token=token_info(row), secret=secret)


@router.delete("/{token_id}", response_model=TokenInfo, responses=ERRORS, summary="Revoke a token")
def revoke_token(token_id: int, context: Context, caller: UserDep) -> TokenInfo:
    with context.db.transaction() as session:
        row = session.get(ApiToken, token_id)
        if row is None or row.user_id != caller.user_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"token {token_id} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return token_info(row)
