"""The local farm's process handling, with stand-in processes (no farmhand inside)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from farmhand.localfarm import Child, FarmStartError, LocalFarm, free_port


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_ends_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = Child(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\ntime.sleep(60)",
        ],
        tmp_path / "stubborn.log",
        {},
    ).start()
    stubborn.stop(timeout=1)
    assert not stubborn.running


def test_a_manager_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    farm = LocalFarm(tmp_path)
    farm.manager = farm._start("manager", [sys.executable, "-c", "print('bad config'); exit(3)"])
    with pytest.raises(FarmStartError, match="bad config"):
        farm.wait_healthy(timeout=10)
    assert farm.dead() == [farm.manager]


def test_children_get_the_farm_tokens(tmp_path: Path) -> None:
    farm = LocalFarm(tmp_path)
    env = farm.env()
    assert env["FARMHAND_ADMIN_TOKEN"] == farm.admin_token
    assert env["FARMHAND_RUNNER_TOKEN"] == farm.runner_token
    assert farm.admin_token != farm.runner_token
