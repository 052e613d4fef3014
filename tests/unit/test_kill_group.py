"""Stopping a task's Blender stops its whole process group, with real processes.

A Blender that obeys SIGTERM may leave behind a child that ignores it (a wrapper's
helper, a script's subprocess); that child must not go on using the machine after its
task was stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from farmhand.worker.blender.process import kill_group
from tests.unit.test_blender_orphans import alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")

# Blender here: starts a child in its own group that ignores SIGTERM, tells its pid,
# then waits; SIGTERM ends it (Python's default), not the child.
LEADER = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_that_ignores_sigterm_is_killed_with_its_blender() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        assert alive(child)

        kill_group(leader)

        assert leader.poll() is not None, "Blender itself is stopped"
        end = time.monotonic() + 5  # a bounded wait: the kernel may take a moment
        while alive(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(child), "the child that ignored SIGTERM was left running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_a_blender_that_obeys_sigterm_is_not_killed() -> None:
    """The common case: Blender ends on SIGTERM with nothing left, and is not sent the
    SIGKILL meant for what ignores it (a SIGTERM lets it clean up)."""
    leader = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    kill_group(leader)
    assert leader.returncode == -signal.SIGTERM
