"""`farmhand demo` runs to the end, as `make demo` does, and leaves valid frames."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
