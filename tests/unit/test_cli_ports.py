"""Every command that listens takes a port 1-65535 and refuses others as a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.cli.app import app
from farmhand.manager import app as manager_app
from tests.unit.test_cli_errors import _must_not_start, runner


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1"])
def test_server_commands_refuse_a_port_outside_1_to_65535(
    monkeypatch: pytest.MonkeyPatch, port: str, tmp_path: Path
) -> None:
    """The OS takes a port modulo 65536: 99999 would serve on 34463 while the command
    prints 99999. A usage error instead, for every command that listens."""
    monkeypatch.setattr(manager_app, "prepare", _must_not_start)
    blend = tmp_path / "a.blend"
    blend.write_bytes(b"blend")
    for command in (
        ["manager", "--data-dir", str(tmp_path)],
        ["node", "--blend", str(blend), "--output", str(tmp_path)],
        ["orchestrator", "--node", "http://127.0.0.1:3000"],
    ):
        result = runner.invoke(app, [*command, "--port", port])
        assert result.exit_code == 2, (command, result.output)
        assert "--port" in result.output and "Traceback" not in result.output


def test_the_demo_takes_nothing_past_65535_either() -> None:
    """(Its 0 stays: the demo's own farm picks a free port and prints the real one.)"""
    assert runner.invoke(app, ["demo", "--port", "65536"]).exit_code == 2
    assert runner.invoke(app, ["demo", "--port", "-1"]).exit_code == 2
