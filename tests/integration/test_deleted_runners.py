"""A runner an admin deleted is told so, and told apart from one the manager never knew.

QA deleted a runner (`farmhand runner delete id:1 --yes`); its worker, started with the
shared registration token, heard `401 unknown runner secret; register again`, registered
as a new runner and took work again. Deleting must lock it out: its secret's next
request answers `401` with `X-Farmhand-Runner: deleted` (the worker stops for good),
while a secret the manager never knew (a database restored from a backup) keeps the
plain `401` that sends a worker to register again. Also through a manager that still
remembered the secret when another one sharing the database deleted it, and on a
database made before migration 0020.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from farmhand.manager.app import create_app
from farmhand.manager.auth.tokens import token_hash
from farmhand.manager.clock import utcnow
from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import upgrade
from farmhand.manager.db.models import DeletedRunner
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.postgres import fresh_database
from tests.old_schema import insert_old

DELETED = "X-Farmhand-Runner"


def runner_id(farm: Farm, name: str) -> int:
    rows = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return int(next(row["id"] for row in rows if row["name"] == name))


def delete_runner(farm: Farm, name: str) -> None:
    answer = farm.client.delete(f"/api/admin/runners/{runner_id(farm, name)}", headers=farm.admin)
    assert answer.status_code == 204, answer.text


def heartbeat(client: TestClient, runner: dict[str, str]) -> httpx.Response:
    answer: httpx.Response = client.post("/api/runner/heartbeat", headers=runner, json={})
    return answer


def assert_told_deleted(answer: httpx.Response, name: str) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers.get(DELETED) == "deleted", answer.headers
    detail = answer.json()["detail"]
    assert f"this runner ({name}) was deleted by admin admin on " in detail, detail
    assert "it may not register again by itself" in detail, detail


def assert_unknown(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert DELETED not in answer.headers, answer.headers
    assert answer.json()["detail"] == "unknown runner secret; register again"


def test_a_deleted_runner_is_told_so_on_every_runner_route(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    runner = farm.register_runner("doomed")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert heartbeat(farm.client, runner).status_code == 200  # its secret is remembered

    delete_runner(farm, "doomed")

    for method, path in (
        ("POST", "/api/runner/heartbeat"),
        ("GET", "/api/runner/tasks?wait=0"),
        ("POST", f"/api/runner/tasks/{task['task_id']}/progress"),
        ("GET", f"/api/runner/files/{job_id}/scene.blend"),
        ("POST", "/api/runner/sign-off"),
    ):
        answer = farm.client.request(method, path, headers=runner, json={"frames_done": 0})
        assert_told_deleted(answer, "doomed")
    # Its task went back to the queue for someone else.
    heir = farm.register_runner("heir")
    again = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=heir)
    assert again.json()["task_id"] == task["task_id"]


def test_an_unknown_secret_is_not_called_deleted(farm: Farm) -> None:
    stranger = {"Authorization": f"Bearer fh_run_{secrets.token_urlsafe(32)}"}
    assert_unknown(heartbeat(farm.client, stranger))
    # Deleting some runner changes nothing for a secret the manager never knew.
    farm.register_runner("other")
    delete_runner(farm, "other")
    assert_unknown(farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=stranger))


def test_the_registration_token_still_admits_a_new_runner(farm: Farm) -> None:
    """The manager cannot tell the deleted machine from any other holding the shared
    token (docs/SECURITY.md says so): the worker must not do it by itself, and an
    operator who does gets a new runner whose own secret works; the old one stays out."""
    old = farm.register_runner("box")
    delete_runner(farm, "box")
    new = farm.register_runner("box")
    assert heartbeat(farm.client, new).status_code == 200
    assert_told_deleted(heartbeat(farm.client, old), "box")


def test_a_manager_that_still_remembers_the_secret_tells_it_too(tmp_path: Path) -> None:
    """Deleted through one manager (or sibling process) while another, sharing the
    database, remembered the secret (`RunnerIdCache`): the other finds the worker's row
    gone and must say `deleted` too, on that request and the next, whatever the route."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first = make_settings(tmp_path / "one", database_url=url)
    second = make_settings(
        tmp_path / "two",
        database_url=url,
        admin_token=first.admin_token,
        runner_token=first.runner_token,
    )
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as two:
        farm = Farm(one, str(first.admin_token), str(first.runner_token), first.data_dir)
        runner = farm.register_runner("shared")
        assert heartbeat(two, runner).status_code == 200  # now remembered by `two`
        delete_runner(farm, "shared")
        assert_told_deleted(heartbeat(two, runner), "shared")
        claim = two.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
        assert_told_deleted(claim, "shared")


def made_before_0020(database_url: str) -> str:
    """A database at revision 0019 with one runner on it; that runner's secret."""
    secret = f"fh_run_{secrets.token_urlsafe(32)}"
    engine = make_engine(database_url)
    upgrade(engine, "0019")
    now = utcnow()
    with engine.begin() as connection:
        insert_old(
            connection, "workers", name="veteran", secret_hash=token_hash(secret),
            capabilities={}, registered_at=now, last_heartbeat=now, status="idle",
            admin_state="enabled", asleep=False,
        )  # fmt: skip
    engine.dispose()
    return secret


def check_upgrade(settings: ManagerSettings, secret: str) -> None:
    """The manager upgrades the database at start; the old runner works until deleted."""
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, str(settings.admin_token), str(settings.runner_token), Path("."))
        runner = {"Authorization": f"Bearer {secret}"}
        assert heartbeat(client, runner).status_code == 200
        delete_runner(farm, "veteran")
        assert_told_deleted(heartbeat(client, runner), "veteran")
        context = client.app.state.farm  # type: ignore[attr-defined]
        with context.db.read() as session:
            kept = session.scalars(select(DeletedRunner)).one()
        assert (kept.name, kept.deleted_by, kept.secret_hash) == (
            "veteran",
            "admin",
            token_hash(secret),
        )
        assert secret not in str(kept.__dict__), "only the hash is kept"


def test_a_database_made_before_0020_upgrades_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    secret = made_before_0020(url)
    check_upgrade(make_settings(tmp_path / "data", database_url=url), secret)


@pytest.fixture
def pg_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    yield fresh_database(postgres_url, f"deleted_{tmp_path.name}")


@pytest.mark.xdist_group("postgres")
def test_a_database_made_before_0020_upgrades_on_postgres(tmp_path: Path, pg_url: str) -> None:
    secret = made_before_0020(pg_url)
    check_upgrade(make_settings(tmp_path / "data", database_url=pg_url), secret)


@pytest.mark.xdist_group("postgres")
def test_a_deleted_runner_is_told_so_on_postgres(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=pg_url)
    with TestClient(create_app(settings)) as client:
        farm = Farm(client, str(settings.admin_token), str(settings.runner_token), Path("."))
        test_a_deleted_runner_is_told_so_on_every_runner_route(farm)
        test_an_unknown_secret_is_not_called_deleted(farm)
