"""Which files of a numbered sequence a render needs: the one rule for image sequences,
UDIM and UVTILE tiles, OpenVDB volume sequences and point caches.

A .blend names one file of a sequence (`tex_0001.png`, `tex.<UDIM>.png`,
`tex.<UVTILE>.png`, `vol_0001.vdb`, a point cache's glob) and Blender works out, frame
by frame or tile by tile, which of its files to load. Globbing the files that exist
(what blender-asset-tracer does) never sees a gap, so `packing` asks this module which
files *should* exist and reports those that do not. Pure functions of the numbers the
.blend records; nothing here reads a .blend or the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

UDIM_MARKER = "<UDIM>"
UVTILE_MARKER = "<UVTILE>"
TILE_MARKERS = (UDIM_MARKER, UVTILE_MARKER)
_DIGITS = re.compile(r"([0-9]+)([^0-9]*)$")


class Mode(Enum):
    """How a sequence follows the scene's frames outside its own range."""

    IMAGE = "image"
    """An image user, not cyclic: held at its last file; before its start Blender asks
    for number `offset`."""
    CLIP = "clip"
    """Nothing is loaded outside the range (a volume's Clip)."""
    EXTEND = "extend"
    """Held at the first and last file (a volume's Extend)."""
    REPEAT = "repeat"
    """Loops (a volume's Repeat, a cyclic image user)."""
    PING_PONG = "ping_pong"
    """Forth and back (a volume's Ping-Pong)."""
    CACHE = "cache"
    """A point cache: nothing before its start frame, its end frame held after it."""


VOLUME_MODES = (Mode.CLIP, Mode.EXTEND, Mode.REPEAT, Mode.PING_PONG)
"""`Volume.sequence_mode` 0-3, in Blender's order."""


@dataclass(frozen=True)
class FrameMap:
    """Scene frame → file number: `start` is the scene frame showing the sequence's
    first frame, `duration` its length, `offset` added to the number (Blender's image
    user and volume fields; a point cache is start = its first frame, offset = start - 1).
    `image_user`: an image texture's (BKE_image_user_frame_get), which with no duration
    asks for number 0 and never for a negative one."""

    start: int
    duration: int
    offset: int
    mode: Mode
    image_user: bool = False

    def number(self, frame: int) -> int | None:
        """The file number Blender loads at `frame`, None if it loads none (as
        BKE_image_user_frame_get and BKE_volume_frame reckon it)."""
        if self.duration <= 0:
            return 0 if self.image_user else None
        local = frame - self.start + 1
        match self.mode:
            case Mode.IMAGE:
                local = min(max(local, 0), self.duration)
            case Mode.CLIP if not 1 <= local <= self.duration:
                return None
            case Mode.CACHE if local < 1:
                return None
            case Mode.CACHE:
                local = min(local, self.duration)
            case Mode.EXTEND:
                local = min(max(local, 1), self.duration)
            case Mode.REPEAT:
                local = local % self.duration or self.duration
            case Mode.PING_PONG if self.duration == 1:
                local = 1
            case Mode.PING_PONG:
                period = 2 * self.duration - 2
                local = local % period or period
                if local > self.duration:
                    local = 2 * self.duration - local
        return max(0, local + self.offset) if self.image_user else local + self.offset

    def numbers(self, frames: Iterable[int] | None) -> set[int]:
        """The file numbers `frames` load; None: every frame of the sequence."""
        if frames is None:
            return {self.offset + n for n in range(1, max(self.duration, 0) + 1)}
        return {n for frame in frames if (n := self.number(frame)) is not None}


def numbered(name: str) -> tuple[str, int, str] | None:
    """Blender's reading of a sequence file name (BLI_path_sequence_decode): the last run
    of digits before the extension, as (head, width, tail); None if there is none."""
    dot = name.rfind(".")
    stem, extension = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    match = _DIGITS.search(stem)
    if match is None:
        return None
    return stem[: match.start()], len(match.group(1)), match.group(2) + extension


def member_number(name: str, head: str, tail: str) -> int | None:
    """The number of `name` if it is `head`, digits, `tail`; else None."""
    if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head + tail):
        return None
    digits = name[len(head) : len(name) - len(tail)]
    return int(digits) if digits.isascii() and digits.isdigit() else None


def tile_name(name: str, tile: int) -> str:
    """`name` for one tile: `<UDIM>` → 1002, `<UVTILE>` → u2_v1 (Blender's two tile
    tokens; BKE_image_set_filepath_from_tile_number)."""
    u, v = (tile - 1001) % 10 + 1, (tile - 1001) // 10 + 1
    return name.replace(UDIM_MARKER, str(tile)).replace(UVTILE_MARKER, f"u{u}_v{v}")


def is_tiled(name: str) -> bool:
    return any(marker in name for marker in TILE_MARKERS)


def span(named: int | None, on_disk: Iterable[int], limit: int) -> range | None:
    """The numbers of a sequence whose frames the .blend does not say: from the lowest
    to the highest of the file it names and those on disk, a gap there being missing.
    None if longer than `limit` (a stray file numbered by date is no sequence)."""
    numbers = sorted({*on_disk, *([] if named is None else [named])})
    if not numbers or numbers[-1] - numbers[0] >= limit:
        return None
    return range(numbers[0], numbers[-1] + 1)
