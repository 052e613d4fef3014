"""Request dependencies: the manager context and who is calling.

People authenticate with an API token, runners with the secret they got at
registration; both arrive as `Authorization: Bearer …`. The two kinds never overlap:
a runner secret is not an API token and cannot reach people's routes, and vice versa.

A browser signed in on the web UI sends the session cookie instead of a token
(`farmhand.manager.auth.sessions`); then every state-changing request must also carry
the session's CSRF nonce in `X-CSRF-Token`, or it is refused with 403. A bearer token,
when present, always wins over the cookie. A disabled user's tokens and cookies are
refused like unknown ones; a cookie from before the user's last sign-out, password
change or disabling is too (`User.session_epoch`), and so is one made by signing in with
an API token that has since been revoked (`sessions.token_alive`).

A runner secret the manager does not know answers `401 unknown runner secret; register
again`: the worker registers anew (its record may have been lost with a database
restored from a backup). The secret of a runner an admin deleted answers `401` with
`X-Farmhand-Runner: deleted` instead (`runner_deleted`), and the worker stops for good:
deleting a runner is how an admin locks it out, which a fresh registration with the
shared registration token would undo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farmhand.client.errors import RUNNER_STATE_HEADER
from farmhand.manager.auth import sessions
from farmhand.manager.auth.tokens import token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import ApiToken, DeletedRunner, Job, User, Worker
from farmhand.manager.scheduling.state import being_deleted

bearer = HTTPBearer(auto_error=False)


async def get_context(request: Request) -> ManagerContext:
    # Async: a plain function would be run in the thread pool, a hand-off per request.
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

    def sees(self, job: Job | None) -> bool:
        """Whether the job exists for this caller: theirs (any, for an admin) and not
        being deleted. Someone else's looks exactly like a missing one, so ids don't leak."""
        return (
            job is not None
            and not being_deleted(job)
            and (job.owner_id == self.user_id or self.is_admin)
        )


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def session_caller(
    context: ManagerContext, cookie: str | None
) -> tuple[Caller, sessions.SessionData] | None:
    """The person a session cookie belongs to, if it is genuine, unexpired and they exist."""
    if not cookie:
        return None
    data = sessions.verify(sessions.session_key(context.settings.data_dir), cookie, utcnow())
    if data is None:
        return None
    with context.db.read() as session:
        user = session.get(User, data.user_id)
        if user is None or user.disabled_at is not None or user.session_epoch != data.epoch:
            return None
        if not sessions.token_alive(session, data):
            return None  # made by signing in with an API token since revoked
        return Caller(user.id, user.name, user.role), data


def _csrf_refusal(header: str | None) -> str:
    """Why a cookie's write was refused, in terms of what its sender can do. A header
    that is there but wrong is a page older than its session (signed out and in again
    in another tab): its user needs to reload, not to learn about headers."""
    if header is None:
        return f"a request made with the session cookie needs the {sessions.CSRF_HEADER} header"
    return (
        "this page is older than your session (you signed in again since it was loaded): "
        "reload the page and try again"
    )


def current_user(request: Request, context: Context, credentials: Credentials) -> Caller:
    if credentials is None:
        cookie = request.cookies.get(sessions.SESSION_COOKIE)
        if cookie is None:
            raise _unauthorized("an API token is required (Authorization: Bearer <token>)")
        found = session_caller(context, cookie)
        if found is None:
            raise _unauthorized("your session has expired or is invalid; sign in again")
        caller, data = found
        header = request.headers.get(sessions.CSRF_HEADER)
        if not sessions.csrf_ok(data, request.method, header):
            raise HTTPException(status.HTTP_403_FORBIDDEN, _csrf_refusal(header))
        return caller
    digest = token_hash(credentials.credentials)
    with context.db.read() as session:
        row = session.execute(
            select(User.id, User.name, User.role)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(
                ApiToken.token_hash == digest,
                ApiToken.revoked_at.is_(None),
                User.disabled_at.is_(None),
            )
        ).first()
    if row is None:
        raise _unauthorized("invalid or revoked API token")
    return Caller(row.id, row.name, row.role)


def current_admin(caller: Annotated[Caller, Depends(current_user)]) -> Caller:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin")
    return caller


def unknown_runner() -> HTTPException:
    """A secret no worker holds and no deletion recorded: registering again is the cure
    (a database restored from a backup, a runner taken over by a namesake)."""
    return _unauthorized("unknown runner secret; register again")


def runner_deleted(tombstone: DeletedRunner) -> HTTPException:
    """The secret of a runner an admin deleted: said apart from an unknown one, so that
    its worker stops instead of registering itself back onto the farm."""
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"this runner ({tombstone.name}) was deleted by admin {tombstone.deleted_by} on "
        f"{tombstone.deleted_at:%Y-%m-%d %H:%M} UTC; it may not register again by itself",
        headers={"WWW-Authenticate": "Bearer", RUNNER_STATE_HEADER: "deleted"},
    )


def gone_runner(session: Session, context: ManagerContext, worker_id: int) -> HTTPException:
    """For a route that found no row for the worker a secret was taken to name: the
    deletion went through a sibling process or another manager while this one still
    remembered the secret (`context.runner_ids`). The worker is told what `current_runner`
    would tell it, and this process stops remembering the secret, so that its next
    request, whichever route, hears the same."""
    context.runner_ids.forget_worker(worker_id)
    tombstone = session.scalar(select(DeletedRunner).where(DeletedRunner.worker_id == worker_id))
    return unknown_runner() if tombstone is None else runner_deleted(tombstone)


async def current_runner(context: Context, credentials: Credentials) -> int:
    """The calling worker's id.

    Async so that the common case, a secret this manager saw seconds ago
    (`context.runner_ids`), costs no database transaction and no thread hand-off. Only a
    secret no worker holds is looked for among the deleted runners' (`runner_deleted`).
    """
    if credentials is None:
        raise _unauthorized("a runner secret is required (Authorization: Bearer <secret>)")
    digest = token_hash(credentials.credentials)
    worker_id = context.runner_ids.get(digest)
    if worker_id is not None:
        return worker_id

    def lookup() -> int | HTTPException:
        with context.db.read() as session:
            found: int | None = session.scalar(
                select(Worker.id).where(Worker.secret_hash == digest)
            )
            if found is not None:
                return found
            tombstone = session.get(DeletedRunner, digest)
            return unknown_runner() if tombstone is None else runner_deleted(tombstone)

    known = await run_in_threadpool(lookup)
    if isinstance(known, HTTPException):
        raise known
    context.runner_ids.put(digest, known)
    return known


UserDep = Annotated[Caller, Depends(current_user)]
AdminDep = Annotated[Caller, Depends(current_admin)]
RunnerDep = Annotated[int, Depends(current_runner)]
