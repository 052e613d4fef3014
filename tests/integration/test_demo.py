"""`farmhand demo` runs to the end, as `make demo` does, and leaves valid frames."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farmhand.shared.images import verify_image

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_demo_renders_real_frames(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "farmhand", "demo", "--dir", str(tmp_path), "--frames", "1-4"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    frames = sorted((tmp_path / "output").rglob("*.png"))
    assert len(frames) == 4
    for frame in frames:
        verify_image(frame, 320, 180)
    assert "verified" in result.stdout
    # The workers that rendered are named (the list was empty: the job was read without
    # its tasks).
    assert re.search(r"4 frames rendered by demo-worker-\d", result.stdout), result.stdout
    if shutil.which("ffprobe"):
        (video,) = (tmp_path / "output").rglob("video.mp4")
        assert "video of the frames" in result.stdout
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
             "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(video)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == "h264,4"
    # Without --keep the farm is gone when the demo ends: no address that leads nowhere.
    assert "/docs" not in result.stdout and "--keep" in result.stdout, result.stdout


def _processes_under(directory: Path) -> list[str]:
    """Command lines of the processes started with a path inside `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in command:
            found.append(command)
    return found


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_kept_demo_stopped_by_a_signal_stops_its_farm(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """`kill` (or a closed terminal) stops `farmhand demo --keep` as Ctrl-C does: its
    manager, workers and their Blenders go with it. They were left running, with a
    manager on its port and nobody to stop them."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "farmhand", "demo", "--keep", "--dir", str(tmp_path),
         "--frames", "1-2", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    said = []
    for line in demo.stdout:
        said.append(line)
        if "serving until" in line:
            break
    assert _processes_under(tmp_path), "".join(said)  # the farm is up
    demo.send_signal(stop)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 128 + stop, "".join(said) + rest
    assert "stopping" in rest
    left = _processes_under(tmp_path)
    deadline = time.monotonic() + 10  # the manager's own children go as it stops
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_under(tmp_path)
    assert left == [], left
