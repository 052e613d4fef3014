"""Frame ranges: parsing what people type, and the limits every entry point enforces.

Used by the manager (job settings), the CLI (before anything is uploaded) and the node,
so `1-250`, `1-250x5` and `7` mean the same everywhere and a range that would create a
million tasks is refused in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_FRAME = 1_048_574
"""Blender's own limit (MAXFRAME); frames may be negative down to -MAX_FRAME."""
MAX_FRAMES_PER_JOB = 100_000

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?:x\s*(\d+)\s*)?)?$")


class FrameRangeError(ValueError):
    """A frame range a person typed is malformed or out of bounds; says which."""


def check_frame(frame: int, what: str = "frame") -> int:
    """Refuse anything Blender would clamp or choke on; bools are not frames even if ints."""
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise FrameRangeError(f"{what} must be a whole number, not {frame!r}")
    if not -MAX_FRAME <= frame <= MAX_FRAME:
        raise FrameRangeError(f"{what} {frame} is outside Blender's range ±{MAX_FRAME}")
    return frame


def frame_label(frame: int) -> str:
    """A frame number in stored file names: `0007`, and `m0007` for frame -7 (a leading
    minus would sort and read badly)."""
    return f"{frame:04d}" if frame >= 0 else f"m{-frame:04d}"


def frame_list(start: int, end: int, step: int = 1) -> list[int]:
    """The frames from `start` to `end` inclusive, every `step`-th, after checking limits."""
    check_frame(start, "start frame")
    check_frame(end, "end frame")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise FrameRangeError(f"step must be a whole number of at least 1, not {step!r}")
    if end < start:
        raise FrameRangeError(f"end frame {end} is before start frame {start}")
    count = (end - start) // step + 1
    if count > MAX_FRAMES_PER_JOB:
        raise FrameRangeError(
            f"{count} frames is more than the {MAX_FRAMES_PER_JOB} a job may have"
        )
    return list(range(start, end + 1, step))


def parse_frame_spec(text: str) -> tuple[int, int, int]:
    """`"1-250"`, `"1-250x5"` (every 5th) or `"7"` → checked (start, end, step)."""
    match = _RANGE.match(text)
    if match is None:
        raise FrameRangeError(
            f"{text!r} is not a frame range; write START-END, START-ENDxSTEP or one frame"
        )
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    step = int(match.group(3)) if match.group(3) is not None else 1
    frame_list(start, end, step)
    return start, end, step


def parse_frame_range(text: str) -> list[int]:
    """The frames a `parse_frame_spec` range names."""
    return frame_list(*parse_frame_spec(text))


def chunk_frames(frames: Sequence[int], chunk_size: int) -> list[list[int]]:
    """Split frames into consecutive chunks of at most `chunk_size` (one task each)."""
    if chunk_size < 1:
        raise FrameRangeError(f"chunk size must be at least 1, not {chunk_size}")
    return [list(frames[i : i + chunk_size]) for i in range(0, len(frames), chunk_size)]
