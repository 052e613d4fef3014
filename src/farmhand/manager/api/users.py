"""Admin routes for people's accounts: list them, and create one with a first API token.

Until full accounts (passwords, OAuth) exist, an API token is how a person signs in, so
creating a user also creates the token they will sign in with; it is shown once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import or_, select

from farmhand.manager.api.deps import AdminDep, Context
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import ApiToken, User
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import UserCreate, UserCreated, UserInfo

router = APIRouter(prefix="/api/admin/users", tags=["admin"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
}


def user_info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id, name=user.name, email=user.email, role=user.role, created_at=user.created_at
    )


@router.get("", response_model=list[UserInfo], responses=ERRORS)
def list_users(context: Context, caller: AdminDep) -> list[UserInfo]:
    with context.db.transaction() as session:
        return [user_info(user) for user in session.scalars(select(User).order_by(User.name))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    responses=ERRORS,
    summary="Create a user and their first API token (shown once)",
)
def create_user(body: UserCreate, context: Context, caller: AdminDep) -> UserCreated:
    now = utcnow()
    secret = new_token("api")
    with context.db.transaction() as session:
        clash = (
            or_(User.name == body.name, User.email == body.email)
            if body.email
            else (User.name == body.name)
        )
        if session.scalar(select(User.id).where(clash)) is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "a user with that name or e-mail already exists"
            )
        user = User(name=body.name, email=body.email, role=body.role, created_at=now)
        session.add(user)
        session.flush()
        session.add(
            ApiToken(
                user_id=user.id, name="first token", token_hash=token_hash(secret), created_at=now
            )
        )
        return UserCreated(user=user_info(user), token=secret)
