"""A data dir whose database is gone: the manager refuses to start a new farm on the old
farm's files.

What an operator noticed before: `farmhand manager` on a data dir whose
`farmhand.sqlite3` had been deleted printed `First start: created the admin account.`,
wrote new tokens over `admin-token` and `runner-token` (every worker's registration
token stopped working), its garbage collection then deleted every stored file (no row
named them), and a new job was shown the task log of the lost database's job with the
same id. Here: the same data dir, made by a real manager, is refused in one line, and
every file in it is left as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, make_url, select, text
from typer.testing import CliRunner, Result

from farmhand.cli.app import app
from farmhand.manager.app import create_app, prepare
from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import ApiToken, User
from farmhand.manager.db.presence import StartRefused
from farmhand.manager.settings import ManagerSettings
from tests.integration.conftest import submit_stand_in
from tests.integration.postgres import postgres_bin, postgres_server
from tests.manager_env import clear_manager_env, forbid_serving
from tests.unit.test_cli_errors import one_error_line

runner = CliRunner()
TOKENS = ("admin-token", "runner-token")


@pytest.fixture(autouse=True)
def _no_manager_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The options under test, not whatever manager this shell points at; and log lines
    to a stream that is open (`invoke`)."""
    clear_manager_env(monkeypatch)
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def invoke(args: list[str]) -> Result:
    """`farmhand ARGS` in this process. The CLI points structlog at the stderr it is
    given, which CliRunner closes when the command returns: the managers these tests
    start after it would fail to log (a 500), so the defaults are put back."""
    try:
        return runner.invoke(app, args)
    finally:
        structlog.reset_defaults()


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_serving(monkeypatch)


def _render_a_job(client: TestClient, data: Path, lines: list[str]) -> tuple[int, int]:
    """Submit a job with the data dir's admin token, render its task's log lines as a
    worker registered with the runner token; (job id, task id)."""
    admin = {"Authorization": f"Bearer {(data / 'admin-token').read_text().strip()}"}
    job_id = submit_stand_in(client, admin, frame_start=1, frame_end=1)
    answer = client.post(
        "/api/runner/register",
        json={"token": (data / "runner-token").read_text().strip(), "name": f"w{job_id}"},
    )
    assert answer.status_code == 201, answer.text
    worker = {"Authorization": f"Bearer {answer.json()['secret']}"}
    task = client.get("/api/runner/tasks", params={"wait": 5}, headers=worker).json()
    assert task["job_id"] == job_id
    reply = client.post(
        f"/api/runner/tasks/{task['task_id']}/progress",
        json={"frames_done": 0, "log_lines": lines},
        headers=worker,
    )
    assert reply.status_code == 200, reply.text
    return job_id, int(task["task_id"])


