"""Request dependencies: the manager context and who is calling.

People authenticate with an API token, runners with the secret they got at
registration; both arrive as `Authorization: Bearer …`. The two kinds never overlap:
a runner secret is not an API token and cannot reach people's routes, and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from farmhand.manager.auth.tokens import token_hash
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import ApiToken, User, Worker

bearer = HTTPBearer(auto_error=False)


def get_context(request: Request) -> ManagerContext:
    context: ManagerContext = request.app.state.farm
    return context


Context = Annotated[ManagerContext, Depends(get_context)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Caller:
    user_id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def current_user(context: Context, credentials: Credentials) -> Caller:
    if credentials is None:
        raise _unauthorized("an API token is required (Authorization: Bearer <token>)")
    digest = token_hash(credentials.credentials)
    with context.db.transaction() as session:
        row = session.execute(
            select(User.id, User.name, User.role)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
        ).first()
    if row is None:
        raise _unauthorized("invalid or revoked API token")
    return Caller(row.id, row.name, row.role)


def current_admin(caller: Annotated[Caller, Depends(current_user)]) -> Caller:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin")
    return caller


def current_runner(context: Context, credentials: Credentials) -> int:
    """The calling worker's id."""
    if credentials is None:
        raise _unauthorized("a runner secret is required (Authorization: Bearer <secret>)")
    digest = token_hash(credentials.credentials)
    with context.db.transaction() as session:
        worker_id = session.scalar(select(Worker.id).where(Worker.secret_hash == digest))
    if worker_id is None:
        raise _unauthorized("unknown runner secret; register again")
    return worker_id


UserDep = Annotated[Caller, Depends(current_user)]
AdminDep = Annotated[Caller, Depends(current_admin)]
RunnerDep = Annotated[int, Depends(current_runner)]
