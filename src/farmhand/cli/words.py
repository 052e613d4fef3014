"""How the CLI writes counts and frame lists, in one place so every command says them
alike: `1 frame`, `6 passes`, and a task's frames as `--frames` takes them (`1-10x3`)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 frame`, `2 frames`; `many` for a word that is not made plural by an `s`."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def listed(parts: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def frames_label(frames: Sequence[int]) -> str:
    """A task's frames as `--frames` writes them, so what `farmhand job` shows can be
    typed back: `7`, `1-10`, `1-10x3` (every 3rd); frames with no single step (a task
    is made of one step, so only if that ever changes) as `1,2,5`. The web page's
    `frameSpan` in app.js writes them the same way."""
    if not frames:
        return "-"
    if len(frames) == 1:
        return str(frames[0])
    step = frames[1] - frames[0]
    if step < 1 or any(b - a != step for a, b in pairwise(frames)):
        return ",".join(str(frame) for frame in frames)
    span = f"{frames[0]}-{frames[-1]}"
    return span if step == 1 else f"{span}x{step}"
