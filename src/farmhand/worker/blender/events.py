"""Events the driver writes, parsed from Blender's output by the worker.

The worker reads events, not Blender's free text: the driver marks each of its lines,
and anything that does not parse is just log.
"""

from __future__ import annotations

import json
import re
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
    preview: Path | None = None
    """A small JPEG of the frame Blender made with the scene's colour management."""
    extras: tuple[Path, ...] = ()
    """Files the compositor's File Output nodes wrote for this frame."""
    crop: tuple[int, int, int, int] | None = None
    """A tile rendered with an overlap: (left, top, rendered width, rendered height); the
    tile, `width` x `height`, is cut out of the file before it counts as saved."""


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


@dataclass(frozen=True)
class Progress:
    """Cycles' sample count for a frame, read from Blender's own status lines."""

    frame: int
    sample: int
    samples: int


@dataclass(frozen=True)
class Devices:
    """The compute devices Blender sees: (kind, name) pairs, CPU first."""

    devices: list[tuple[str, str]]


@dataclass(frozen=True)
class Displayed:
    """A picture put through the scene's colour management (`display`), in `target`."""

    target: Path


@dataclass(frozen=True)
class FrameStats:
    """Made by the worker, not the driver: what one saved frame cost."""

    frame: int
    seconds: float
    peak_memory_bytes: int
    """Peak resident memory of Blender's process group while the frame rendered."""


Event = (
    Ready
    | Opened
    | FrameStarted
    | FrameSaved
    | RenderDone
    | DriverError
    | Bye
    | Progress
    | Devices
    | Displayed
    | FrameStats
)

# `Fra:1 Mem:9.68M (Peak 9.82M) | Time:00:00.13 | ... | Scene, ViewLayer | Sample 1/2`, the
# status lines Blender executables print. Parsed from the log rather than sent by the
# driver because the executables (3.4) do not call `bpy.app.handlers.render_stats` in
# background renders. The bpy module (5.0) prints no such lines but does call the
# handler, and the driver prints them for it in this form (`Fra:1 | Mem: 2M | Sample 1/8`,
# `Fra:1 | Rendering 1 / 4 samples`).
_PROGRESS = re.compile(r"^Fra:(-?\d+) .*\| Sample (\d+)/(\d+)\s*$")
_EEVEE_PROGRESS = re.compile(r"^Fra:(-?\d+) .*\| Rendering (\d+) / (\d+) samples\s*$")
"""EEVEE's form of the same: `Fra:1 Mem:10.51M (Peak 11.61M) | ... | Rendering 26 / 64 samples`."""


def parse_progress_line(line: str) -> Progress | None:
    """Cycles' or EEVEE's sample progress on one of Blender's status lines, or None."""
    match = _PROGRESS.match(line) or _EEVEE_PROGRESS.match(line)
    if match is None:
        return None
    frame, sample, samples = (int(group) for group in match.groups())
    return Progress(frame, sample, samples)


def _crop(value: object) -> tuple[int, int, int, int] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    left, top, width, height = (int(number) for number in value)
    return left, top, width, height


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
                Path(data["preview"]) if data.get("preview") else None,
                tuple(Path(extra) for extra in data.get("extras") or ()),
                _crop(data.get("crop")),
            )
        if kind == "render_done":
            return RenderDone(int(data["frames"]))
        if kind == "error":
            return DriverError(str(data["message"]), str(data.get("traceback", "")))
        if kind == "bye":
            return Bye()
        if kind == "displayed":
            return Displayed(Path(data["target"]))
        if kind == "devices":
            return Devices([(str(d["type"]), str(d["name"])) for d in data["devices"]])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None