def farm_that_worked(data: Path, database_url: str | None = None) -> None:
    """A data dir as a farm that worked leaves it: a job with its stored .blend and a task
    log, the tokens (written by the first start)."""
    settings = ManagerSettings(data_dir=data, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        _render_a_job(client, data, ["rendering frame 1"])


def _files(data: Path) -> dict[str, bytes]:
    """Every file of the farm (the database aside), with its bytes."""
    return {
        path.relative_to(data).as_posix(): path.read_bytes()
        for path in data.rglob("*")
        if path.is_file() and not path.name.startswith("farmhand.sqlite3")
    }


def _start(*args: str) -> str:
    return one_error_line(invoke(["manager", "--port", "9", *args]))


def test_a_data_dir_whose_database_was_deleted_is_refused_and_left_as_it_was(
    tmp_path: Path, no_server: None
) -> None:
    data = tmp_path / "data"
    farm_that_worked(data)
    files = _files(data)
    assert any(name.startswith("blobs/sha256/") for name in files)
    assert any(name.startswith("logs/job-1/") for name in files)
    for name in ("farmhand.sqlite3", "farmhand.sqlite3-wal", "farmhand.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)

    line = _start("--data-dir", str(data))

    assert line.startswith(f"error: {data} holds a farm's files ("), line
    for found in ("admin-token", "runner-token", "stored files (blobs/)", "task logs (logs/)"):
        assert found in line, line
    assert f"no database: {data / 'farmhand.sqlite3'} does not exist" in line, line
    assert "Restore the database from a backup" in line, line
    assert "--data-dir naming an empty folder" in line, line
    assert _files(data) == files, "tokens, stored files and logs are as they were"
    assert not (data / "farmhand.sqlite3").exists(), "no new database was made"
    # An empty database file (an interrupted start, a careless `touch`) is no database.
    (data / "farmhand.sqlite3").touch()
    line = _start("--data-dir", str(data))
    assert "has no farmhand tables" in line, line
    assert _files(data) == files


def test_a_write_ahead_log_without_its_database_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "farmhand.sqlite3-wal").write_bytes(b"pages of a lost database")
    with pytest.raises(StartRefused, match=r"farmhand\.sqlite3-wal"):
        prepare(ManagerSettings(data_dir=data))
    assert not (data / "farmhand.sqlite3").exists()


def test_a_new_farm_starts_in_an_empty_folder_and_once_the_old_files_are_moved_away(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    farm_that_worked(data)
    (data / "farmhand.sqlite3").unlink()
    with pytest.raises(StartRefused):
        prepare(ManagerSettings(data_dir=data))
    empty = tmp_path / "empty"
    empty.mkdir()
    context, report = prepare(ManagerSettings(data_dir=empty))
    context.db.dispose()
    assert report.created_admin
    away = tmp_path / "moved-away"  # what the message says to do
    away.mkdir()
    for item in data.iterdir():
        shutil.move(item, away / item.name)
    context, report = prepare(ManagerSettings(data_dir=data))
    context.db.dispose()
    assert report.created_admin


def test_a_token_file_is_never_replaced_by_a_new_admin_token(tmp_path: Path) -> None:
    """A database without an admin account (it was deleted) beside an admin token file:
    the file is what people and scripts use, so the start is refused, not the file
    replaced; the runner token file is never replaced either."""
    data = tmp_path / "data"
    farm_that_worked(data)
    tokens = {name: (data / name).read_text() for name in TOKENS}
    db = Database(ManagerSettings(data_dir=data).resolved_database_url)
    try:
        with db.transaction() as session:
            admin = session.scalar(select(User).where(User.name == "admin"))
            assert admin is not None
            session.execute(delete(ApiToken).where(ApiToken.user_id == admin.id))
            session.execute(text("DELETE FROM jobs"))
            session.delete(admin)
    finally:
        db.dispose()

    with pytest.raises(StartRefused, match="holds a token from an earlier one"):
        prepare(ManagerSettings(data_dir=data))
    assert {name: (data / name).read_text() for name in TOKENS} == tokens

    (data / "admin-token").rename(tmp_path / "old-admin-token")  # as the message says
    context, report = prepare(ManagerSettings(data_dir=data))
    context.db.dispose()
    assert report.created_admin
    assert (data / "admin-token").read_text() != tokens["admin-token"]
    assert (data / "runner-token").read_text() == tokens["runner-token"]


def test_a_new_job_never_shows_the_log_of_a_lost_job_with_its_id(tmp_path: Path) -> None:
    """The database put back from a backup older than the task logs (only the database
    file restored): job 2 of the lost database left a log; the new job 2 starts with an
    empty one, and the old log is kept aside, not deleted."""
    data = tmp_path / "data"
    settings = ManagerSettings(data_dir=data)
    with TestClient(create_app(settings)) as client:
        first = _render_a_job(client, data, ["job 1 renders"])
    result = invoke(["backup", str(tmp_path / "backup"), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    with TestClient(create_app(settings)) as client:
        lost = _render_a_job(client, data, ["the lost job 2 renders"])
    assert lost == (2, 2)
    for name in ("farmhand.sqlite3-wal", "farmhand.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup" / "farmhand.sqlite3", data / "farmhand.sqlite3")

    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {(data / 'admin-token').read_text().strip()}"}
        job_id = submit_stand_in(client, admin, frame_start=1, frame_end=1)
        assert job_id == 2
        tasks = client.get(f"/api/jobs/{job_id}", headers=admin).json()["tasks"]
        assert [task["id"] for task in tasks] == [2], "the lost job's task id, again"
        log = client.get(f"/api/jobs/{job_id}/tasks/2/log", headers=admin)
        assert log.status_code == 200 and log.text == "", log.text
        kept = client.get(f"/api/jobs/{first[0]}/tasks/{first[1]}/log", headers=admin)
        assert kept.text == "job 1 renders\n"
    aside = list((data / "logs").glob("stale-*/job-2/task-2.log"))
    assert [path.read_text() for path in aside] == ["the lost job 2 renders\n"]


@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
def test_a_postgresql_database_without_the_farms_tables_is_refused(
    tmp_path: Path, no_server: None
) -> None:
    """The files of a PostgreSQL farm, started with a database into which the dump was
    not restored (a new, empty one), or with none at all (SQLite in the data dir)."""
    data = tmp_path / "data"
    with postgres_server() as url:
        farm_that_worked(data, url)
        files = _files(data)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE fresh"))
        engine.dispose()
        fresh = make_url(url).set(database="fresh").render_as_string(hide_password=False)

        line = _start("--data-dir", str(data), "--database-url", fresh)
        assert f"error: {data} holds a farm's files (" in line, line
        assert "has no farmhand tables" in line and "pg_restore" in line, line
        check = create_engine(fresh)
        with check.connect() as connection:
            tables = connection.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar()
        check.dispose()
        assert tables == 0, "nothing was created in the new database"

        line = _start("--data-dir", str(data))
        assert "no database" in line and "starts with --database-url" in line, line
        assert _files(data) == files
        assert not (data / "farmhand.sqlite3").exists()
