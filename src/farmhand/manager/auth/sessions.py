"""Browser sessions: a signed cookie, checked against the user's session epoch.

A person signs in (password, OAuth, or an API token on the web UI); the browser then
carries a cookie instead of any secret, so nothing sits in JavaScript-readable storage.

The cookie is `v1.<payload>.<signature>`: the payload (user id, session epoch, expiry,
CSRF nonce) as base64url JSON, signed with HMAC-SHA256 under a secret kept in
`<data-dir>/session-key` (mode 0600, generated on first use). Nothing is stored per
session; instead each user has a `session_epoch` in the database, copied into the
cookie, and a cookie is honoured only while the two agree. Signing out, a new password
and disabling the account bump the epoch, which ends every session of that user at
once (on every manager sharing the database); the user row is read on each request
anyway, so this costs nothing extra. Rotating the key file signs everyone out.

A session made by signing in with an API token (the web login form's token tab) also
names that token: its id and the first characters of its hash (`TokenBinding`). It is
honoured only while that token is unrevoked, so revoking a leaked token also ends the
browser sessions made with it, and only those: the user's other sessions go on. The
hash is checked as well as the id because SQLite may give a revoked-then-deleted
token's id to a new token (`api_tokens` is not AUTOINCREMENT).

The nonce is the CSRF defence: a cookie is sent by the browser on its own, the nonce
only by our own JavaScript (it reads it from the page), so every state-changing request
made with the cookie must repeat it in `X-CSRF-Token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from farmhand.manager.db.models import ApiToken

SESSION_COOKIE = "farmhand_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)
KEY_FILE = "session-key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


TOKEN_CHECK_CHARS = 16
"""Hex characters of the token's hash a token-made session keeps (64 bits): enough that
a new token given a reused id never matches, and not the whole stored hash."""


@dataclass(frozen=True)
class TokenBinding:
    """The API token a session was made with: its id and the start of its hash."""

    token_id: int
    check: str

    @classmethod
    def of(cls, token_id: int, token_hash: str) -> TokenBinding:
        return cls(token_id, token_hash[:TOKEN_CHECK_CHARS])


@dataclass(frozen=True)
class SessionData:
    user_id: int
    expires_at: datetime
    csrf: str
    epoch: int = 0
    token: TokenBinding | None = None
    """Set when the session was made by signing in with an API token: it lasts only
    while that token is unrevoked (`token_alive`)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_key(data_dir: Path) -> bytes:
    """The signing key of this data dir, created (0600) on first use and cached.

    Created with O_EXCL so two processes starting at once agree on one key: the loser
    of the race reads the winner's file.
    """
    path = (data_dir / KEY_FILE).resolve()
    with _keys_lock:
        cached = _keys.get(path)
        if cached is not None:
            return cached
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        else:
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(key.hex() + "\n")
        if len(key) < 32:
            raise ValueError(f"{path} holds a key shorter than 32 bytes; delete it to regenerate")
        _keys[path] = key
        return key


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def issue(
    key: bytes,
    user_id: int,
    now: datetime,
    ttl: timedelta = SESSION_TTL,
    *,
    epoch: int = 0,
    token: TokenBinding | None = None,
) -> tuple[str, SessionData]:
    """A new cookie value for `user_id` (at their current session `epoch`; made with the
    API `token`, if one) and what it holds."""
    data = SessionData(user_id, now + ttl, secrets.token_urlsafe(24), epoch, token)
    body: dict[str, object] = {
        "u": data.user_id,
        "e": int(data.expires_at.timestamp()),
        "n": data.csrf,
        "p": epoch,
    }
    if token is not None:
        body["t"], body["h"] = token.token_id, token.check
    payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return f"v1.{payload}.{_sign(key, 'v1.' + payload)}", data


def verify(key: bytes, cookie: str, now: datetime) -> SessionData | None:
    """What a cookie holds, or None if it is forged, malformed or expired."""
    parts = cookie.split(".")
    if len(parts) != 3 or parts[0] != "v1":
        return None
    try:
        expected = _sign(key, f"v1.{parts[1]}")
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(expected, parts[2]):
        return None
    try:
        body = json.loads(_unb64(parts[1]))
        user_id, expires, nonce = int(body["u"]), int(body["e"]), str(body["n"])
        epoch = int(body.get("p", 0))
        token = TokenBinding(int(body["t"]), str(body["h"])) if "t" in body else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    expires_at = datetime.fromtimestamp(expires, tz=now.tzinfo)
    if expires_at <= now:
        return None
    return SessionData(user_id, expires_at, nonce, epoch, token)


def token_alive(session: Session, data: SessionData) -> bool:
    """False when the session was made with an API token that is revoked, gone, or not
    the one it names (another token given the same id); True for any other session."""
    if data.token is None:
        return True
    row = session.get(ApiToken, data.token.token_id)
    return (
        row is not None
        and row.user_id == data.user_id
        and row.revoked_at is None
        and hmac.compare_digest(row.token_hash[:TOKEN_CHECK_CHARS], data.token.check)
    )


def csrf_ok(session: SessionData, method: str, header: str | None) -> bool:
    """True when a request made with this session may go ahead as far as CSRF goes."""
    if method.upper() in SAFE_METHODS:
        return True
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())


def seal(key: bytes, purpose: str, body: dict[str, object], now: datetime, ttl: timedelta) -> str:
    """A signed, expiring value for a short-lived cookie other than the session (OAuth state).

    `purpose` is part of what is signed, so a value made for one use is refused for another.
    """
    payload = dict(body, _exp=int((now + ttl).timestamp()))
    text = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return f"{text}.{_sign(key, purpose + '.' + text)}"


def unseal(key: bytes, purpose: str, value: str, now: datetime) -> dict[str, object] | None:
    """What `seal` put in `value`, or None if it is forged, for another purpose or expired."""
    text, _, signature = value.partition(".")
    try:
        expected = _sign(key, f"{purpose}.{text}")
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        body = json.loads(_unb64(text))
        expires = int(body.pop("_exp"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(body, dict) or expires <= now.timestamp():
        return None
    return body


def set_cookie(response: Response, name: str, value: str, max_age: int, *, secure: bool) -> None:
    """Set one of our cookies the one way: HttpOnly, SameSite=Lax, whole site.

    Lax rather than Strict because an OAuth provider sends the browser back with a
    cross-site navigation, on which a Strict cookie would be missing; Lax still keeps
    the cookie off cross-site POSTs, and the CSRF nonce covers the rest.
    """
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
    )


def session_cookie_secure(request: Request, force: bool) -> bool:
    """`Secure` when the request came over https, or when the settings say always."""
    return force or request.url.scheme == "https"


def safe_redirect(target: str | None) -> str:
    """Only a path on this site: an open redirect would make sign-in a phishing aid."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
