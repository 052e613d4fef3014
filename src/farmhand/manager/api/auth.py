"""Signing in and out: e-mail + password, OAuth providers, the session cookie.

`POST /api/auth/login` checks a password (`auth.accounts`, rate limited) and sets the
session cookie; `GET /api/auth/<provider>/login` and `/callback` do the same through
an OAuth provider (`auth.oauth`). The cookie is HttpOnly and SameSite=Lax, `Secure` on
https; requests made with it that change anything need the CSRF nonce that login and
`/api/auth/me` return. Signing out bumps the user's session epoch, so the cookie is
dead everywhere, not only forgotten by this browser.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, UserDep, session_caller
from farmhand.manager.api.errors import error_responses
from farmhand.manager.api.users import user_info
from farmhand.manager.auth import accounts, oauth, sessions
from farmhand.manager.auth.accounts import AccountError
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import User
from farmhand.shared.web_schemas import AuthProvider, LoginRequest, PasswordChange, SessionInfo

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])
ProviderKey = Literal["google", "discord", "oidc"]


def refusal(error: AccountError) -> HTTPException:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return HTTPException(error.status, error.message, headers=headers)


def start_session(
    request: Request,
    response: Response,
    context: ManagerContext,
    user_id: int,
    epoch: int,
    token: sessions.TokenBinding | None = None,
) -> str:
    """Put a new session cookie for the user on `response` (made with the API `token`,
    if one: it then ends when that token is revoked); its CSRF nonce."""
    key = sessions.session_key(context.settings.data_dir)
    cookie, data = sessions.issue(key, user_id, utcnow(), epoch=epoch, token=token)
    sessions.set_cookie(
        response,
        sessions.SESSION_COOKIE,
        cookie,
        int(sessions.SESSION_TTL.total_seconds()),
        secure=sessions.session_cookie_secure(request, context.settings.auth.secure_cookies),
    )
    return data.csrf


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def check_password(
    context: ManagerContext, request: Request, email: str, password: str
) -> tuple[SessionInfo, int, int]:
    """Who an e-mail + password signs in as (info, user id, session epoch), or raise the
    refusal (`AccountError`) once the failure it counts is committed. Blocking: run it
    in a thread.

    Three steps (`accounts.begin_password_login`): a short transaction lets the attempt
    through the limits and counts it as a failure, the password is checked with no
    transaction open (on SQLite one would hold every write of the farm for the hash's
    duration), and a second short transaction takes the failure back if it was right."""
    address = client_address(request)
    settings = context.settings.auth
    try:
        with context.db.transaction() as session:
            attempt = accounts.begin_password_login(session, settings, email, address, utcnow())
        proof = accounts.check_login_password(attempt, password)
        with context.db.transaction() as session:
            outcome = accounts.finish_password_login(session, attempt, proof)
            if outcome.error is None:
                user = session.get(User, outcome.user_id)
                assert user is not None
                log.info("signed in with a password", user_id=user.id)
                return (
                    SessionInfo(user=user_info(session, user), csrf=None),
                    user.id,
                    user.session_epoch,
                )
        raise outcome.error
    except AccountError as error:
        log.info("sign-in refused", status=error.status, address=address)
        raise


@router.post(
    "/login",
    response_model=SessionInfo,
    responses=error_responses(400, 401, 403, 404, 429),
    summary="Sign in with e-mail and password (sets the session cookie)",
)
async def login(
    body: LoginRequest, request: Request, response: Response, context: Context
) -> SessionInfo:
    try:
        info, user_id, epoch = await run_in_threadpool(
            check_password, context, request, body.email, body.password
        )
    except AccountError as error:
        raise refusal(error) from error
    csrf = start_session(request, response, context, user_id, epoch)
    return info.model_copy(update={"csrf": csrf})


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403),
    summary="Sign out: ends all of the caller's browser sessions",
)
def logout(context: Context, caller: UserDep) -> Response:
    with context.db.transaction() as session:
        user = session.get(User, caller.user_id)
        if user is not None:
            accounts.end_sessions(user)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    log.info("signed out", user_id=caller.user_id)
    return response


@router.get("/me", response_model=SessionInfo, responses=error_responses(401))
def me(request: Request, context: Context, caller: UserDep) -> SessionInfo:
    """Who is calling; with the session cookie, also the session's CSRF nonce."""
    csrf = None
    if "authorization" not in request.headers:
        found = session_caller(context, request.cookies.get(sessions.SESSION_COOKIE))
        csrf = found[1].csrf if found else None
    with context.db.transaction() as session:
        user = session.get(User, caller.user_id)
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "no such user")
        return SessionInfo(user=user_info(session, user), csrf=csrf)


