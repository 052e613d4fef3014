"""Every command that listens takes a port 1-65535 and refuses others as a usage error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from farmhand.cli import manager_cmd
from farmhand.cli.app import app
from farmhand.manager import app as manager_app
from tests.unit.test_cli_errors import _must_not_start, one_error_line, runner


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


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_manager_on_a_port_in_use_says_so_in_one_line_without_claiming_to_listen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, processes: str
) -> None:
    """It printed `farmhand manager listening on …`, then died with uvicorn's `[Errno 98]
    Address already in use` (with `--processes`, after migrating the database)."""
    monkeypatch.setattr(manager_app, "prepare", _must_not_start)
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app,
            ["manager", "--data-dir", str(tmp_path / "data"), "--port", str(port),
             "--processes", processes],
        )  # fmt: skip
    line = one_error_line(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "listening" not in result.output


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)],
)
def test_a_manager_only_this_machine_can_reach_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str, warned: bool
) -> None:
    """Newcomer QA: a second machine's worker could not join a manager started as the
    README said (127.0.0.1, the default), and nothing said why. Now the start says so."""
    import uvicorn

    from farmhand.manager import heap

    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: None)  # started, not served
    monkeypatch.setattr(heap, "freeze_startup_objects", lambda: 0)  # not this test process
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
    result = runner.invoke(
        app, ["manager", "--data-dir", str(tmp_path / "data"), "--host", host, "--port", "8099"]
    )
    assert result.exit_code == 0, result.output
    assert f"listening on http://{host}:8099 (web UI: /, API docs: /docs)" in result.output
    said = "Only this machine can reach it: for workers on other machines" in result.output
    assert said == warned, result.output
