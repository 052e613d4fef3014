"""The scene's frame rate the submit page shows (`BlendInfo.fps`): as Blender plays it."""

from __future__ import annotations

from typing import Any

import pytest

from farmhand.manager.api.blendinfo import blend_info_model


def fps_of(facts: dict[str, Any]) -> float | None:
    info = blend_info_model("0" * 64, "shot.blend", 81, "3.4.1", facts, ["3.4.1"])
    return info.fps


@pytest.mark.parametrize(
    ("facts", "fps"),
    [
        ({"fps": 24, "fps_base": 1.0}, 24.0),
        ({"fps": 30, "fps_base": 1.001}, 29.97),  # NTSC: Blender's 29.97 preset
        ({"fps": 60, "fps_base": 1.001}, 59.94),
        ({"fps": 25}, 25.0),  # an older reader without fps_base
        ({"fps": 24, "fps_base": 0}, 24.0),  # nonsense base: the whole number
        ({}, None),
        ({"fps": "24"}, None),
        ({"fps": True}, None),
    ],
)
def test_the_frame_rate_is_fps_over_its_base(facts: dict[str, Any], fps: float | None) -> None:
    assert fps_of(facts) == fps
