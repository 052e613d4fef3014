"""Every numeric manager setting is checked against one rule (`settings.BOUNDS`), set by
a flag or by a variable alone: a value the manager cannot use stops it at start, in one
line naming the variable, the value and what is allowed, instead of a 500 from `admin
gc`, every upload refused, or garbage collection quietly off."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from farmhand.cli import manager_cmd
from farmhand.cli.app import app
from farmhand.manager import app as manager_app
from farmhand.manager.settings import BOUNDS, AuthSettings, ManagerSettings, SettingsError

NEVER_VALID = ("nan", "inf", "-inf", "-1", "1e300", "abc")
"""No numeric setting admits any of these."""


def _refusal(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: list[str]) -> str:
    """What `farmhand manager ARGS` says when it refuses to start (it must not start)."""
    monkeypatch.setattr(manager_app, "prepare", pytest.fail)
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
    for name in env:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["manager", *args], env=env)
    assert result.exit_code == 1, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("FARMHAND_BLOB_RETENTION_DAYS", "nan", "a number from 0 to 36525 (days)"),
        ("FARMHAND_BLOB_RETENTION_DAYS", "1e12", "a number from 0 to 36525 (days)"),
        ("FARMHAND_MAX_OPEN_UPLOADS", "-1", "a whole number from 0 to"),
        ("FARMHAND_GC_INTERVAL", "-1", "a number from 0 to 3155760000 (seconds)"),
        ("FARMHAND_BLOB_GRACE_SECONDS", "inf", "a number from 0 to 3155760000 (seconds)"),
        ("FARMHAND_MAX_BODY_BYTES", "0", "a whole number from 1 to"),
        ("FARMHAND_LOGIN_WINDOW", "0", "a number above 0 and at most 3155760000"),
        ("FARMHAND_LOGIN_FAILURES_PER_ACCOUNT", "abc", "a whole number from 1 to"),
        # Variables of an option: the option's range (a minimum) lets these through.
        ("FARMHAND_HEARTBEAT_TIMEOUT", "1e300", "a number from 1 to 3155760000 (seconds)"),
        ("FARMHAND_TASK_TIMEOUT", "inf", "a number from 1 to 3155760000 (seconds)"),
    ],
)
def test_a_variable_out_of_range_stops_the_manager_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    said = _refusal(monkeypatch, {variable: value}, [])
    assert said.startswith(f"error: {variable}='{value}' is not {allowed}"), said
    assert "Traceback" not in said


def test_a_flag_the_option_range_lets_through_is_refused_by_the_same_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said = _refusal(monkeypatch, {}, ["--client-timeout", "inf"])
    assert said == "error: --client-timeout=inf is not a number from 1 to 3155760000 (seconds)"


@pytest.mark.parametrize("name", sorted(BOUNDS))
@pytest.mark.parametrize("text", NEVER_VALID)
def test_no_setting_takes_a_value_it_cannot_use(name: str, text: str) -> None:
    variable = f"FARMHAND_{name.upper()}"
    with pytest.raises(SettingsError, match=f"^{variable}="):
        BOUNDS[name].parse(variable, text)
    if text == "abc":
        return
    flag = f"^--{name.replace('_', '-')}="
    for value in (float(text), -1, 2**64) if BOUNDS[name].whole else (float(text),):
        with pytest.raises(SettingsError, match=flag):
            ManagerSettings.from_env({}, **{name: value})


def test_values_in_range_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ManagerSettings.from_env(
        {
            "FARMHAND_GC_INTERVAL": "0",
            "FARMHAND_MAX_OPEN_UPLOADS": "0",
            "FARMHAND_BLOB_RETENTION_DAYS": "0.5",
            "FARMHAND_JOB_FAILURE_SHARE": "1",
            "FARMHAND_LOGIN_FAILURES_PER_ADDRESS": "12",
        }
    )
    assert settings.gc_interval == 0.0, "0 is documented as off"
    assert settings.max_open_uploads == 0, "0 is documented as no limit"
    assert settings.blob_retention_days == 0.5
    assert settings.job_failure_share == 1.0
    assert settings.auth.login_failures_per_address == 12


def _numeric_fields(cls: type) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(cls)
        if any(kind in str(f.type) for kind in ("int", "float"))
    }


def test_every_numeric_setting_has_a_rule_its_default_keeps() -> None:
    numeric = _numeric_fields(ManagerSettings) | _numeric_fields(AuthSettings)
    assert numeric == set(BOUNDS)
    defaults = {**vars(AuthSettings()), **vars(ManagerSettings())}
    for name, bounds in BOUNDS.items():
        if defaults[name] is not None:
            assert bounds.admits(defaults[name]), name


def test_the_command_line_options_declare_the_same_ranges() -> None:
    """`farmhand manager` checks its options' ranges itself, before the settings see
    them; they must be the settings' rule, or a flag and its variable would differ."""
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    checked = 0
    for param in command.commands["manager"].params:
        bounds = BOUNDS.get(param.name or "")
        if bounds is None:
            continue
        assert getattr(param, "min", None) == bounds.low, param.name
        assert not bounds.above_low, f"{param.name}: an option's minimum is allowed"
        assert getattr(param, "max", None) in (None, bounds.high), param.name
        checked += 1
    assert checked >= 10


def test_a_real_manager_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "FARMHAND_GC_INTERVAL": "-1"}
    env.pop("FARMHAND_LOG_JSON", None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    try:
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "farmhand",
                "manager",
                "--port",
                port,
                "--data-dir",
                str(tmp_path / "data"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the manager started (it was still running a minute later)")
    assert started.returncode == 1
    assert started.stderr.strip().splitlines() == [
        "error: FARMHAND_GC_INTERVAL='-1' is not a number from 0 to 3155760000 (seconds)"
    ]
    assert not (tmp_path / "data").exists(), "refused before the data dir is made"


@pytest.mark.parametrize(
    "command",
    [["users", "list"], ["backup", "{tmp}/copy"]],
    ids=["users", "backup"],
)
def test_the_other_commands_reading_the_settings_say_it_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    """`farmhand users` and `farmhand backup` read the manager's settings too: a bad
    FARMHAND_* variable was a traceback there."""
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    env = {"FARMHAND_GC_INTERVAL": "-1", "FARMHAND_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, args, env=env)
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "FARMHAND_GC_INTERVAL='-1' is not a number from 0 to" in said, said
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
