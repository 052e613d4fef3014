"""The web UI's pages, sign-in and static files.

Pages are thin: the server checks who is signed in and renders a shell with what does
not change (the user, the CSRF nonce, which page); the data comes from the JSON API,
fetched by `static/app.js` with the session cookie and refetched on live events. So the
UI never knows more than the API lets the same person see, and there is one place for
each rule.

Signing in takes an e-mail and password (the rules of `farmhand.manager.api.auth`), an
OAuth provider's button, or an API token, and sets the session cookie of
`farmhand.manager.auth.sessions`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path
from typing import Annotated, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from farmhand import __version__
from farmhand.manager.api.auth import check_password, start_session
from farmhand.manager.api.deps import Caller, Context, session_caller
from farmhand.manager.api.errors import refusal
from farmhand.manager.auth import accounts, oauth, sessions
from farmhand.manager.auth.accounts import AccountError
from farmhand.manager.auth.tokens import token_hash
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import ApiToken, Job, User
from farmhand.shared.schemas import (
    MAX_CRF,
    VIDEO_CONTAINERS,
    DeviceKind,
    JobSettings,
    OutputFormat,
    VideoCodec,
    VideoContainer,
    VideoSettings,
)
from farmhand.shared.settings_text import (
    CODEC_LABELS,
    CONTAINER_LABELS,
    DEVICE_LABELS,
    FORMAT_LABELS,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

STATIC_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _oauth_buttons(context: ManagerContext, next_path: str) -> list[dict[str, str]]:
    """A button per configured OAuth provider (`farmhand.manager.auth.oauth`)."""
    query = urlencode({"next": _safe_next(next_path)})
    return [
        {"label": p.label, "href": f"/api/auth/{p.key}/login?{query}", "key": p.key}
        for p in oauth.providers(context.settings.auth).values()
    ]


_safe_next = sessions.safe_redirect


def _page(
    request: Request,
    template: str,
    caller: Caller,
    data: sessions.SessionData,
    status_code: int = 200,
    **extra: object,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": caller,
            "csrf": data.csrf,
            "version": __version__,
            "path": request.url.path,
            **extra,
        },
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def _signed_in(
    request: Request, context: ManagerContext
) -> tuple[Caller, sessions.SessionData] | None:
    return session_caller(context, request.cookies.get(sessions.SESSION_COOKIE))


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={target}", status.HTTP_303_SEE_OTHER)


LOGIN_ERRORS = {
    "oauth-failed": "Signing in with the provider did not complete. Please try again.",
    "provider-down": "The sign-in provider could not be reached. Please try again later.",
    "disabled": "This account is disabled.",
    "session-ended": "Your session ended (signed out, or the account was disabled). "
    "Please sign in again.",
    "domain": "Sign-up is limited to e-mail addresses of the farm's allowed domains.",
}
"""What `/login?error=<code>` says after a refused OAuth sign-in (`api/auth.py`), or when
a page's session ended under it (`app.js` sends it there on a 401)."""


LOGIN_NONCE_COOKIE = "farmhand_login"
LOGIN_NONCE_TTL = 3600
_NONCE_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")
LOGIN_FORM_STALE = (
    "This sign-in form has expired or was sent from another site. Please sign in again."
)


def _login_nonce(request: Request) -> str:
    """The browser's login nonce, or a new one.

    Login CSRF: a page elsewhere could post this site's login form with the attacker's
    own token, and the victim's browser would then work, unawares, in the attacker's
    account. The form carries a nonce that must equal a cookie only this site sets; the
    other page can read neither, and SameSite=Lax keeps the cookie off its POST anyway.
    """
    current = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    return current if _NONCE_SHAPE.fullmatch(current) else secrets.token_urlsafe(32)


@router.get("/login")
def login_page(
    request: Request, context: Context, next: str = "/", error: str | None = None
) -> Response:
    if _signed_in(request, context) is not None:
        return RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
    message = LOGIN_ERRORS.get(error or "")
    return _login_form(request, context, next, message, status_code=status.HTTP_200_OK)


