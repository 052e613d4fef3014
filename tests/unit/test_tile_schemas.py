"""What a tiled job may be (`JobSettings._check_tiles`): a range of frames, each in tiles,
up to `MAX_TASKS_PER_JOB` tasks; never a video or JPEG."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from farmhand.shared.schemas import MAX_TASKS_PER_JOB, JobSettings, TileGrid

GRID = {"columns": 16, "rows": 16}
"""256 tiles a frame: 257 tasks with its merge."""


def test_a_range_with_a_step_in_tiles_is_accepted() -> None:
    settings = JobSettings(frame_start=7, frame_end=11, frame_step=2, chunk_size=5, tiles=GRID)
    assert settings.tiles == TileGrid(columns=16, rows=16)
    assert (settings.frame_start, settings.frame_end, settings.frame_step) == (7, 11, 2)


def test_a_tiled_job_may_have_as_many_tasks_as_the_longest_animation() -> None:
    most = MAX_TASKS_PER_JOB // 257  # 389 frames: 99,973 tasks
    assert JobSettings(frame_start=1, frame_end=most, tiles=GRID).tiles is not None
    with pytest.raises(ValidationError) as refused:
        JobSettings(frame_start=1, frame_end=most + 1, tiles=GRID)
    said = str(refused.value)
    assert "390 frames in 256 tiles is 100230 tasks" in said
    assert f"more than the {MAX_TASKS_PER_JOB} a job may have" in said
    stepped = {"frame_start": 1, "frame_end": 2 * most - 1, "frame_step": 2, "tiles": GRID}
    assert JobSettings.model_validate(stepped).tiles is not None, "the step counts"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"output_format": "JPEG"}, "not JPEG"),
    ],
)
def test_what_a_tiled_range_cannot_be(settings: dict[str, Any], said: str) -> None:
    tiled: dict[str, Any] = {"frame_start": 1, "frame_end": 3, "tiles": {"columns": 2, "rows": 2}}
    with pytest.raises(ValidationError, match=said):
        JobSettings.model_validate(tiled | settings)


def test_a_tiled_range_may_ask_for_a_video() -> None:
    tiled: dict[str, Any] = {"frame_start": 1, "frame_end": 3, "tiles": {"columns": 2, "rows": 2}}
    assert JobSettings.model_validate(tiled | {"video": True}).video is not None
