"""A manager's server process sets its start-up objects aside from the garbage collector
(`manager/heap.py`), so a request that makes many containers (a megabyte of empty JSON
lists, parsed before anyone knows who sent it) does not walk them all, over and over.

Run in a child process: freezing this test process's heap would keep every later test's
leftovers from ever being collected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from farmhand.manager.app import PROCESS_SETTINGS, prepare
from tests.integration.conftest import make_settings

CHILD = """
import gc
from farmhand.manager.app import app_from_environment
app = app_from_environment()
print(gc.get_freeze_count())
"""


def test_a_server_process_freezes_what_it_started_with(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    context, _ = prepare(settings)  # what `farmhand manager --processes N` does first
    context.db.dispose()
    env = {
        **os.environ,
        PROCESS_SETTINGS: json.dumps({"data_dir": str(settings.data_dir)}),
        "FARMHAND_ADMIN_TOKEN": settings.admin_token or "",
        "FARMHAND_RUNNER_TOKEN": settings.runner_token or "",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    frozen = int(done.stdout.strip().splitlines()[-1])
    assert frozen > 50_000, "the app's modules, routes and schemas are set aside"
