"""One work dir is one runner: a second `farmhand worker` on it refuses to start.

Real processes: a manager and `farmhand worker` with Debian's Blender, as an operator who
starts the service twice (the default work dir is per name) would run them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm
from tests.integration.waiting import wait_for

BLENDER = "/usr/bin/blender"

pytestmark = pytest.mark.skipif(shutil.which(BLENDER) is None, reason="no Debian Blender")


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip()
    except OSError:
        return ""


def test_a_second_worker_on_the_same_work_dir_refuses_to_start(manager: LocalFarm) -> None:
    first = manager.start_worker("w", blender=BLENDER)
    assert first.process is not None
    pid = first.process.pid
    work_dir = manager.root / "workers" / "w"
    lock = work_dir / "worker.lock"
    wait_for(lambda: _holder(lock) == str(pid), 60, "the first to hold it")

    second = subprocess.run(
        [
            sys.executable, "-m", "farmhand", "worker", "--manager", manager.url,
            "--token", manager.runner_token, "--name", "w", "--work-dir", str(work_dir),
            "--blender", BLENDER,
        ],
        capture_output=True, text=True, env=manager.env(), timeout=120,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"error: another worker (pid {pid}) is running on the work dir "
        f"{work_dir}: one work dir is one runner; give each worker its own --work-dir "
        "(and --name)"
    ]
    assert first.running, "the first goes on"
    wait_for(lambda: "registered" in first.tail(200), 60, "the first to register")
    with manager.client() as client:
        assert [r.name for r in client.list_runners()] == ["w"]

    # A killed worker leaves no lock behind: the next start is the same runner again.
    first.kill()
    again = manager.start_worker("w", blender=BLENDER)
    wait_for(lambda: "identity reused" in again.tail(200), 60, "the restart to take over")
