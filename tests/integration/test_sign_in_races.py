"""Wrong passwords sent all at once are counted one by one, and a sign-in's slow
password check holds no one else's writes.

QA sent 25 wrong passwords for one account in parallel to a manager on PostgreSQL:
all 25 were checked (401), none refused (429), though the limit is 5 failures per
account; 60 from one address got 50 checked, against a limit of 30. Each attempt
counted the failures before any of the others had recorded theirs. On SQLite the
count held, but each sign-in kept the database's write lock through the password
hash, so runners' writes waited for every sign-in. Here, against a real manager app
on SQLite and on PostgreSQL, with the default limits (5 per account, 30 per address).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.manager.auth import accounts
from farmhand.manager.auth.passwords import verify_password
from tests.integration.conftest import Farm, make_settings
from tests.integration.postgres import fresh_database, postgres_bin

PASSWORD = "correct horse battery"
WAIT = 30.0
"""Seconds a step may take before the test calls it hung (it takes well under one)."""

on_both_databases = pytest.mark.parametrize(
    "database",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.skipif(
                    postgres_bin() is None, reason="Debian's postgresql is not installed"
                ),
                pytest.mark.xdist_group("postgres"),
            ],
        ),
    ],
)


@pytest.fixture
def farm(request: pytest.FixtureRequest, tmp_path: Path, database: str) -> Iterator[Farm]:
    """A manager on `database`, with the default sign-in limits."""
    overrides: dict[str, object] = {}
    if database == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        overrides["database_url"] = fresh_database(server, f"signin_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", **overrides)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def new_user(farm: Farm, name: str) -> None:
    answer = farm.client.post(
        "/api/admin/users",
        json={"name": name, "email": f"{name}@example.com", "password": PASSWORD},
        headers=farm.admin,
    )
    assert answer.status_code == 201, answer.text


def all_at_once(calls: list[Callable[[], int]]) -> Counter[int]:
    """Run `calls` in parallel threads released together; the statuses they answered."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int:
        start.wait(WAIT)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return Counter(pool.map(run, calls, timeout=4 * WAIT))


def sign_in(farm: Farm, email: str, password: str) -> Callable[[], int]:
    def call() -> int:
        answer = farm.client.post("/api/auth/login", json={"email": email, "password": password})
        status: int = answer.status_code
        return status

    return call


@on_both_databases
def test_parallel_wrong_passwords_for_one_account_stop_at_its_limit(farm: Farm) -> None:
    new_user(farm, "alice")
    answers = all_at_once([sign_in(farm, "alice@example.com", "wrong guess")] * 20)
    assert answers == {401: 5, 429: 15}, "five guesses checked, the rest refused"
    locked = farm.client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert locked.status_code == 429, "the right password waits out the lock too"


@on_both_databases
def test_parallel_wrong_passwords_from_one_address_stop_at_its_limit(farm: Farm) -> None:
    """Four guesses for each of ten accounts: no account reaches its limit of five, but
    the address (the test client's, one for all) reaches its 30."""
    for n in range(10):
        new_user(farm, f"user{n}")
    guesses = [sign_in(farm, f"user{n}@example.com", "wrong guess") for n in range(10)] * 4
    assert all_at_once(guesses) == {401: 30, 429: 10}


@on_both_databases
def test_the_right_password_takes_back_its_counted_failure(farm: Farm) -> None:
    """A sign-in counts as a failure until its password is found right: four wrong
    guesses and a right sign-in leave the account one guess short of its limit, not
    at it, and the right password later still signs in."""
    new_user(farm, "alice")
    for _ in range(4):
        assert sign_in(farm, "alice@example.com", "wrong guess")() == 401
    assert sign_in(farm, "alice@example.com", PASSWORD)() == 200
    for _ in range(4):
        assert sign_in(farm, "alice@example.com", "wrong guess")() == 401, "failures cleared"
    assert sign_in(farm, "alice@example.com", PASSWORD)() == 200


@on_both_databases
def test_parallel_wrong_old_passwords_stop_at_the_limit(farm: Farm) -> None:
    """Guesses of the old password when changing it (a borrowed session) count as
    sign-in failures do, and are counted one by one too."""
    new_user(farm, "alice")
    assert sign_in(farm, "alice@example.com", PASSWORD)() == 200  # the client's cookie
    csrf = {"X-CSRF-Token": farm.client.get("/api/auth/me").json()["csrf"]}

    def guess() -> int:
        answer = farm.client.post(
            "/api/auth/password",
            json={"old_password": "wrong guess", "new_password": "a brand new one"},
            headers=csrf,
        )
        status: int = answer.status_code
        return status

    assert all_at_once([guess] * 20) == {403: 5, 429: 15}


@pytest.mark.parametrize("database", ["sqlite"])
def test_a_runner_is_heard_while_a_password_is_checked(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a sign-in's password is being checked (held here until the runner is
    done), a runner registers and sends a heartbeat: the check holds no write lock."""
    checking, release = threading.Event(), threading.Event()

    def held_verify(stored: str | None, password: str) -> bool:
        checking.set()
        release.wait(WAIT)
        return verify_password(stored, password)

    new_user(farm, "alice")
    monkeypatch.setattr(accounts, "verify_password", held_verify)

    def runner_is_heard() -> Any:
        runner = farm.register_runner()
        return farm.client.post("/api/runner/heartbeat", json={}, headers=runner)

    with ThreadPoolExecutor(2) as pool:
        signing_in = pool.submit(sign_in(farm, "alice@example.com", PASSWORD))
        try:
            assert checking.wait(WAIT), "the sign-in never reached its password check"
            try:
                heard = pool.submit(runner_is_heard).result(timeout=WAIT)
            except TimeoutError:
                pytest.fail("the runner's writes waited for a sign-in's password check")
            assert heard.status_code == 200, heard.text
            assert not signing_in.done(), "the password check was still held"
        finally:
            release.set()
        assert signing_in.result(timeout=WAIT) == 200
