"""A password is only given where it can sign someone in (newcomer QA).

The first start's `admin` has no e-mail, and password sign-in asks for an e-mail: the
documented recovery, `farmhand users set-password admin`, used to print "New password
set for admin." and list admin's sign-in as "password", yet nobody could ever sign in
with it. Now a password is refused to an account without an e-mail (CLI, admin API and
own change alike), and an admin can give an account one (`--email`, `users set-email`,
`PATCH … {"email": …}`), after which the password really signs in: through the API and
the web login form, on a real manager app with a real SQLite database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from farmhand.cli.app import app as cli
from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, login_nonce, make_settings

PASSWORD = "correct-horse-42"


def first_start_fixture() -> Callable[..., object]:
    """A `data_dir` fixture for a module (`data_dir = first_start_fixture()`: a made
    fixture, unlike an imported one, is not shadowed by the tests' `data_dir`
    arguments): a farm's data dir after its first start (`admin`, id 1, with a token
    and no e-mail)."""

    @pytest.fixture
    def data_dir(tmp_path: Path) -> Iterator[Path]:
        where = tmp_path / "farm"
        with TestClient(create_app(make_settings(where))):
            pass
        yield where

    return data_dir


data_dir = first_start_fixture()


def users(data_dir: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["users", *args, "--data-dir", str(data_dir)], input=input)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> int:
    answer = client.post("/api/auth/login", json={"email": email, "password": password})
    return int(answer.status_code)


def admin_row(data_dir: Path) -> str:
    listing = users(data_dir, "list")
    assert listing.exit_code == 0, listing.output
    return next(line for line in listing.output.splitlines() if " admin " in line)


def test_the_documented_recovery_lets_the_admin_sign_in(data_dir: Path) -> None:
    refused = users(data_dir, "set-password", "admin", "--password-stdin", input=PASSWORD + "\n")
    assert refused.exit_code == 1, refused.output
    assert "admin has no e-mail address" in refused.output
    assert "--email" in refused.output, "the refusal says how to go on"
    assert "New password set" not in refused.output
    assert "token only" in admin_row(data_dir), "no password was set"

    done = users(
        data_dir, "set-password", "admin", "--email", "Admin@Studio.example ",
        "--password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "they sign in with admin@studio.example" in done.output
    assert "admin@studio.example" in admin_row(data_dir)

    with TestClient(create_app(make_settings(data_dir))) as client:
        assert sign_in(client, "ADMIN@studio.example") == 200
        me = client.get("/api/auth/me").json()["user"]
        assert (me["name"], me["role"], me["email"]) == ("admin", "admin", "admin@studio.example")
        # The web login form, as a browser posts it.
        browser = TestClient(client.app)
        answer = browser.post(
            "/login",
            data={"email": "admin@studio.example", "password": PASSWORD, "next": "/account",
                  "login_nonce": login_nonce(browser)},
            follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 303 and answer.headers["location"] == "/account"
        assert "Signed in as <strong>admin</strong>" in browser.get("/account").text

    # Once the admin has an e-mail, set-password needs no --email again.
    again = users(data_dir, "set-password", "admin", "--password-stdin", input="second-pw-99\n")
    assert again.exit_code == 0, again.output
    with TestClient(create_app(make_settings(data_dir))) as client:
        assert sign_in(client, "admin@studio.example", "second-pw-99") == 200


def test_set_email_and_create_on_the_command_line(data_dir: Path) -> None:
    made = users(data_dir, "create", "ana", "--email", "ana@example.com", "--password-stdin",
                 input=PASSWORD + "\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    taken = users(data_dir, "set-email", "admin", "ANA@example.com")
    assert taken.exit_code == 1 and "already exists" in taken.output, taken.output
    odd = users(data_dir, "set-email", "admin", "not an address")
    assert odd.exit_code == 1 and "is not an e-mail address" in odd.output, odd.output
    given = users(data_dir, "set-email", "admin", "boss@example.com")
    assert given.exit_code == 0 and "admin signs in with boss@example.com" in given.output
    assert "boss@example.com" in admin_row(data_dir)
    # ana keeps hers under another case of the same letters.
    assert users(data_dir, "set-email", "ana", "Ana@Example.com").exit_code == 0

    # A password is asked for only with an e-mail, and refused without one.
    bare = users(data_dir, "create", "bo", "--role", "admin")
    assert bare.exit_code == 0, bare.output
    assert "cannot sign in yet" in bare.output and "--email" in bare.output
    forced = users(data_dir, "create", "cy", "--password-stdin", input=PASSWORD + "\n")
    assert forced.exit_code == 1 and "give an e-mail" in forced.output, forced.output


def test_admins_give_an_e_mail_over_the_api_before_a_password(farm: Farm) -> None:
    me = farm.client.get("/api/auth/me", headers=farm.admin).json()["user"]
    assert me["email"] is None
    path = f"/api/admin/users/{me['id']}"

    refused = farm.client.put(f"{path}/password", json={"password": PASSWORD}, headers=farm.admin)
    assert refused.status_code == 409, refused.text
    assert "admin has no e-mail address" in refused.json()["detail"]
    own = farm.client.post(
        "/api/auth/password", json={"old_password": "", "new_password": PASSWORD},
        headers=farm.admin,
    )  # fmt: skip
    assert own.status_code == 409 and "no e-mail" in own.json()["detail"], own.text
    bare = farm.client.post(
        "/api/admin/users", json={"name": "bo", "password": PASSWORD}, headers=farm.admin
    )
    assert bare.status_code == 400 and "e-mail" in bare.json()["detail"], bare.text
    assert (
        farm.client.get("/api/admin/users", headers=farm.admin).json()[0]["has_password"] is False
    )

    ana = farm.client.post(
        "/api/admin/users", json={"name": "ana", "email": "ana@example.com"}, headers=farm.admin
    )
    assert ana.status_code == 201, ana.text
    clash = farm.client.patch(path, json={"email": "ANA@example.com"}, headers=farm.admin)
    assert clash.status_code == 409 and "already exists" in clash.text
    malformed = farm.client.patch(path, json={"email": "two@@x"}, headers=farm.admin)
    assert malformed.status_code == 400, malformed.text
    assert "'two@@x' is not an e-mail address" in malformed.json()["detail"]
    # Creating a user says the same in words, not by quoting a regular expression.
    created = farm.client.post(
        "/api/admin/users", json={"name": "cy", "email": "two@@x"}, headers=farm.admin
    )
    assert created.status_code == 400, created.text
    assert "'two@@x' is not an e-mail address" in created.json()["detail"], created.text

    given = farm.client.patch(path, json={"email": "Boss@Example.com"}, headers=farm.admin)
    assert given.status_code == 200 and given.json()["email"] == "boss@example.com", given.text
    assert sign_in(farm.client, "boss@example.com") == 401, "no password yet"
    done = farm.client.put(f"{path}/password", json={"password": PASSWORD}, headers=farm.admin)
    assert done.status_code == 204, done.text
    assert sign_in(farm.client, "BOSS@example.com") == 200
    assert farm.client.get("/api/auth/me").json()["user"]["name"] == "admin"
