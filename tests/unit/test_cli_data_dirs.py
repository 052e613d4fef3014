"""A worker name the manager would refuse, a data dir without a database, a data dir
that cannot be made: one `error:` line at start, not a traceback from deep inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.cli import manager_cmd
from farmhand.cli.app import app
from farmhand.manager import app as manager_app
from farmhand.manager.settings import ManagerSettings
from tests.unit.test_cli_errors import _worker_must_not_start, one_error_line, runner


@pytest.mark.parametrize("name", ["../bad", "-x", "a b", "x" * 101, "é"])
def test_the_worker_says_what_a_name_may_be_before_starting(
    monkeypatch: pytest.MonkeyPatch, name: str, tmp_path: Path
) -> None:
    _worker_must_not_start(monkeypatch)
    result = runner.invoke(
        app, ["worker", "--manager", "http://127.0.0.1:9", "--token", "x", "--name", name,
              "--blender", "bpy", "--work-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --name {name!r}: a worker name is 1-100 letters")
    assert "Traceback" not in result.output and "pydantic" not in result.output


def test_users_commands_say_there_is_no_database_at_a_wrong_data_dir(tmp_path: Path) -> None:
    """Not an sqlalchemy OperationalError; and an empty folder gets no new database that
    no manager reads."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"FARMHAND_DATABASE_URL": ""}
    for where in (tmp_path / "nonexistent", empty, Path("/proc/x")):
        for command in (["list"], ["disable", "ana"], ["create", "bo", "--no-password"]):
            args = ["users", *command, "--data-dir", str(where)]
            line = one_error_line(runner.invoke(app, args, env=env))
            assert f"no farmhand database in {where}" in line, line
    assert list(empty.iterdir()) == []


def test_users_commands_say_why_a_database_cannot_be_opened(tmp_path: Path) -> None:
    url = "postgresql+psycopg://u:secret@127.0.0.1:9/farmhand"
    line = one_error_line(runner.invoke(app, ["users", "list", "--database-url", url]))
    assert line.startswith("error: cannot use the farmhand database (--database-url): "), line
    assert "secret" not in line


def _manager_started(monkeypatch: pytest.MonkeyPatch) -> list[ManagerSettings]:
    started: list[ManagerSettings] = []

    def prepare(settings: ManagerSettings) -> None:
        started.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(manager_app, "prepare", prepare)
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
    return started


def test_the_manager_refuses_a_data_dir_it_cannot_create_or_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started = _manager_started(monkeypatch)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for data_dir, said in (
        ("/proc/x", "cannot create the folder /proc/x"),
        (str(a_file), f"{a_file}: it is not a folder"),
        (str(a_file / "data"), f"{a_file} is not a folder"),
    ):
        line = one_error_line(runner.invoke(app, ["manager", "--data-dir", data_dir]))
        assert line.startswith("error: the data dir cannot be used: ") and said in line, line
    assert started == []
    runner.invoke(app, ["manager", "--data-dir", str(tmp_path / "new" / "data")])
    assert len(started) == 1, "a data dir that can be made is fine"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("FARMHAND_PATH_VARIABLES", '{"projects": {"linux": "rel/path"}}', "is not absolute"),
        ("FARMHAND_PATH_VARIABLES", '{"projects": ', "Expecting value"),
        ("FARMHAND_PATH_VARIABLES", '["/mnt/projects"]', "expected a JSON object"),
    ],
)
def test_the_manager_names_a_setting_it_cannot_use_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, said: str
) -> None:
    """STORAGE.md: a bad path variable "stops it with a message", not a traceback."""
    started = _manager_started(monkeypatch)
    result = runner.invoke(
        app, ["manager", "--data-dir", str(tmp_path / "data")], env={variable: value}
    )
    line = one_error_line(result)
    assert line.startswith(f"error: {variable}={value!r} is not "), line
    assert said in line, line
    assert result.exit_code == 1 and started == []
