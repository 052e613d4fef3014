"""A token no manager could accept (an accent, a space, a newline) is said to be the
problem, in one line, by every command that sends one; the manager is never asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.cli.app import app
from tests.unit.test_cli_errors import _worker_must_not_start, one_error_line, runner


@pytest.mark.parametrize("token", ["é", "   ", "fh_api_abc\n", "fh api"], ids=repr)
@pytest.mark.parametrize("command", [["jobs"], ["job", "1"], ["admin", "usage"], ["runners"]])
def test_a_token_with_characters_no_token_has_is_said_to_be_the_problem(
    command: list[str], token: str, tmp_path: Path
) -> None:
    """Not a UnicodeEncodeError traceback, not `cannot reach the manager`: the manager
    (here: none at all) is never asked."""
    env = {"FARMHAND_CONFIG": str(tmp_path / "none.toml"), "FARMHAND_URL": "http://127.0.0.1:9"}
    by_env = runner.invoke(app, command, env={**env, "FARMHAND_TOKEN": token})
    line = one_error_line(by_env)
    assert "the API token from FARMHAND_TOKEN is not a valid farmhand token" in line, line
    assert "characters a token never has" in line and "reach" not in line, line
    by_flag = one_error_line(runner.invoke(app, [*command, "--token", token], env=env))
    assert "the API token from --token is not a valid farmhand token" in by_flag, by_flag


def test_a_token_in_the_config_file_is_checked_and_named(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('token = "fh_api_abc "\n')
    env = {"FARMHAND_CONFIG": str(config), "FARMHAND_URL": "http://127.0.0.1:9"}
    line = one_error_line(runner.invoke(app, ["jobs"], env=env))
    assert f"the API token from {config} is not a valid farmhand token" in line, line


def test_the_worker_refuses_a_registration_token_no_manager_could_accept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _worker_must_not_start(monkeypatch)
    result = runner.invoke(
        app, ["worker", "--manager", "http://127.0.0.1:9", "--token", "é", "--name", "w1",
              "--work-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "registration token" in result.output and "not a valid farmhand token" in result.output
