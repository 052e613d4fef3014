"""A damaged SQLite database (truncated by a full disk or a bad copy, or overwritten):
`farmhand manager`, `farmhand users` and `farmhand backup` say so in one line naming the
file and what to do, instead of a 445-line traceback from the first connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from farmhand.cli.app import app
from farmhand.manager.app import prepare
from farmhand.manager.settings import ManagerSettings
from tests.manager_env import clear_manager_env, forbid_serving
from tests.unit.test_cli_errors import one_error_line, runner


@pytest.fixture(autouse=True)
def _no_manager_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_manager_env(monkeypatch)
    yield
    # The CLI leaves structlog writing to CliRunner's stderr, closed by now: later tests
    # in this process that start a manager would fail to log.
    structlog.reset_defaults()


def _damaged(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A data dir made by a manager's first start whose database is then damaged; the
    data dir and the database file."""
    data = tmp_path / "data"
    context, _ = prepare(ManagerSettings(data_dir=data))
    context.db.dispose()
    database = data / "farmhand.sqlite3"
    pages = database.read_bytes()
    if how == "truncated":
        database.write_bytes(pages[: len(pages) // 2 // 4096 * 4096])
    else:
        database.write_bytes(b"not a database at all" * 500)
    return data, database


@pytest.mark.parametrize(
    ("how", "said"),
    [("truncated", "database disk image is malformed"), ("overwritten", "file is not a database")],
)
def test_a_damaged_database_is_said_in_one_line_by_each_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str, said: str
) -> None:
    data, database = _damaged(tmp_path, how)
    forbid_serving(monkeypatch)
    damage = f"the database {database} is damaged ({said})"

    line = one_error_line(runner.invoke(app, ["manager", "--port", "9", "--data-dir", str(data)]))
    assert line.startswith(f"error: {damage}: stop the manager and restore"), line
    assert "farmhand backup" in line and "Backup and restore" in line, line

    line = one_error_line(runner.invoke(app, ["users", "list", "--data-dir", str(data)]))
    assert line.startswith(f"error: {damage}: stop the manager and restore"), line

    dest = tmp_path / "backup"
    result = runner.invoke(
        app, ["backup", str(dest), "--data-dir", str(data)], env={"COLUMNS": "400"}
    )
    line = one_error_line(result)
    assert line.startswith(f"error: {damage}, so it cannot be backed up: restore"), line
    assert not dest.exists()
