"""A second manager on a data dir whose SQLite database another process has open.

Two managers on one SQLite file write one database; and a newer manager started beside an
older one migrated the schema under it while it went on serving, writing rows its code
did not know how to fill (a blob a job used left unmarked, new columns NULL). The start
is refused instead, naming the other process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from farmhand.localfarm import free_port, local_farm

HOLD = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
connection.execute("SELECT count(*) FROM jobs").fetchall()
print("open", flush=True)
sys.stdin.read()
"""
"""An older manager, as far as SQLite can tell: a process with the file open and no lock
of farmhand's."""


def _second_manager(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmhand", "manager", "--data-dir", str(data_dir),
         "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_a_second_manager_on_the_same_data_dir_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    with local_farm(tmp_path) as farm:
        first = farm.start_manager()
        assert first.process is not None
        second = _second_manager(farm.data_dir, farm.env())
        assert second.returncode == 1, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
        assert f"pid {first.process.pid}" in lines[0] and "Stop it first" in lines[0]
        assert "listening" not in second.stdout + second.stderr
        answer = httpx.get(
            f"{farm.url}/api/jobs", headers={"Authorization": f"Bearer {farm.admin_token}"}
        )
        assert answer.status_code == 200


def test_a_process_without_farmhands_lock_holding_the_database_is_seen_too(
    tmp_path: Path,
) -> None:
    """What an older manager looks like: it takes no lock of farmhand's, only SQLite's."""
    with local_farm(tmp_path) as farm:
        farm.start_manager().stop()
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(farm.data_dir / "farmhand.sqlite3")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
            refused = _second_manager(farm.data_dir, farm.env())
            assert refused.returncode == 1, refused.stderr
            assert f"pid {holder.pid}" in refused.stderr
        finally:
            holder.communicate("")
        # Once it has closed the file, the same start goes ahead.
        farm.start_manager()
        assert httpx.get(f"{farm.url}/healthz").status_code == 200


@pytest.mark.parametrize("processes", ["2"])
def test_a_manager_with_several_processes_restarts_on_its_own_data_dir(
    tmp_path: Path, processes: str
) -> None:
    """Its servers have the file open while it runs, not at its next start."""
    with local_farm(tmp_path) as farm:
        farm.start_manager("--processes", processes).stop()
        farm.start_manager("--processes", processes)
        assert httpx.get(f"{farm.url}/healthz").status_code == 200
