"""Frame ranges as people type them, and the limits that keep a typo from making a million tasks."""

from __future__ import annotations

import pytest

from farmhand.shared.frames import (
    MAX_FRAME,
    MAX_FRAMES_PER_JOB,
    FrameRangeError,
    chunk_frames,
    frame_list,
    parse_frame_range,
)


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("5", [5]),
        ("1-10x3", [1, 4, 7, 10]),
        (" 2 - 4 ", [2, 3, 4]),
        ("-3--1", [-3, -2, -1]),
        (f"{MAX_FRAME}", [MAX_FRAME]),
        (f"-{MAX_FRAME}", [-MAX_FRAME]),
    ],
)
def test_parses_ranges(text: str, frames: list[int]) -> None:
    assert parse_frame_range(text) == frames


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a frame range"),
        ("abc", "not a frame range"),
        ("1-5; rm -rf /", "not a frame range"),
        ("1.5", "not a frame range"),
        ("5-1", "before start"),
        ("1-10x0", "step"),
        (f"{MAX_FRAME + 1}", "outside"),
        (f"-{MAX_FRAME + 1}", "outside"),
        (f"1-{MAX_FRAMES_PER_JOB + 1}", "more than"),
    ],
)
def test_rejects_bad_ranges_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(FrameRangeError, match=message):
        parse_frame_range(text)


def test_frame_range_error_is_a_value_error() -> None:
    assert issubclass(FrameRangeError, ValueError)


def test_the_largest_allowed_job_is_accepted() -> None:
    assert len(parse_frame_range(f"1-{MAX_FRAMES_PER_JOB}")) == MAX_FRAMES_PER_JOB
    # a wide range with a step is fine as long as the frame count is within the limit
    assert len(parse_frame_range(f"-{MAX_FRAME}-{MAX_FRAME}x100")) <= MAX_FRAMES_PER_JOB


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_frame_list_refuses_non_integers(bad: object) -> None:
    with pytest.raises(FrameRangeError, match="whole number"):
        frame_list(bad, 5)  # type: ignore[arg-type]


def test_chunks_are_consecutive_and_cover_every_frame() -> None:
    assert chunk_frames([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunk_frames([1, 2], 10) == [[1, 2]]
    assert chunk_frames([], 3) == []
    with pytest.raises(FrameRangeError):
        chunk_frames([1], 0)
