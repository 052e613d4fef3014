"""Local accounts on a real manager app: passwords, sessions, admins' user management.

Everything goes through the HTTP API (or the `farmhand users` CLI) against a real
SQLite database; the assertions are what a person would notice: can they sign in,
does a disabled account stop working, does sign-out really end the session, and do
passwords ever come back out of the manager.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farmhand.cli.app import app as cli
from farmhand.manager.app import create_app
from farmhand.manager.auth import sessions
from farmhand.manager.clock import utcnow
from farmhand.manager.db.models import Job
from farmhand.manager.settings import AuthSettings
from tests.integration.conftest import Farm, login_nonce, make_settings

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user(farm: Farm, name: str, password: str = PASSWORD, role: str = "user") -> dict[str, Any]:
    answer = farm.client.post(
        "/api/admin/users",
        json={"name": name, "email": f"{name}@example.com", "role": role, "password": password},
        headers=farm.admin,
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def login(client: TestClient, email: str, password: str = PASSWORD) -> TestClient:
    answer = client.post("/api/auth/login", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return client


def second_browser(farm: Farm) -> TestClient:
    """Another client of the same app, starting with no cookies."""
    return TestClient(farm.client.app)


def test_sign_in_with_a_password_sets_a_session_cookie(farm: Farm) -> None:
    new_user(farm, "ana")
    answer = farm.client.post(
        "/api/auth/login", json={"email": "ANA@example.com ", "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user"]["name"] == "ana" and body["user"]["has_password"] is True
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(sessions.SESSION_COOKIE + "=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower(), "plain http here; Secure would drop the cookie"

    me = farm.client.get("/api/auth/me").json()
    assert me["user"]["email"] == "ana@example.com"
    assert me["csrf"] == body["csrf"]

    wrong = farm.client.post("/api/auth/login", json={"email": "x@example.com", "password": "nope"})
    assert wrong.status_code == 401


def test_the_cookie_is_secure_over_https_or_when_forced(farm: Farm, tmp_path: Path) -> None:
    new_user(farm, "ana")
    https = TestClient(farm.client.app, base_url="https://testserver")
    answer = https.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
    assert "secure" in answer.headers["set-cookie"].lower()

    settings = make_settings(tmp_path / "forced", auth=AuthSettings(secure_cookies=True))
    with TestClient(create_app(settings)) as client:
        client.post("/api/admin/users", headers=bearer(settings.admin_token or ""), json={
            "name": "bo", "email": "bo@example.com", "password": PASSWORD})  # fmt: skip
        answer = client.post(
            "/api/auth/login", json={"email": "bo@example.com", "password": PASSWORD}
        )
        assert answer.status_code == 200
        assert "secure" in answer.headers["set-cookie"].lower()


def test_a_cookie_post_without_the_csrf_token_is_refused(farm: Farm) -> None:
    new_user(farm, "ana")
    login(farm.client, "ana@example.com")
    csrf = farm.client.get("/api/auth/me").json()["csrf"]
    refused = farm.client.post("/api/tokens", json={"name": "script"})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    wrong = farm.client.post("/api/tokens", json={"name": "script"}, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    assert farm.client.post("/api/auth/logout").status_code == 403
    ok = farm.client.post("/api/tokens", json={"name": "script"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201


def test_logout_ends_the_session_everywhere(farm: Farm) -> None:
    new_user(farm, "ana")
    login(farm.client, "ana@example.com")
    stolen = farm.client.cookies[sessions.SESSION_COOKIE]
    csrf = farm.client.get("/api/auth/me").json()["csrf"]

    answer = farm.client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 204
    assert farm.client.get("/api/auth/me").status_code == 401

    other = second_browser(farm)
    other.cookies.set(sessions.SESSION_COOKIE, stolen)
    assert other.get("/api/auth/me").status_code == 401, "a copy of the cookie is dead too"


def test_users_change_their_own_password(farm: Farm) -> None:
    new_user(farm, "ana")
    login(farm.client, "ana@example.com")
    elsewhere = login(second_browser(farm), "ana@example.com")
    csrf = {"X-CSRF-Token": farm.client.get("/api/auth/me").json()["csrf"]}

    wrong = farm.client.post(
        "/api/auth/password",
        json={"old_password": "not it", "new_password": "a brand new one"},
        headers=csrf,
    )
    assert wrong.status_code == 403
    short = farm.client.post(
        "/api/auth/password", json={"old_password": PASSWORD, "new_password": "short"}, headers=csrf
    )
    assert short.status_code == 400 and "at least 8" in short.json()["detail"]

    changed = farm.client.post(
        "/api/auth/password",
        json={"old_password": PASSWORD, "new_password": "a brand new one"},
        headers=csrf,
    )
    assert changed.status_code == 200, changed.text
    assert farm.client.get("/api/auth/me").status_code == 200, "this browser stays signed in"
    assert changed.json()["csrf"] == farm.client.get("/api/auth/me").json()["csrf"]
    assert elsewhere.get("/api/auth/me").status_code == 401, "other sessions end"

    fresh = second_browser(farm)
    old = fresh.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
    assert old.status_code == 401
    login(fresh, "ana@example.com", "a brand new one")


def test_a_disabled_user_loses_password_token_and_session(farm: Farm) -> None:
    created = new_user(farm, "ana")
    user_id, token = created["user"]["id"], created["token"]
    login(farm.client, "ana@example.com")
    assert farm.client.get("/api/jobs", headers=bearer(token)).status_code == 200

    answer = farm.client.patch(
        f"/api/admin/users/{user_id}", json={"disabled": True}, headers=farm.admin
    )
    assert answer.status_code == 200 and answer.json()["disabled"] is True
    assert farm.client.get("/api/auth/me").status_code == 401, "the session cookie"
    assert farm.client.get("/api/jobs", headers=bearer(token)).status_code == 401, "the token"
    again = second_browser(farm).post(
        "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
    )
    assert again.status_code == 403 and "disabled" in again.json()["detail"]
    browser = second_browser(farm)
    web = browser.post(
        "/login",
        data={"token": token, "login_nonce": login_nonce(browser)},
        follow_redirects=False,
    )
    assert web.status_code == 401, "nor on the web UI's token form"

    farm.client.patch(f"/api/admin/users/{user_id}", json={"disabled": False}, headers=farm.admin)
    assert farm.client.get("/api/jobs", headers=bearer(token)).status_code == 200
    login(second_browser(farm), "ana@example.com")


def test_admins_set_passwords_and_delete_users(farm: Farm) -> None:
    ana = new_user(farm, "ana")["user"]["id"]
    login(farm.client, "ana@example.com")
    answer = farm.client.put(
        f"/api/admin/users/{ana}/password", json={"password": "reset by admin"}, headers=farm.admin
    )
    assert answer.status_code == 204
    assert farm.client.get("/api/auth/me").status_code == 401, "her sessions ended"
    login(second_browser(farm), "ana@example.com", "reset by admin")

    admin_id = farm.client.get("/api/auth/me", headers=farm.admin).json()["user"]["id"]
    assert farm.client.delete(f"/api/admin/users/{admin_id}", headers=farm.admin).status_code == 409
    assert (
        farm.client.patch(
            f"/api/admin/users/{admin_id}", json={"disabled": True}, headers=farm.admin
        ).status_code
        == 409
    ), "an admin cannot lock themself out"

    bo = new_user(farm, "bo")["user"]["id"]
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.add(
            Job(owner_id=bo, name="x", settings={}, main_file="x.blend", created_at=utcnow())
        )
    owns = farm.client.delete(f"/api/admin/users/{bo}", headers=farm.admin)
    assert owns.status_code == 409 and "disable" in owns.json()["detail"]

    assert farm.client.delete(f"/api/admin/users/{ana}", headers=farm.admin).status_code == 204
    assert farm.client.delete(f"/api/admin/users/{ana}", headers=farm.admin).status_code == 404
    names = [u["name"] for u in farm.client.get("/api/admin/users", headers=farm.admin).json()]
    assert "ana" not in names and "bo" in names


def test_a_deleted_users_cookie_never_signs_in_the_next_user(farm: Farm) -> None:
    """A session cookie names its user by id: deleting the newest user and creating
    another must not hand the new one that id (SQLite reuses max(id)+1 unless the table is
    AUTOINCREMENT), or the deleted person's cookie would be the new user's session."""
    gone = new_user(farm, "intern")["user"]["id"]
    browser = login(second_browser(farm), "intern@example.com")
    assert browser.get("/api/auth/me").status_code == 200
    assert farm.client.delete(f"/api/admin/users/{gone}", headers=farm.admin).status_code == 204
    bob = new_user(farm, "bob")["user"]["id"]
    assert bob != gone, "a new user gets a new id"
    assert browser.get("/api/auth/me").status_code == 401, "the intern's cookie is nobody's"


def test_user_management_is_for_admins(farm: Farm) -> None:
    token = new_user(farm, "ana")["token"]
    for method, path in [
        ("GET", "/api/admin/users"),
        ("PATCH", "/api/admin/users/1"),
        ("PUT", "/api/admin/users/1/password"),
        ("DELETE", "/api/admin/users/1"),
    ]:
        answer = farm.client.request(
            method, path, headers=bearer(token), json={"password": "p" * 9}
        )
        assert answer.status_code == 403, (method, path)


def test_passwords_are_stored_as_argon2_and_never_come_back(
    farm: Farm, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-Passphrase-xyz"
    created = farm.client.post(
        "/api/admin/users",
        json={"name": "ana", "email": "ana@example.com", "password": secret},
        headers=farm.admin,
    )
    answers = [created.text]
    answers.append(
        farm.client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": secret}
        ).text
    )
    answers.append(
        farm.client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": secret + "x"}
        ).text
    )
    short = farm.client.post(
        "/api/admin/users/2/password", json={"password": "tiny-pw"}, headers=farm.admin
    )
    answers.append(short.text)
    answers.append(farm.client.get("/api/admin/users", headers=farm.admin).text)
    answers.append(farm.client.get("/api/auth/me").text)
    assert all(secret not in text for text in answers)

    database = farm.data_dir / "farmhand.sqlite3"
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT password_hash FROM users WHERE name = 'ana'").fetchone()
    assert stored.startswith("$argon2id$") and secret not in stored
    assert secret.encode() not in database.read_bytes()

    logs = capfd.readouterr()
    assert secret not in logs.out + logs.err
    assert "signed in with a password" in logs.out + logs.err, "the logs were captured"


def test_failed_sign_ins_are_limited_per_account(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "d",
        auth=AuthSettings(
            local_test_email="ana@example.com", local_test_password=PASSWORD,
            login_failures_per_account=3, login_window=600,
        ),
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            answer = client.post(
                "/api/auth/login", json={"email": "ana@example.com", "password": "no"}
            )
            assert answer.status_code == 401
        limited = client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": "no"}
        )
        assert limited.status_code == 429
        assert 0 < int(limited.headers["Retry-After"]) <= 600
        right = client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
        )
        assert right.status_code == 429, "not even the right password while limited"

        # Other accounts from this address are not held back by ana's limit.
        other = client.post("/api/auth/login", json={"email": "bo@example.com", "password": "no"})
        assert other.status_code == 401

        web = client.post(
            "/login",
            data={
                "email": "ana@example.com",
                "password": PASSWORD,
                "login_nonce": login_nonce(client),
            },
            follow_redirects=False,
        )
        assert web.status_code == 429 and web.headers["Retry-After"]
        assert "too many failed sign-ins" in web.text


def test_failed_sign_ins_are_limited_per_address_across_managers(tmp_path: Path) -> None:
    """Two managers sharing one database share the count: the limit lives in the database."""
    auth = AuthSettings(login_failures_per_address=4, login_failures_per_account=100)
    first = make_settings(tmp_path / "a", auth=auth)
    second = make_settings(tmp_path / "b", auth=auth, database_url=first.resolved_database_url)
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as two:
        for index, client in enumerate([one, two, one, two]):
            answer = client.post(
                "/api/auth/login", json={"email": f"guess{index}@example.com", "password": "no"}
            )
            assert answer.status_code == 401
        for client in (one, two):
            limited = client.post(
                "/api/auth/login", json={"email": "someone@example.com", "password": "no"}
            )
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        elsewhere = TestClient(one.app, client=("198.51.100.7", 5000))
        answer = elsewhere.post(
            "/api/auth/login", json={"email": "x@example.com", "password": "no"}
        )
        assert answer.status_code == 401, "another address is not limited"


def test_the_test_user_and_local_auth_switch(tmp_path: Path) -> None:
    auth = AuthSettings(local_test_email="test@example.com", local_test_password="testpassword")
    settings = make_settings(tmp_path / "d", auth=auth)
    with TestClient(create_app(settings)) as client:
        login(client, "test@example.com", "testpassword")
        assert client.get("/api/auth/me").json()["user"]["role"] == "user"
    with TestClient(create_app(settings)) as client:  # a restart does not duplicate it
        users = client.get("/api/admin/users", headers=bearer(settings.admin_token or "")).json()
        assert [u["email"] for u in users].count("test@example.com") == 1

    off = make_settings(tmp_path / "off", auth=AuthSettings(enable_local_auth=False))
    with TestClient(create_app(off)) as client:
        client.post("/api/admin/users", headers=bearer(off.admin_token or ""), json={
            "name": "ana", "email": "ana@example.com", "password": PASSWORD})  # fmt: skip
        refused = client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 404 and "turned off" in refused.json()["detail"]
        assert 'id="password-login"' not in client.get("/login").text
        assert 'id="token-login"' in client.get("/login").text


def test_the_web_login_form_takes_email_and_password(farm: Farm) -> None:
    new_user(farm, "ana")
    page = farm.client.get("/login")
    assert 'name="email"' in page.text and 'name="password"' in page.text
    nonce = login_nonce(farm.client)
    wrong = farm.client.post(
        "/login",
        data={"email": "ana@example.com", "password": "no", "login_nonce": nonce},
        follow_redirects=False,
    )
    assert wrong.status_code == 401 and "wrong e-mail or password" in wrong.text
    answer = farm.client.post(
        "/login",
        data={
            "email": "ana@example.com",
            "password": PASSWORD,
            "next": "/account",
            "login_nonce": nonce,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/account"
    assert "ana" in farm.client.get("/account").text


@pytest.fixture
def cli_data(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "cli"
    with TestClient(create_app(make_settings(data_dir))):
        pass
    yield data_dir


def test_the_users_cli(cli_data: Path) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(cli_data)]

    def run(*args: str, input: str | None = None) -> str:
        result = runner.invoke(cli, ["users", *args, *where], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "ana", "--email", "ana@example.com", "--password-stdin", input=PASSWORD + "\n")
    assert "ana" in run("list") and "password" in run("list")
    with sqlite3.connect(cli_data / "farmhand.sqlite3") as db:  # ana signs in with Google too
        db.execute(
            "INSERT INTO oauth_identities (user_id, provider, subject, created_at) "
            "SELECT id, 'google', 'g-ana', '2026-01-01 00:00:00' FROM users WHERE name = 'ana'"
        )
    assert "password, google" in run("list")
    settings = make_settings(cli_data)
    with TestClient(create_app(settings)) as client:
        login(client, "ana@example.com")
        run("disable", "ana@example.com")
        assert client.get("/api/auth/me").status_code == 401
        assert "disabled" in run("list")
        run("enable", "ana")
        run("set-password", "ana", "--password-stdin", input="from the cli!\n")
        login(client, "ana@example.com", "from the cli!")
        short = runner.invoke(cli, ["users", "set-password", "ana", "--password-stdin", *where],
                              input="short\n")  # fmt: skip
        assert short.exit_code == 1 and "at least 8" in short.output
        run("delete", "ana", "--yes")
        assert "ana" not in run("list")
        made = run("create", "bo", "--no-password", "--token")
        assert "token only" in run("list")
        secret = made.split("API token (shown once):", 1)[1].split()[0]
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 200 and me.json()["user"]["name"] == "bo", me.text
    odd = runner.invoke(
        cli, ["users", "create", "cy", "--email", "c\n@x.y", "--no-password", *where]
    )
    assert odd.exit_code == 1 and "is not an e-mail address" in odd.output, odd.output
    missing = runner.invoke(cli, ["users", "disable", "nobody", *where])
    assert missing.exit_code == 1 and "no user" in missing.output


def test_session_cookies_of_an_older_epoch_are_refused(farm: Farm) -> None:
    """A cookie signed with the right key but for a past epoch does not work."""
    ana = new_user(farm, "ana")["user"]["id"]
    key = sessions.session_key(farm.data_dir)
    old, _ = sessions.issue(key, ana, utcnow(), timedelta(hours=1), epoch=0)
    farm.client.put(
        f"/api/admin/users/{ana}/password", json={"password": "x" * 10}, headers=farm.admin
    )
    farm.client.cookies.set(sessions.SESSION_COOKIE, old)
    assert farm.client.get("/api/auth/me").status_code == 401
    fresh, _ = sessions.issue(key, ana, utcnow(), timedelta(hours=1), epoch=1)
    farm.client.cookies.set(sessions.SESSION_COOKIE, fresh)
    assert farm.client.get("/api/auth/me").status_code == 200


def test_guessing_the_old_password_is_limited_too(tmp_path: Path) -> None:
    """A borrowed session cannot be used to try passwords one after another."""
    auth = AuthSettings(
        local_test_email="ana@example.com", local_test_password=PASSWORD,
        login_failures_per_account=2,
    )  # fmt: skip
    with TestClient(create_app(make_settings(tmp_path / "d", auth=auth))) as client:
        login(client, "ana@example.com")
        csrf = {"X-CSRF-Token": client.get("/api/auth/me").json()["csrf"]}
        guess = {"old_password": "guess", "new_password": "whatever123"}
        for _ in range(2):
            assert client.post("/api/auth/password", json=guess, headers=csrf).status_code == 403
        limited = client.post("/api/auth/password", json=guess, headers=csrf)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
