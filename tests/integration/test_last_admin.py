"""The farm's admins: the first start's `admin` account may go, the last active admin
may not.

What QA saw: with a second admin, ana, deleting `admin` (as ana over the API, or
`farmhand users delete admin --yes`) made the manager refuse every later start ("the
database has no admin account, but …/admin-token holds a token from an earlier one"),
though ana was an active admin; making another admin with `farmhand users create`
did not help. And `farmhand users disable admin` disabled the farm's only admin.

Here: a real manager restarts after `admin` is deleted either way, with one warning that
`admin-token` gives no admin access and the file left as it was; and every way of
deleting, disabling or demoting the last active admin is refused (409 / one line).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text

from farmhand.localfarm import LocalFarm
from farmhand.manager.app import create_app, prepare
from farmhand.manager.auth import accounts
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import User
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import make_settings
from tests.integration.postgres import fresh_database

STALE_FILE = "the admin token file holds a token that gives no admin access"


class FarmWithoutPreset(LocalFarm):
    """A farm started as a production one usually is: no FARMHAND_ADMIN_TOKEN, so the
    first start writes the admin's token to `admin-token`."""

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["FARMHAND_ADMIN_TOKEN"]
        return env


@contextmanager
def farm_without_preset(root: Path) -> Iterator[FarmWithoutPreset]:
    farm = FarmWithoutPreset(root)
    try:
        yield farm
    except BaseException:
        print(farm.logs(), file=sys.stderr)
        raise
    finally:
        farm.stop()


