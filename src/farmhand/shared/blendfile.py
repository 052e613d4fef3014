"""What a .blend's first bytes say, without Blender: is it one, and which Blender saved it.

A .blend starts with `BLENDER`; Blender may also save it gzip-compressed (before 3.0) or
zstd-compressed (3.0 and later; Blender 5.0 compresses by default). Anything else is
refused at upload, before a worker wastes an attempt on it.

The header names the version that saved the file: `BLENDER-v304` (pointer size, endian,
three digits: 3.4) up to Blender 4.x, and `BLENDER17-01v0500` (header size, format
version, endian, four digits: 5.0) from Blender 5.0. A file does not open in an older
Blender than the one that saved it, so the scheduler gives a job only to workers with a
Blender at least that new (`version_fits`), and to the range a job may ask for
(`blender_version: ">=4.2,<5"`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

BLEND_MAGIC = b"BLENDER"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HEADER_BYTES = 16
"""Enough to recognise a .blend (compressed or not)."""
READ_BYTES = 64 * 1024
"""Enough compressed bytes to decompress the header of any .blend."""

_OLD_HEADER = re.compile(rb"^BLENDER[_-][vV](\d)(\d\d)")
_NEW_HEADER = re.compile(rb"^BLENDER\d\d-\d\d[vV](\d\d)(\d\d)")
_SPEC_PART = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*(\d+(?:\.\d+){0,2})\s*$")

Version = tuple[int, ...]


def looks_like_blend(header: bytes) -> bool:
    return header.startswith((BLEND_MAGIC, GZIP_MAGIC, ZSTD_MAGIC))


def _plain_header(head: bytes) -> bytes:
    """The first uncompressed bytes of a .blend whose first bytes are `head`."""
    if head.startswith(GZIP_MAGIC):
        try:
            return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head, 32)
        except zlib.error:
            return b""
    if head.startswith(ZSTD_MAGIC):
        import zstandard  # a dependency of farmhand (and of bpy)

        try:
            reader = zstandard.ZstdDecompressor().stream_reader(head, read_across_frames=True)
            return reader.read(32)
        except zstandard.ZstdError:
            return b""
    return head[:32]


def saved_version(head: bytes) -> str | None:
    """`"5.0"` for a .blend saved by Blender 5.0, from its first bytes; None if unknown."""
    plain = _plain_header(head)
    match = _NEW_HEADER.match(plain)
    if match is not None:
        return f"{int(match.group(1))}.{int(match.group(2))}"
    match = _OLD_HEADER.match(plain)
    if match is not None:
        return f"{int(match.group(1))}.{int(match.group(2))}"
    return None


def read_saved_version(handle: BinaryIO) -> str | None:
    """`saved_version` of an open .blend (reads at most `READ_BYTES`)."""
    return saved_version(handle.read(READ_BYTES))


def saved_version_of(path: Path) -> str | None:
    """`saved_version` of the .blend at `path`; None if it cannot be read (whoever opens
    it next, Blender or a form, says what is wrong with it)."""
    try:
        with path.open("rb") as handle:
            return read_saved_version(handle)
    except OSError:
        return None


def parse_version(text: str) -> Version:
    """`"3.4.1"` → (3, 4, 1); a ValueError names what is wrong."""
    match = re.match(r"^\s*(\d+(?:\.\d+){0,2})", text)
    if match is None:
        raise ValueError(f"{text!r} is not a Blender version such as 4.2")
    return tuple(int(part) for part in match.group(1).split("."))


def _cmp(a: Version, b: Version) -> int:
    """Compare on the parts `b` names: 4.2.1 == 4.2 and 4.2 < 5."""
    cut = a[: len(b)] + (0,) * max(0, len(b) - len(a))
    return (cut > b) - (cut < b)


def check_spec(spec: str) -> list[tuple[str, Version]]:
    """A version range such as `>=4.2,<5` as (operator, version) pairs; ValueError if it
    is not one, or if no version is in it (`>=5,<5`): what a job may ask for.

    An empty range is refused here, at the edge, as such: otherwise it would reach
    `cannot_open` and be blamed on the file, with advice (allow a newer Blender) that
    the range already follows and that cannot help."""
    parts = _parse_spec(spec)
    if oldest_in_range(spec) is None:
        raise ValueError(empty_range(spec))
    return parts


def empty_range(spec: str) -> str:
    """Why a range no version is in is refused, in one place for every caller."""
    return f"the Blender range {spec!r} allows no version"


def _parse_spec(spec: str) -> list[tuple[str, Version]]:
    """`check_spec` without the emptiness check: a stored job's range is only read, and an
    empty one (stored before the check) simply holds no Blender."""
    parts = []
    for raw in spec.split(","):
        match = _SPEC_PART.match(raw)
        if match is None:
            raise ValueError(
                f"blender_version {spec!r} is not a version range such as '>=4.2,<5' or '4.2'"
            )
        operator = match.group(1) or "=="
        parts.append(("==" if operator == "=" else operator, parse_version(match.group(2))))
    return parts


_TESTS: dict[str, Callable[[int], bool]] = {
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
    ">=": lambda c: c >= 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    "<": lambda c: c < 0,
}


def _inside(have: Version, parts: list[tuple[str, Version]]) -> bool:
    return all(_TESTS[op](_cmp(have, want)) for op, want in parts)


def in_range(version: str, spec: str | None) -> bool:
    """Whether Blender `version` is inside the range `spec` (None: any)."""
    if not spec:
        return True
    return _inside(parse_version(version), _parse_spec(spec))


def version_fits(version: str, saved: str | None, spec: str | None) -> bool:
    """May Blender `version` render a file saved by `saved`, in the job's range `spec`?

    At least as new as the file's Blender (major.minor), and inside the range.
    """
    try:
        have = parse_version(version)
    except ValueError:
        return False
    if saved is not None and have[:2] < parse_version(saved)[:2]:
        return False
    return in_range(version, spec)


def best_version(versions: list[str], saved: str | None, spec: str | None) -> str | None:
    """The newest of `versions` that fits, or None: what a worker renders the job with."""
    fitting = [v for v in versions if version_fits(v, saved, spec)]
    return max(fitting, key=parse_version) if fitting else None


def _padded(version: Version) -> Version:
    return (*version, 0, 0, 0)[:3]


def oldest_in_range(spec: str | None, at_least: str | None = None) -> str | None:
    """The oldest Blender version (`"4.2.0"`) inside the range `spec` and at least
    `at_least` (major.minor), released or not; None if the range holds none.

    Looks at no list of Blenders: it asks whether one can *exist*, which a list of the
    workers' Blenders cannot say. The versions where a range's tests can turn from false
    to true as versions grow are the bounds the range names (`>=4.2`, `==4.2`: 4.2.0)
    and the first versions past them (`>4.2`, `!=4.2`: 4.3.0), so the oldest version
    inside it, if any, is the oldest of those (or `at_least` itself) that is inside it.
    """
    parts = _parse_spec(spec) if spec else []
    floor = _padded(parse_version(at_least)[:2]) if at_least else (0, 0, 0)
    candidates = {floor}
    for _op, bound in parts:
        candidates.add(_padded(bound))
        candidates.add(_padded((*bound[:-1], bound[-1] + 1)))
    inside = [c for c in candidates if c >= floor and _inside(c, parts)]
    return ".".join(map(str, min(inside))) if inside else None


def cannot_open(saved: str | None, spec: str | None, file: str = "the file") -> str | None:
    """Why no Blender in the range `spec`, now or ever, can open `file`, saved by Blender
    `saved`; None if one can, or if there is no range or `saved` is unknown. A range no
    version is in at all says so (`empty_range`), whatever the file: the file is not
    what is wrong, and allowing its Blender would not help.

    A file opens in the Blender that saved it and newer ones, never in an older one: a
    range that ends before `saved` (`<4` for a 5.0 file) rules out every Blender that
    could render the job, and adding workers would never help. The submission is refused
    with this (`manager/jobs/submit.py`); a job stored before that check waits with it.
    """
    if not spec:
        return None
    if oldest_in_range(spec) is None:  # no Blender at all: not the file's fault
        return empty_range(spec)
    if saved is None or oldest_in_range(spec, saved) is not None:
        return None
    return (
        f"{file} was saved by Blender {saved}, which a Blender in the range {spec} cannot "
        f"open (a .blend opens only in the Blender that saved it or a newer one): allow "
        f"Blender {saved} or newer in the job's Blender range"
    )
