"""Admin routes for people's accounts: list, create, disable, set an e-mail or a
password, unlock, delete.

Creating a user also creates a first API token (shown once), so someone can be given
access without a password; with `email` and `password` they can also sign in with
both. A password needs an e-mail to sign in with: it is refused (409) for an account
without one, which gets one first with `PATCH {"email": …}` (`auth.accounts`).
Disabling a user, or setting their password, ends their browser sessions
(`auth.accounts`). An admin cannot disable, demote or delete themself, nor the farm's
last active admin (`accounts.keep_an_admin`, which `farmhand users` obeys too), so a
farm is never left without a way in.

The listing says which accounts are locked out by failed sign-ins (`locked_until`);
setting a password or `POST …/{id}/unlock` lifts that lock (`accounts.unlock`), never
the limit on the address the guesses came from (`auth.ratelimit`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.api.deps import AdminDep, Caller, Context
from farmhand.manager.auth import accounts
from farmhand.manager.auth.accounts import AccountError
from farmhand.manager.auth.tokens import new_token, token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import ApiToken, User
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import PasswordSet, UserCreate, UserCreated, UserInfo, UserUpdate

router = APIRouter(prefix="/api/admin/users", tags=["admin"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
}


def user_info(
    session: Session,
    user: User,
    providers: list[str] | None = None,
    locked_until: datetime | None = None,
) -> UserInfo:
    """What the API says about a user, with their linked OAuth providers (looked up
    unless given, as `list_users` does for everyone at once) and, for admins' answers,
    when their sign-in lock ends (`_admin_info`)."""
    if providers is None:
        providers = accounts.linked_providers(session, [user.id]).get(user.id, [])
    return UserInfo(
        id=user.id,
        name=user.name,
        email=user.email,
        role=user.role,
        created_at=user.created_at,
        disabled=user.disabled_at is not None,
        has_password=user.password_hash is not None,
        providers=providers,
        locked_until=locked_until,
    )


def _admin_info(session: Session, context: ManagerContext, user: User) -> UserInfo:
    """`user_info` with the account's sign-in lock, as the admin's listing shows it."""
    locks = accounts.locked_until(session, context.settings.auth, [user], utcnow())
    return user_info(session, user, locked_until=locks.get(user.id))


def _refusal(error: AccountError) -> HTTPException:
    return HTTPException(error.status, error.message)


def _target(session: Session, user_id: int, caller: Caller, action: str | None = None) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} not found")
    if action is not None and user.id == caller.user_id:
        raise HTTPException(status.HTTP_409_CONFLICT, f"you cannot {action} yourself")
    return user


@router.get("", response_model=list[UserInfo], responses=ERRORS)
def list_users(context: Context, caller: AdminDep) -> list[UserInfo]:
    # Only reads: a snapshot, so the list answers while a long write runs.
    with context.db.read() as session:
        linked = accounts.linked_providers(session)
        users = list(session.scalars(select(User).order_by(User.name)))
        locks = accounts.locked_until(session, context.settings.auth, users, utcnow())
        return [
            user_info(session, user, linked.get(user.id, []), locks.get(user.id)) for user in users
        ]


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
        try:
            user = accounts.create_user(
                session, now, name=body.name, email=body.email, role=body.role,
                password=body.password,
            )  # fmt: skip
        except AccountError as error:
            raise _refusal(error) from error
        session.add(
            ApiToken(
                user_id=user.id, name="first token", token_hash=token_hash(secret), created_at=now
            )
        )
        return UserCreated(user=user_info(session, user), token=secret)


@router.patch(
    "/{user_id}",
    response_model=UserInfo,
    responses=ERRORS,
    summary="Disable or enable a user, change their role or their e-mail",
)
def update_user(user_id: int, body: UserUpdate, context: Context, caller: AdminDep) -> UserInfo:
    with context.db.transaction() as session:
        changes_self = body.disabled is True or (body.role is not None and body.role != "admin")
        user = _target(session, user_id, caller, "disable or demote" if changes_self else None)
        try:
            if body.disabled is not None:
                accounts.set_disabled(session, user, body.disabled, utcnow())
            if body.role is not None:
                accounts.set_role(session, user, body.role)
            if body.email is not None:
                accounts.set_email(session, user, body.email)
        except AccountError as error:
            raise _refusal(error) from error
        return _admin_info(session, context, user)


@router.put(
    "/{user_id}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Set a user's password (ends their browser sessions, lifts their sign-in lock)",
)
def set_password(user_id: int, body: PasswordSet, context: Context, caller: AdminDep) -> Response:
    with context.db.transaction() as session:
        user = _target(session, user_id, caller)
        try:
            accounts.set_password(session, user, body.password)
        except AccountError as error:
            raise _refusal(error) from error
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{user_id}/unlock",
    response_model=UserInfo,
    responses=ERRORS,
    summary="Forget a user's failed sign-ins, so a locked-out user may sign in at once",
)
def unlock_user(user_id: int, context: Context, caller: AdminDep) -> UserInfo:
    with context.db.transaction() as session:
        user = _target(session, user_id, caller)
        accounts.unlock(session, user)
        return _admin_info(session, context, user)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Delete a user who owns no jobs (disable them otherwise)",
)
def delete_user(user_id: int, context: Context, caller: AdminDep) -> Response:
    with context.db.transaction() as session:
        user = _target(session, user_id, caller, "delete")
        try:
            accounts.delete_user(session, user)
        except AccountError as error:
            raise _refusal(error) from error
    return Response(status_code=status.HTTP_204_NO_CONTENT)