def as_(farm: LocalFarm, token: str) -> httpx.Client:
    return httpx.Client(base_url=farm.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def make_admin(client: httpx.Client | TestClient, name: str, **headers: str) -> str:
    """A new admin `name`, made by the caller; their first API token."""
    made = client.post(
        "/api/admin/users", json={"name": name, "role": "admin"}, headers=headers or None
    )
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


def users_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`farmhand users ARGS` in its own process, on the manager's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARMHAND_")}
    return subprocess.run(
        [sys.executable, "-m", "farmhand", "users", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def refused_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def admins(client: httpx.Client | TestClient, **headers: str) -> list[tuple[str, bool]]:
    """The farm's admins as the API lists them: (name, disabled)."""
    listed = client.get("/api/admin/users", headers=headers or None)
    assert listed.status_code == 200, listed.text
    return [(u["name"], u["disabled"]) for u in listed.json() if u["role"] == "admin"]


# ---------------------------------------------------------------- the default admin goes


@pytest.mark.parametrize("how", ["api", "cli"])
def test_the_manager_restarts_after_the_admin_account_is_deleted(tmp_path: Path, how: str) -> None:
    with farm_without_preset(tmp_path / "farm") as farm:
        farm.start_manager()
        token_file = farm.data_dir / "admin-token"
        first = token_file.read_text()
        with as_(farm, first.strip()) as admin:
            ana = make_admin(admin, "ana")
            admin_id = next(u["id"] for u in admin.get("/api/admin/users").json()
                            if u["name"] == "admin")  # fmt: skip
        if how == "api":
            with as_(farm, ana) as as_ana:
                assert as_ana.delete(f"/api/admin/users/{admin_id}").status_code == 204
            assert farm.manager is not None
            farm.manager.stop()
        else:
            assert farm.manager is not None
            farm.manager.stop()
            deleted = users_cli(farm.data_dir, "delete", "admin", "--yes")
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr

        log = farm.manager.log_path
        before = log.stat().st_size
        farm.start_manager()  # refused before: "the database has no admin account, …"
        said = log.read_bytes()[before:].decode(errors="replace")

        with as_(farm, ana) as as_ana:
            assert admins(as_ana) == [("ana", False)], "ana runs the farm"
        with as_(farm, first.strip()) as gone:
            assert gone.get("/api/jobs").status_code == 401
        assert token_file.read_text() == first, "the file is not replaced"
        warned = [line for line in said.splitlines() if STALE_FILE in line]
        assert len(warned) == 1, said
        assert "deleted" in warned[0] and "ana" in warned[0], warned[0]
        assert "First start" not in said


def test_an_admin_made_with_the_cli_lets_a_farm_without_admins_start(tmp_path: Path) -> None:
    """Every admin account gone (as an earlier version allowed): the start is refused
    (see test_missing_database), and making an admin, as the refusal suggests, is enough:
    the start does not make `admin` again, nor replace the file."""
    data = tmp_path / "data"
    context, _ = prepare(ManagerSettings(data_dir=data))
    try:
        with context.db.transaction() as session:
            session.execute(delete(User).where(User.role == "admin"))
    finally:
        context.db.dispose()
    first = (data / "admin-token").read_text()

    made = users_cli(data, "create", "root2", "--role", "admin", "--no-password")
    assert made.returncode == 0, made.stdout + made.stderr
    context, report = prepare(ManagerSettings(data_dir=data))
    try:
        assert not report.created_admin
        with context.db.read() as session:
            assert [u.name for u in accounts.active_admins(session)] == ["root2"]
    finally:
        context.db.dispose()
    assert (data / "admin-token").read_text() == first


def test_a_preset_of_a_deleted_admin_does_not_bring_it_back(tmp_path: Path) -> None:
    """FARMHAND_ADMIN_TOKEN is the `admin` account's: once that account is deleted, a
    restart with the variable still set does not make it again (a deleted admin would
    otherwise come back with its old token at every restart); making the account again
    on purpose makes the preset work again."""
    data = tmp_path / "data"
    settings = make_settings(data)
    preset = {"Authorization": f"Bearer {settings.admin_token}"}
    with TestClient(create_app(settings)) as client:
        ana = {"Authorization": f"Bearer {make_admin(client, 'ana', **preset)}"}
        admin_id = next(u["id"] for u in client.get("/api/admin/users", headers=ana).json()
                        if u["name"] == "admin")  # fmt: skip
        assert client.delete(f"/api/admin/users/{admin_id}", headers=ana).status_code == 204

    with TestClient(create_app(settings)) as client:
        assert admins(client, **ana) == [("ana", False)]
        assert client.get("/api/jobs", headers=preset).status_code == 401

    made = users_cli(data, "create", "admin", "--role", "admin", "--no-password")
    assert made.returncode == 0, made.stdout + made.stderr
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/admin/users", headers=preset).status_code == 200


# ------------------------------------------------------ the last active admin stays


def test_the_cli_never_takes_the_last_active_admin_away(tmp_path: Path) -> None:
    with farm_without_preset(tmp_path / "farm") as farm:
        farm.start_manager()
        data = farm.data_dir
        token = (data / "admin-token").read_text().strip()
        for args in (("disable", "admin"), ("delete", "admin", "--yes")):
            line = refused_in_one_line(users_cli(data, *args))
            assert "only active admin" in line and "admin" in line, line
        with as_(farm, token) as admin:
            assert admins(admin) == [("admin", False)], "still an active admin"
            ana = make_admin(admin, "ana")

        assert users_cli(data, "disable", "ana").returncode == 0
        line = refused_in_one_line(users_cli(data, "disable", "admin"))
        assert "cannot disable admin" in line, line
        assert users_cli(data, "enable", "ana").returncode == 0
        assert users_cli(data, "disable", "admin").returncode == 0, "ana is an admin too"
        line = refused_in_one_line(users_cli(data, "delete", "ana", "--yes"))
        assert "cannot delete ana" in line, line
        with as_(farm, ana) as as_ana:
            assert admins(as_ana) == [("admin", True), ("ana", False)]

        assert farm.manager is not None
        log = farm.manager.log_path
        before = log.stat().st_size
        farm.manager.stop()
        farm.start_manager()  # `admin` disabled, ana active: a start, with a warning
        said = log.read_bytes()[before:].decode(errors="replace")
        warned = [line for line in said.splitlines() if STALE_FILE in line]
        assert len(warned) == 1 and "disabled" in warned[0], said


@pytest.mark.xdist_group("postgres")
def test_two_admins_removing_each_other_at_once_leave_one(
    tmp_path: Path, postgres_url: str
) -> None:
    """On PostgreSQL two transactions run side by side: ana (here through another
    manager, a transaction held open) deletes `admin` while `admin` deletes ana over
    the API. Each saw the other one left; without a lock both deletions went through
    and the farm had no admin. The second waits for the first, then is refused."""
    url = fresh_database(postgres_url, f"admins_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", database_url=url)
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    other_manager = Database(url)
    with TestClient(create_app(settings)) as client:
        make_admin(client, "ana", **admin)
        ana_id = next(u["id"] for u in client.get("/api/admin/users", headers=admin).json()
                      if u["name"] == "ana")  # fmt: skip
        answers: list[httpx.Response] = []
        try:
            with other_manager.transaction() as session:
                target = session.scalar(select(User).where(User.name == "admin"))
                assert target is not None
                accounts.delete_user(session, target)
                session.flush()
                request = threading.Thread(
                    target=lambda: answers.append(
                        client.delete(f"/api/admin/users/{ana_id}", headers=admin)
                    )
                )
                request.start()
                while request.is_alive() and not _waits_on_a_lock(other_manager):
                    time.sleep(0.05)
            request.join()
        finally:
            other_manager.dispose()
        assert [a.status_code for a in answers] == [409], [a.text for a in answers]
        assert "only active admin" in answers[0].json()["detail"]
    check = Database(url)
    try:
        with check.read() as session:
            assert [u.name for u in accounts.active_admins(session)] == ["ana"]
    finally:
        check.dispose()


def _waits_on_a_lock(db: Database) -> bool:
    """Whether another connection is waiting for a row lock (the API's transaction)."""
    with db.engine.connect() as connection:
        waiting = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        ).scalar_one()
    return bool(waiting)
