"""An account locked by failed sign-ins, and the admin who helps its owner back in.

QA saw a teacher set a locked-out student's password ("Password set") while signing in
with the new one still answered "try again in 883 s", with nothing showing the lock
nor any way to lift it. Here, against a real manager app and SQLite database: setting
a password (API or `farmhand users`) lifts the account's lock but not the limit on the
guessing address, the admin's listing says who is locked until when, and admins (only)
can unlock over the API or with `farmhand users unlock`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farmhand.cli.app import app as cli
from farmhand.manager.app import create_app
from farmhand.manager.settings import AuthSettings
from tests.integration.conftest import make_settings

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new one"
GUESSING = ("203.0.113.9", 5000)
ELSEWHERE = ("198.51.100.7", 5000)


class Manager:
    """A manager app with the given sign-in limits, and an admin's headers."""

    def __init__(self, app: Any, admin_token: str) -> None:
        self.app = app
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.client = TestClient(app, client=GUESSING)

    def from_address(self, address: tuple[str, int]) -> TestClient:
        return TestClient(self.app, client=address)

    def new_user(self, name: str) -> dict[str, Any]:
        answer = self.client.post(
            "/api/admin/users",
            json={"name": name, "email": f"{name}@example.com", "password": PASSWORD},
            headers=self.admin,
        )
        assert answer.status_code == 201, answer.text
        user: dict[str, Any] = answer.json()
        return user

    def sign_in(self, email: str, password: str, client: TestClient | None = None) -> Any:
        return (client or self.client).post(
            "/api/auth/login", json={"email": email, "password": password}
        )

    def lock(self, email: str, times: int) -> None:
        for _ in range(times):
            assert self.sign_in(email, "wrong guess").status_code == 401
        locked = self.sign_in(email, PASSWORD)
        assert locked.status_code == 429, locked.text

    def listed(self, name: str) -> dict[str, Any]:
        answer = self.client.get("/api/admin/users", headers=self.admin)
        assert answer.status_code == 200, answer.text
        row: dict[str, Any] = next(u for u in answer.json() if u["name"] == name)
        return row

    def set_password(self, user_id: int, password: str) -> None:
        answer = self.client.put(
            f"/api/admin/users/{user_id}/password", json={"password": password}, headers=self.admin
        )
        assert answer.status_code == 204, answer.text


@contextmanager
def manager(data_dir: Path, **limits: Any) -> Iterator[Manager]:
    settings = make_settings(data_dir, auth=AuthSettings(login_window=900, **limits))
    with TestClient(create_app(settings)) as started:
        assert settings.admin_token
        yield Manager(started.app, settings.admin_token)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Manager]:
    """Three failures lock an account; the address limit is far away."""
    with manager(
        tmp_path / "d", login_failures_per_account=3, login_failures_per_address=100
    ) as farm:
        yield farm


def test_a_password_set_by_an_admin_signs_in_at_once(farm: Manager) -> None:
    ana = farm.new_user("ana")["user"]
    farm.lock("ana@example.com", 3)
    refused = farm.sign_in("ana@example.com", PASSWORD)
    assert "try again in 15 min" in refused.json()["detail"], "minutes, not seconds"
    assert 0 < int(refused.headers["Retry-After"]) <= 900, "programs keep the seconds"

    farm.set_password(ana["id"], NEW_PASSWORD)
    answer = farm.sign_in("ana@example.com", NEW_PASSWORD)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["name"] == "ana"


def test_the_listing_shows_the_lock_until_it_is_lifted(farm: Manager) -> None:
    ana = farm.new_user("ana")["user"]
    farm.new_user("bo")
    assert farm.listed("ana")["locked_until"] is None
    farm.lock("ANA@example.com ", 3)  # typed as people type it: still ana's account
    assert farm.listed("ana")["locked_until"] is not None
    assert farm.listed("bo")["locked_until"] is None, "bo is not locked by ana's guesses"
    farm.set_password(ana["id"], NEW_PASSWORD)
    assert farm.listed("ana")["locked_until"] is None


