"""A manager stopped by SIGTERM (systemd's `stop`, `docker stop`, a supervisor) exits 0.

Uvicorn stops cleanly on SIGTERM and then raises the signal again with the default
handler put back, so a one-process manager died "killed by SIGTERM": status -15, which
systemd marks `failed` (and restart policies count) unless told otherwise. With
`--processes N` the process is uvicorn's supervisor, which already exited 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from farmhand.localfarm import descendants, local_farm

pytestmark = pytest.mark.xdist_group("manager-processes")


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_a_manager_stopped_by_sigterm_exits_0(tmp_path: Path, processes: int) -> None:
    with local_farm(tmp_path) as farm:
        manager = farm.start_manager(*(["--processes", "2"] if processes > 1 else []))
        assert manager.process is not None
        if processes > 1:  # both server processes up, as a running farm's are
            deadline = time.monotonic() + 30
            while len(descendants(manager.process.pid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        manager.terminate()
        manager.process.wait(30)  # raises if the manager does not stop by itself
        log = manager.log_path.read_text(encoding="utf-8", errors="replace")
    assert manager.process.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
