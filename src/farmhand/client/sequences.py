"""Which files of a numbered sequence a render needs.

A .blend names one file of a sequence (`tex_0001.png`, `tex.<UDIM>.png`,
`tex.<UVTILE>.png`) and Blender works out, frame by frame or tile by tile, which of its
files to load. Globbing the files that exist (what blender-asset-tracer does) never sees
a gap, so `packing` asks this module which files *should* exist and reports those that
do not. Pure functions of the numbers the .blend
records; nothing here reads a .blend or the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

UDIM_MARKER = "<UDIM>"
UVTILE_MARKER = "<UVTILE>"
TILE_MARKERS = (UDIM_MARKER, UVTILE_MARKER)
_DIGITS = re.compile(r"([0-9]+)([^0-9]*)$")


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