@router.post(
    "/password",
    response_model=SessionInfo,
    responses=error_responses(400, 401, 403, 429),
    summary="Change your own password (the old one is required if you have one)",
)
def change_password(
    body: PasswordChange, request: Request, response: Response, context: Context, caller: UserDep
) -> SessionInfo:
    """A new password ends every other session; this browser gets a fresh cookie."""
    with context.db.transaction() as session:
        user = session.get(User, caller.user_id)
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "no such user")
        failure = accounts.change_own_password(
            session, context.settings.auth, user, body.old_password, body.new_password,
            client_address(request), utcnow(),
        )  # fmt: skip
        info, epoch = user_info(session, user), user.session_epoch
    if failure is not None:
        raise refusal(failure)
    csrf = None
    if "authorization" not in request.headers:
        # The new cookie replaces this browser's (which signed this request in; its
        # epoch is past now): one made with an API token stays tied to that token, so
        # revoking it still ends this session.
        cookie = request.cookies.get(sessions.SESSION_COOKIE, "")
        key = sessions.session_key(context.settings.data_dir)
        current = sessions.verify(key, cookie, utcnow())
        token = current.token if current is not None else None
        csrf = start_session(request, response, context, caller.user_id, epoch, token)
    log.info("password changed", user_id=caller.user_id)
    return SessionInfo(user=info, csrf=csrf)


@router.get("/providers", response_model=list[AuthProvider])
def list_providers(context: Context) -> list[AuthProvider]:
    """The OAuth providers this farm offers (public: the login page shows them)."""
    return [
        AuthProvider(key=p.key, label=p.label, login_url=f"/api/auth/{p.key}/login")
        for p in oauth.providers(context.settings.auth).values()
    ]


def _provider(context: ManagerContext, key: str) -> oauth.Provider:
    provider = oauth.providers(context.settings.auth).get(key)
    if provider is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sign-in with {key} is not configured")
    return provider


@router.get(
    "/{provider}/login",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={302: {"description": "To the provider's sign-in page"}, **error_responses(404, 502)},
    summary="Start signing in with an OAuth provider (a browser navigation)",
)
async def oauth_login(
    provider: ProviderKey,
    request: Request,
    context: Context,
    next: Annotated[str, Query(max_length=2048)] = "/",
) -> Response:
    chosen = _provider(context, provider)
    redirect_uri = chosen.redirect_url or str(request.url_for("oauth_callback", provider=provider))
    try:
        url, remembered = await run_in_threadpool(
            oauth.begin, chosen, redirect_uri, sessions.safe_redirect(next)
        )
    except AccountError as error:
        raise refusal(error) from error
    sealed = sessions.seal(
        sessions.session_key(context.settings.data_dir),
        oauth.STATE_PURPOSE,
        remembered,
        utcnow(),
        timedelta(seconds=oauth.STATE_TTL_SECONDS),
    )
    response = RedirectResponse(url, status.HTTP_302_FOUND)
    sessions.set_cookie(
        response,
        oauth.STATE_COOKIE,
        sealed,
        oauth.STATE_TTL_SECONDS,
        secure=sessions.session_cookie_secure(request, context.settings.auth.secure_cookies),
    )
    return response


@router.get(
    "/{provider}/callback",
    status_code=status.HTTP_303_SEE_OTHER,
    response_class=RedirectResponse,
    responses={
        303: {"description": "Signed in: to the page asked for"},
        **error_responses(400, 403, 404, 502),
    },
    summary="Where the OAuth provider sends the browser back",
)
async def oauth_callback(provider: ProviderKey, request: Request, context: Context) -> Response:
    chosen = _provider(context, provider)
    sealed = request.cookies.get(oauth.STATE_COOKIE, "")
    remembered = sessions.unseal(
        sessions.session_key(context.settings.data_dir), oauth.STATE_PURPOSE, sealed, utcnow()
    )
    if remembered is None:
        return _callback_refused(
            request,
            AccountError(400, "no sign-in in progress (or it expired); start again"),
        )
    params = {k: v[:4096] for k, v in request.query_params.items()}

    def complete() -> tuple[int, int]:
        identity = oauth.finish(chosen, remembered, params)
        with context.db.transaction() as session:
            user = accounts.oauth_user(
                session,
                context.settings.auth,
                utcnow(),
                provider=chosen.key,
                subject=identity.subject,
                email=identity.email,
                email_verified=identity.email_verified,
                nickname=identity.nickname,
            )
            return user.id, user.session_epoch

    try:
        user_id, epoch = await run_in_threadpool(complete)
    except AccountError as error:
        log.info("oauth sign-in refused", provider=provider, status=error.status)
        return _callback_refused(request, error)
    response = RedirectResponse(
        sessions.safe_redirect(str(remembered.get("next", "/"))), status.HTTP_303_SEE_OTHER
    )
    response.delete_cookie(oauth.STATE_COOKIE, path="/")
    start_session(request, response, context, user_id, epoch)
    log.info("signed in with oauth", provider=provider, user_id=user_id)
    return response


def _callback_refused(request: Request, error: AccountError) -> Response:
    """A browser goes back to the login page, which says what went wrong in its own
    words (only a fixed code travels in the URL, so no one can make the page say
    anything else); other clients get the error as JSON."""
    if "text/html" in request.headers.get("accept", ""):
        code = error.code or "oauth-failed"
        return RedirectResponse(f"/login?error={code}", status.HTTP_303_SEE_OTHER)
    raise refusal(error)
