"""A Blender that prints nothing for longer than the task timeout but computes is a slow
render, not a hung one: it is left to finish. One that neither prints nor computes is
killed, and the reason says what was seen.

The QA case: non-adaptive Cycles prints its progress every 2048-4096 samples, so a heavy
frame was killed as hung while it advanced (`sample 8193/300000`). Here a fake Blender
stands in: after `frame_started` it is silent for FAKE_SILENT seconds, spinning a core
(FAKE_WORK=spin) or asleep (FAKE_WORK=sleep), then saves the frame.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.process import RenderRequest, group_usage, render

SILENT_FAKE = r"""
import json, os, sys, time
from PIL import Image

def emit(event, **fields):
    fields["event"] = event
    print("@@farmhand@@ " + json.dumps(fields), flush=True)

emit("ready", version="0.0-fake")
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if command["cmd"] == "open":
        emit("opened", scene="Scene")
        continue
    for frame in command["frames"]:
        emit("frame_started", frame=frame)
        until = time.monotonic() + float(os.environ["FAKE_SILENT"])
        while time.monotonic() < until:
            if os.environ["FAKE_WORK"] == "sleep":
                time.sleep(0.05)
        path = os.path.join(command["output_dir"], "frame_%04d.png" % frame)
        Image.new("RGB", (8, 6)).save(path)
        emit("frame_saved", frame=frame, path=path, seconds=1.0, width=8, height=6)
    emit("render_done", frames=len(command["frames"]))
emit("bye")
"""


@pytest.fixture(scope="module")
def silent_blender(tmp_path_factory: pytest.TempPathFactory) -> BlenderInstall:
    path = tmp_path_factory.mktemp("silent-blender") / "blender"
    path.write_text(f"#!{sys.executable}\n{SILENT_FAKE}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return BlenderInstall("executable", str(path), "0.0-fake")


def test_a_silent_blender_that_computes_is_not_killed_as_hung(
    silent_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silent for 3.5 task timeouts, using CPU all along: the frame is rendered."""
    monkeypatch.setenv("FAKE_WORK", "spin")
    monkeypatch.setenv("FAKE_SILENT", "3.5")
    lines: list[str] = []
    request = RenderRequest(tmp_path / "s.blend", [1], tmp_path / "out", stall_timeout=1.0)
    result = render(silent_blender, request, log_path=tmp_path / "t.log", on_log=lines.append)
    assert result.ok, result.error
    assert not result.timed_out
    assert sorted(result.frames) == [1]
    # Said in the task's log (and so to the manager, whose own timeout counts from the
    # worker's last word): why a silent Blender is left running.
    notes = [line for line in lines if "but it is using CPU: still working, not hung" in line]
    assert len(notes) >= 3, lines
    assert notes == [line for line in lines if line.startswith("farmhand: no output")]
    assert notes[0] in (tmp_path / "t.log").read_text()


def test_a_silent_blender_that_computes_nothing_is_killed_and_told_so(
    silent_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_WORK", "sleep")
    monkeypatch.setenv("FAKE_SILENT", "30")
    request = RenderRequest(tmp_path / "s.blend", [1], tmp_path / "out", stall_timeout=1.0)
    result = render(silent_blender, request, log_path=tmp_path / "t.log")
    assert not result.ok and result.timed_out
    assert result.error == (
        "no output and no CPU use for 1 seconds (task timeout): Blender hung and was killed"
    )


def test_group_usage_counts_the_cpu_time_of_the_whole_group(tmp_path: Path) -> None:
    """One look at /proc for memory and CPU; a group that is gone is (0, 0)."""
    import os
    import subprocess
    import time

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.monotonic() + 1\nwhile time.monotonic() < end: pass",
        ],
        start_new_session=True,
    )
    try:
        time.sleep(0.2)
        rss, before = group_usage(child.pid)
        assert rss > 1_000_000
        time.sleep(0.5)
        assert group_usage(child.pid)[1] > before, "a spinning process's CPU time grows"
    finally:
        child.wait()
    assert group_usage(child.pid) == (0, 0)
    assert group_usage(os.getpid(), tmp_path / "no-proc") == (0, 0)
