"""Helpers of `farmhand demo` (the end-to-end run is an integration test)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.cli.demo_cmd import child_env, free_port, log_tail, manager_command, worker_command


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_child_commands_use_this_python_and_pass_tokens(tmp_path: Path) -> None:
    cmd = manager_command(tmp_path / "data", 8123)
    assert cmd[:4] == [sys.executable, "-m", "farmhand", "manager"]
    assert cmd[cmd.index("--port") + 1] == "8123"
    wcmd = worker_command("http://127.0.0.1:8123", "rt", 2, tmp_path / "w2")
    assert wcmd[wcmd.index("--name") + 1] == "demo-worker-2"
    assert wcmd[wcmd.index("--token") + 1] == "rt"
    env = child_env("admin", "runner")
    assert env["FARMHAND_ADMIN_TOKEN"] == "admin" and env["FARMHAND_RUNNER_TOKEN"] == "runner"


def test_log_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_text("\n".join(str(i) for i in range(100)))
    assert log_tail(log, 3) == ["97", "98", "99"]
    assert log_tail(tmp_path / "missing.log") == []


def test_demo_rejects_bad_arguments() -> None:
    result = CliRunner().invoke(app, ["demo", "--workers", "0"])
    assert result.exit_code == 2
