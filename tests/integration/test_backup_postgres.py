"""Restoring a PostgreSQL farm as `farmhand backup --files-only` says to.

Before, the hint read `Restore: stop the manager, then start it on the copy (farmhand
manager --data-dir DEST)`: run as printed, with no `--database-url`, it started a new,
empty SQLite farm on the copy (new admin token over the copy's, and its garbage
collection would have deleted every copied file). Now the hint names pg_restore and
`--database-url`; the command it used to print is refused in one line; and following
the new hint gives back the farm, reached with the copy's own admin token.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from farmhand.manager.app import create_app
from farmhand.manager.settings import ManagerSettings
from tests.integration.postgres import fresh_database, postgres_bin, postgres_server
from tests.integration.test_missing_database import farm_that_worked, invoke
from tests.manager_env import clear_manager_env, forbid_serving
from tests.unit.test_cli_errors import one_error_line

pytestmark = pytest.mark.skipif(
    postgres_bin() is None, reason="Debian's postgresql is not installed"
)


@pytest.fixture(autouse=True)
def _no_manager_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options under test, not whatever manager this shell points at; and a manager
    that gets as far as serving fails the test instead of blocking it."""
    clear_manager_env(monkeypatch)
    forbid_serving(monkeypatch)
    structlog.reset_defaults()  # `invoke` says why


def _libpq(url: str) -> str:
    """The URL as PostgreSQL's own tools take it (no `+psycopg`)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_files_only_backup_restores_as_its_hint_says_and_not_without_the_database(
    tmp_path: Path,
) -> None:
    data, dest, dump = tmp_path / "data", tmp_path / "backup", tmp_path / "farm.pgdump"
    bin_dir = postgres_bin()
    assert bin_dir is not None
    with postgres_server() as server:
        url = fresh_database(server, "farm")
        farm_that_worked(data, url)
        subprocess.run(
            [bin_dir / "pg_dump", "--format=custom", f"--file={dump}", _libpq(url)], check=True
        )
        result = invoke(
            ["backup", str(dest), "--files-only", "--data-dir", str(data), "--database-url", url],
        )
        assert result.exit_code == 0, result.output
        hint = result.output[result.output.index("Restore:") :].splitlines()
        restore, start = (line.strip() for line in hint[1:3])
        assert restore.startswith("pg_restore ") and restore.endswith(" DUMPFILE"), hint
        assert start == f"farmhand manager --data-dir {dest} --database-url {url}", hint
        admin_token = (dest / "admin-token").read_text()

        # What the old hint said to run: refused, and the copy left as it was.
        line = one_error_line(invoke(["manager", "--port", "9", "--data-dir", str(dest)]))
        assert f"{dest} holds a farm's files" in line and "--database-url" in line, line
        assert (dest / "admin-token").read_text() == admin_token
        assert not (dest / "farmhand.sqlite3").exists()

        # The database is lost; follow the hint: pg_restore into a new one, then start.
        fresh_database(server, "farm")
        command = shlex.split(restore.replace("DUMPFILE", str(dump)))
        subprocess.run([bin_dir / command[0], *command[1:]], check=True)
        settings = ManagerSettings(data_dir=dest, database_url=url)
        with TestClient(create_app(settings)) as client:
            jobs = client.get(
                "/api/jobs", headers={"Authorization": f"Bearer {admin_token.strip()}"}
            )
            assert jobs.status_code == 200, jobs.text
            assert [job["id"] for job in jobs.json()] == [1]
        assert (dest / "admin-token").read_text() == admin_token
