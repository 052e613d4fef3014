"""A tile grid finer than the frame, in real Blender: the task fails at once with the
frame's size and the most rows it may have, and nothing is rendered.

The QA case: the 64x48 scene at 25 % is 16x12 px; 4x16 tiles would be under a pixel high.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameStarted
from farmhand.worker.blender.process import RenderRequest, render

pytestmark = pytest.mark.blender


def test_rows_finer_than_the_frame_fail_before_rendering(
    blender_module: BlenderInstall, animated_blend: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    request = RenderRequest(
        animated_blend,
        [1],
        tmp_path / "out",
        resolution_percentage=25,
        tile={"column": 0, "row": 0, "columns": 4, "rows": 16, "overlap": 0},
    )
    result = render(blender_module, request, log_path=tmp_path / "t.log", on_event=events.append)
    assert not result.ok
    assert result.error == (
        "the frame is 16x12 px: 16 rows of tiles would make tiles under 1 px high; "
        "use at most 12 rows"
    )
    assert not any(isinstance(event, FrameStarted) for event in events), "nothing rendered"
    assert not list((tmp_path / "out").glob("frame_*")), "no file written"
