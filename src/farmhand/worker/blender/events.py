"""Events the driver writes, parsed from Blender's output by the worker.

The worker reads events, not Blender's free text: the driver marks each of its lines,
and anything that does not parse is just log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MARK = "@@farmhand@@ "


@dataclass(frozen=True)
class Ready:
    version: str


@dataclass(frozen=True)
class Opened:
    facts: dict[str, object]


@dataclass(frozen=True)
class FrameStarted:
    frame: int


@dataclass(frozen=True)
class FrameSaved:
    frame: int
    path: Path
    seconds: float
    width: int
    height: int


@dataclass(frozen=True)
class RenderDone:
    frames: int


@dataclass(frozen=True)
class DriverError:
    message: str
    traceback: str


@dataclass(frozen=True)
class Bye:
    pass


Event = Ready | Opened | FrameStarted | FrameSaved | RenderDone | DriverError | Bye


def parse_event_line(line: str) -> Event | None:
    """The event on this output line, or None if it is ordinary Blender output."""
    at = line.find(MARK)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(MARK) :])
        kind = data.pop("event")
        if kind == "ready":
            return Ready(str(data["version"]))
        if kind == "opened":
            return Opened(data)
        if kind == "frame_started":
            return FrameStarted(int(data["frame"]))
        if kind == "frame_saved":
            return FrameSaved(
                int(data["frame"]),
                Path(data["path"]),
                float(data["seconds"]),
                int(data["width"]),
                int(data["height"]),
            )
        if kind == "render_done":
            return RenderDone(int(data["frames"]))
        if kind == "error":
            return DriverError(str(data["message"]), str(data.get("traceback", "")))
        if kind == "bye":
            return Bye()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None
