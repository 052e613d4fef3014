"""What `farmhand demo` prints of its farm's logs when it fails.

The logs' tails quote what the farm's processes wrote, and they wrote what users and
workers sent them (a job's name, a worker's reason): they reach the terminal through
`cli/shown.py`, as every other text the CLI did not write itself.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from farmhand.cli import demo_cmd
from farmhand.worker.blender import discovery

LOG_TAIL = "manager: job '[/v2] \x1b[2J\x1b[31mred' failed\nworker: second line [old]"


class _FailingFarm:
    """A farm whose client cannot be made, and whose logs say hostile things."""

    stopped = False

    def __init__(self, root: Path, **options: Any) -> None:
        self.url = "http://127.0.0.1:1"

    def client(self) -> Any:
        raise RuntimeError("the manager did not start")

    def logs(self, lines: int = 40) -> str:
        return LOG_TAIL

    def stop(self) -> None:
        _FailingFarm.stopped = True


def test_a_failed_demo_prints_its_logs_as_text_not_as_terminal_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = io.StringIO()
    monkeypatch.setattr(demo_cmd, "err", Console(file=errors, width=200, color_system=None))
    monkeypatch.setattr(demo_cmd, "LocalFarm", _FailingFarm)
    monkeypatch.setattr(
        discovery, "find_blender", lambda spec: SimpleNamespace(kind="module", path=None)
    )

    code = demo_cmd.run_demo(
        tmp_path, workers=1, frames="1-2", keep=False, port=1, timeout=1.0, blender=None
    )

    printed = errors.getvalue()
    assert code == 1
    assert _FailingFarm.stopped
    assert "demo failed: the manager did not start" in printed
    assert "\x1b" not in printed, "no escape sequence reaches the terminal"
    assert "job '[/v2] ^[[2J^[[31mred' failed" in printed, "the text is shown as it is"
    assert "worker: second line [old]" in printed
    assert printed.index("manager: job") < printed.index("worker: second line"), (
        "one log line a line, as the processes wrote them"
    )