def _login_form(
    request: Request,
    context: ManagerContext,
    next_path: str,
    error: str | None = None,
    method: str = "password",
    status_code: int = status.HTTP_401_UNAUTHORIZED,
    retry_after: int | None = None,
) -> HTMLResponse:
    nonce = _login_nonce(request)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {
            "next": _safe_next(next_path),
            "error": error,
            "oauth": _oauth_buttons(context, next_path),
            "local_auth": context.settings.auth.enable_local_auth,
            "method": method,
            "version": __version__,
            "user": None,
            "path": "/login",
            "login_nonce": nonce,
        },
        status_code=status_code if error else status.HTTP_200_OK,
    )
    sessions.set_cookie(
        response,
        LOGIN_NONCE_COOKIE,
        nonce,
        LOGIN_NONCE_TTL,
        secure=sessions.session_cookie_secure(request, context.settings.auth.secure_cookies),
    )
    response.headers.update(SECURITY_HEADERS)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.post("/login")
async def login(
    request: Request,
    context: Context,
    token: Annotated[str, Form(max_length=512)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
    login_nonce: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Sign in with e-mail + password (same rules and limits as `POST /api/auth/login`)
    or with an API token (the form's other tab), from a form this site served."""
    cookie = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), login_nonce.encode()):
        method = "token" if token.strip() else "password"
        return _login_form(
            request, context, next, LOGIN_FORM_STALE, method, status.HTTP_403_FORBIDDEN
        )

    def find_token_user() -> tuple[int, int, sessions.TokenBinding] | None:
        digest = token_hash(token.strip())
        with context.db.transaction() as session:
            row = session.execute(
                select(User.id, User.session_epoch, ApiToken.id.label("token_id"))
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(
                    ApiToken.token_hash == digest,
                    ApiToken.revoked_at.is_(None),
                    User.disabled_at.is_(None),
                )
            ).first()
            if row is None:
                return None
            return row.id, row.session_epoch, sessions.TokenBinding.of(row.token_id, digest)

    async def sign_in() -> Response:
        binding: sessions.TokenBinding | None = None
        if token.strip():
            found = await run_in_threadpool(find_token_user)
            if found is None:
                return _login_form(
                    request, context, next, "That token is not valid (or was revoked).", "token"
                )
            # The session names the token: revoking the token ends it (sessions.token_alive).
            user_id, epoch, binding = found
        else:
            try:
                _, user_id, epoch = await run_in_threadpool(
                    check_password, context, request, email, password
                )
            except AccountError as error:
                return _login_form(
                    request, context, next, error.message + ".", "password", error.status,
                    error.retry_after,
                )  # fmt: skip
        response = RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
        start_session(request, response, context, user_id, epoch, binding)
        return response

    try:
        return await sign_in()
    except Exception as error:
        # The data dir read-only or full (the session key is written there on the first
        # sign-in), the database away: the form says so to the person at it, with the
        # API's status, rather than a page of JSON. Logged as the API logs it.
        answer = refusal(request, error)
        if answer is None:
            raise
        method = "token" if token.strip() else "password"
        return _login_form(
            request, context, next, answer.detail, method, answer.status_code,
            answer.retry_after,
        )  # fmt: skip


SIGN_OUT_STALE = (
    "The page you signed out from was out of date: it was loaded before you last signed in "
    "(in another tab or window, say), so the farm could not tell the request came from you "
    "and did not sign you out. Press Sign out at the top of this page to sign out now."
)
"""What a Sign out from a stale page answers (a form posted with another session's nonce)."""


@router.post("/logout")
def logout(
    request: Request, context: Context, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    found = _signed_in(request, context)
    if found is not None and not sessions.csrf_ok(found[1], "POST", csrf):
        # A page loaded before the session began (signed in again in another tab, a new
        # password): its nonce is another session's. A page, not JSON, says so, and its
        # own Sign out button carries this session's nonce.
        return _page(
            request, "error.html", found[0], found[1], status.HTTP_403_FORBIDDEN,
            title="You are still signed in", message=SIGN_OUT_STALE,
        )  # fmt: skip
    if found is not None:
        with context.db.transaction() as session:
            user = session.get(User, found[0].user_id)
            if user is not None:
                accounts.end_sessions(user)
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


def _bounds(model: type[BaseModel], name: str) -> dict[str, float]:
    """The inclusive limits (`ge`, `le`) of a field, as `min` and `max` of its input."""
    found: dict[str, float] = {}
    for rule in model.model_fields[name].metadata:
        for limit, key in (("ge", "min"), ("le", "max")):
            value = getattr(rule, limit, None)
            if value is not None:
                found[key] = value
    return found


def _submit_choices() -> dict[str, object]:
    """What the submit form offers, taken from the schemas so that each list has one
    home: the output formats, the device kinds, the video codecs, which containers hold
    each codec (in `VideoContainer`'s order) and their quality (crf) limits, and the
    numbers' bounds."""
    default = VideoSettings()
    codecs = [codec for codec in get_args(VideoCodec) if codec in VIDEO_CONTAINERS]
    return {
        "devices": [(kind, DEVICE_LABELS.get(kind, kind)) for kind in get_args(DeviceKind)],
        "output_formats": [(fmt, FORMAT_LABELS.get(fmt, fmt)) for fmt in get_args(OutputFormat)],
        "video_codecs": [(codec, CODEC_LABELS.get(codec, codec)) for codec in codecs],
        "video_default": {"codec": default.codec, "container": default.container},
        "video_containers": {
            codec: [
                (container, CONTAINER_LABELS.get(container, container))
                for container in get_args(VideoContainer)
                if container in VIDEO_CONTAINERS[codec]
            ]
            for codec in codecs
        },
        "max_crf": {codec: MAX_CRF[codec] for codec in codecs},
        "crf_bounds": _bounds(VideoSettings, "crf"),
        "fps_bounds": _bounds(VideoSettings, "fps"),
        "max_workers_bounds": _bounds(JobSettings, "max_workers"),
    }


def _simple_page(
    name: str, template: str, admin_only: bool = False, extra: dict[str, object] | None = None
) -> None:
    """A page that needs only who is signed in, and the template's `extra` context."""

    def page(request: Request, context: Context) -> Response:
        found = _signed_in(request, context)
        if found is None:
            return _to_login(request)
        caller, data = found
        if admin_only and not caller.is_admin:
            return _page(
                request, "error.html", caller, data, 403, title="Admins only",
                message="This page is for the farm's admins.",
            )  # fmt: skip
        return _page(
            request,
            template,
            caller,
            data,
            200,
            page=name,
            has_tags="required_tags" in JobSettings.model_fields,
            **(extra or {}),
        )

    router.add_api_route(
        {
            "jobs": "/",
            "submit": "/submit",
            "runners": "/runners",
            "storage": "/storage",
            "account": "/account",
        }[name],
        page,
        methods=["GET"],
        response_class=HTMLResponse,
        name=f"page_{name}",
    )


_simple_page("jobs", "jobs.html")
_simple_page("submit", "submit.html", extra=_submit_choices())
_simple_page("runners", "runners.html", admin_only=True)
_simple_page("storage", "storage.html", admin_only=True)
_simple_page("account", "account.html")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: int, request: Request, context: Context) -> Response:
    found = _signed_in(request, context)
    if found is None:
        return _to_login(request)
    caller, data = found
    with context.db.read() as session:  # only reads: no long write holds the page up
        job = session.get(Job, job_id)
        visible = caller.sees(job)  # one being deleted is gone for everyone
    if not visible:
        # Someone else's job looks exactly like a missing one, as in the API.
        return _page(
            request, "error.html", caller, data, 404, title="Job not found",
            message=f"There is no job {job_id} that you can see.",
        )  # fmt: skip
    return _page(request, "job.html", caller, data, page="job", job_id=job_id)


@router.get("/static/{name:path}")
def static_file(name: str) -> FileResponse:
    """The UI's own CSS and JavaScript, from the installed package."""
    path = (STATIC / name).resolve()
    if not path.is_file() or STATIC.resolve() not in path.parents:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(
        path,
        media_type=STATIC_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
