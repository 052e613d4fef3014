"""The signed session cookie: genuine cookies verify, anything else does not."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from farmhand.manager.auth import sessions

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_cookie_verifies_until_it_expires(tmp_path: Path) -> None:
    key = sessions.session_key(tmp_path)
    cookie, data = sessions.issue(key, 7, NOW, timedelta(hours=1))
    got = sessions.verify(key, cookie, NOW + timedelta(minutes=59))
    assert got is not None
    assert (got.user_id, got.csrf) == (7, data.csrf)
    assert sessions.verify(key, cookie, NOW + timedelta(hours=1, seconds=1)) is None


def test_forged_and_malformed_cookies_are_refused(tmp_path: Path) -> None:
    key = sessions.session_key(tmp_path)
    cookie, _ = sessions.issue(key, 7, NOW)
    version, payload, signature = cookie.split(".")
    other_cookie, _ = sessions.issue(key, 1, NOW)
    other_payload = other_cookie.split(".")[1]
    for bad in [
        f"{version}.{other_payload}.{signature}",  # someone else's payload, my signature
        f"v2.{payload}.{signature}",
        cookie + "x",
        "",
        "v1..",
        "v1.ü.ü",
        "garbage",
    ]:
        assert sessions.verify(key, bad, NOW) is None, bad
    assert sessions.verify(b"k" * 32, cookie, NOW) is None, "another manager's key"


def test_the_key_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = sessions.session_key(data_dir)
    path = data_dir / sessions.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sessions._keys.clear()  # a restarted manager reads the same key back
    assert sessions.session_key(data_dir) == key


def test_csrf_is_needed_only_for_state_changes(tmp_path: Path) -> None:
    _, data = sessions.issue(sessions.session_key(tmp_path), 1, NOW)
    assert sessions.csrf_ok(data, "GET", None)
    assert sessions.csrf_ok(data, "head", None)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not sessions.csrf_ok(data, method, None)
        assert not sessions.csrf_ok(data, method, "wrong")
        assert sessions.csrf_ok(data, method, data.csrf)


def test_a_token_made_session_names_its_token(tmp_path: Path) -> None:
    """The token a session was made with travels in the signed cookie (id and the start
    of its hash, never the secret); other sessions name none, as cookies from before."""
    key = sessions.session_key(tmp_path)
    binding = sessions.TokenBinding.of(12, "ab" * 32)
    cookie, _ = sessions.issue(key, 7, NOW, token=binding)
    got = sessions.verify(key, cookie, NOW)
    assert got is not None and got.token == sessions.TokenBinding(12, "ab" * 8)
    plain, _ = sessions.issue(key, 7, NOW)
    verified = sessions.verify(key, plain, NOW)
    assert verified is not None and verified.token is None