def test_setting_a_password_keeps_the_guessing_address_held_back(tmp_path: Path) -> None:
    """The per-address limit holds back whoever guesses from one place: an admin's help
    for one account must not reopen it for them."""
    with manager(tmp_path / "d", login_failures_per_account=100,
                        login_failures_per_address=3) as farm:  # fmt: skip
        ana = farm.new_user("ana")["user"]
        for index in range(3):
            guess = farm.sign_in(f"guess{index}@example.com", "wrong guess")
            assert guess.status_code == 401
        farm.set_password(ana["id"], NEW_PASSWORD)
        assert farm.sign_in("ana@example.com", NEW_PASSWORD).status_code == 429
        elsewhere = farm.sign_in("ana@example.com", NEW_PASSWORD, farm.from_address(ELSEWHERE))
        assert elsewhere.status_code == 200, elsewhere.text


def test_admins_and_only_admins_unlock(farm: Manager) -> None:
    ana = farm.new_user("ana")["user"]
    bo_token = farm.new_user("bo")["token"]
    farm.lock("ana@example.com", 3)

    bo = {"Authorization": f"Bearer {bo_token}"}
    refused = farm.client.post(f"/api/admin/users/{ana['id']}/unlock", headers=bo)
    assert refused.status_code == 403, refused.text
    assert farm.sign_in("ana@example.com", PASSWORD).status_code == 429, "still locked"

    missing = farm.client.post("/api/admin/users/999999/unlock", headers=farm.admin)
    assert missing.status_code == 404, missing.text

    unlocked = farm.client.post(f"/api/admin/users/{ana['id']}/unlock", headers=farm.admin)
    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json()["name"] == "ana" and unlocked.json()["locked_until"] is None
    assert farm.sign_in("ana@example.com", PASSWORD).status_code == 200


def test_the_users_cli_shows_and_lifts_the_lock(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    runner = CliRunner()
    env = {"FARMHAND_LOGIN_FAILURES_PER_ACCOUNT": "3"}

    def run(*args: str, input: str | None = None) -> str:
        result = runner.invoke(
            cli, ["users", *args, "--data-dir", str(data_dir)], input=input, env=env
        )
        assert result.exit_code == 0, result.output
        return result.output

    with manager(data_dir, login_failures_per_account=3) as farm:
        farm.new_user("ana")
        farm.lock("ana@example.com", 3)
        listed = run("list")
        assert "locked (15 min" in listed, listed
        assert "may sign in again" in run("unlock", "ana")
        assert "locked" not in run("list")
        assert farm.sign_in("ana@example.com", PASSWORD).status_code == 200

        farm.lock("ana@example.com", 3)
        run("set-password", "ana", "--password-stdin", input=NEW_PASSWORD + "\n")
        answer = farm.sign_in("ana@example.com", NEW_PASSWORD)
        assert answer.status_code == 200, answer.text

    missing = runner.invoke(cli, ["users", "unlock", "nobody", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no user" in missing.output


def test_guesses_of_an_old_password_are_no_sign_in_lock(farm: Manager) -> None:
    """QA round 11: a user who guessed their old password wrong when changing it was
    listed "locked" (and the web table said so), yet signed in fine; only changing the
    password waits. The listing shows the sign-in lock only."""
    farm.new_user("carol")
    session = farm.from_address(ELSEWHERE)
    signed_in = farm.sign_in("carol@example.com", PASSWORD, session)
    assert signed_in.status_code == 200, signed_in.text
    csrf = {"X-CSRF-Token": signed_in.json()["csrf"]}
    wrong = {"old_password": "not it", "new_password": NEW_PASSWORD}
    answers = [
        session.post("/api/auth/password", json=wrong, headers=csrf).status_code for _ in range(4)
    ]
    assert answers[-1] == 429, answers  # changing it now waits

    assert farm.listed("carol")["locked_until"] is None
    assert farm.sign_in("carol@example.com", PASSWORD).status_code == 200
