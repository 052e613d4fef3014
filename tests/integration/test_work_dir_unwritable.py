"""A work dir the worker cannot write stops it at start with one `error:` line (exit 2),
with plain or JSON logs, instead of a traceback or a failure at the first task.

Real `farmhand worker` processes on read-only mounts (a tmpfs mounted `ro`: read-only
even for root, as a read-only volume is). Mounting needs root; the test is skipped where
it is not allowed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _worker(farm: LocalFarm, work_dir: Path, json_logs: bool) -> subprocess.CompletedProcess[str]:
    env = farm.env()
    if json_logs:
        env["FARMHAND_LOG_JSON"] = "1"
    return subprocess.run(
        [
            sys.executable, "-m", "farmhand", "worker", "--manager", farm.url,
            "--token", farm.runner_token, "--name", "w", "--work-dir", str(work_dir),
            "--blender", "/usr/bin/blender",
        ],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("json_logs", [False, True], ids=["plain", "json"])
def test_a_read_only_work_dir_is_one_error_line(
    manager: LocalFarm, read_only: Path, json_logs: bool
) -> None:
    done = _worker(manager, read_only / "worker", json_logs)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot use the work dir {read_only / 'worker'}: Read-only file system "
        f"({read_only / 'worker' / 'worker.lock'}); give the worker a writable --work-dir"
    ]


def test_a_read_only_cache_folder_is_one_error_line(manager: LocalFarm, tmp_path: Path) -> None:
    work_dir = tmp_path / "worker"
    cache = work_dir / "cache"
    cache.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(cache)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        done = _worker(manager, work_dir, json_logs=False)
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot write to the work dir's folder {cache}: Read-only file system; "
        "give the worker a writable --work-dir"
    ]
    with manager.client() as client:
        assert client.list_runners() == [], "it never registered"
