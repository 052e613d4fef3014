"""Whether reading a .blend with blender-asset-tracer (BAT) stays within bounds, found out
first by a streaming walk that holds a few KB whatever the file.

BAT trusts a file's sizes. It decompresses a gzip or zstd .blend whole into a temporary
file (often in RAM: /tmp is tmpfs on many systems), keeps an object for every block it
passes, and reads the DNA block whole. So a few hundred KB of zstd that inflate to
gigabytes of zeros (a "blend bomb" handed to an artist), or a file whose DNA block claims
gigabytes, exhausts the memory of whoever opens it: the artist's machine, when the client
packs it. `check_blend` walks the same file first, as BAT would, but streaming: the
decompressed bytes are counted and skipped, never kept, and each claim is held to a bound
(`MAX_INFLATED_*`, `MAX_BLOCKS`, `MAX_DNA_BYTES`), far above what an honest file needs.

The manager reads files others send in a child process held to limits
(`blendscene.rendered_views_bounded`); this is for the client, reading the user's own files.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from farmhand.shared.blendfile import BLEND_MAGIC, GZIP_MAGIC, ZSTD_MAGIC

MAX_INFLATED_FLOOR = 1 << 30
"""A compressed .blend may always inflate to this many bytes (a big honest scene)…"""
MAX_INFLATED_RATIO = 100
"""…or to this many times its compressed size, whichever is more. Honest .blend files
compress a few times; gigabytes of zeros compress some 30,000 times."""
MAX_BLOCKS = 5_000_000
"""Blocks in one .blend (BAT keeps an object for each, some 200 bytes): a big production
scene has some hundred thousand; a GB of zeros reads as 45 million empty blocks."""
MAX_DNA_BYTES = 64 << 20
"""The DNA block, which BAT reads whole, is a few hundred KB in any Blender."""
_CHUNK = 1 << 20


class BlendTooLarge(ValueError):
    """A .blend whose reading would go past a bound; the message says which, in one line
    (`it inflates to…`), for the caller to put after the file's name."""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MiB" if size >= 1 << 20 else f"{size:,} bytes"


def inflated_bound(compressed_size: int) -> int:
    """The most a compressed .blend of `compressed_size` bytes may inflate to."""
    return max(MAX_INFLATED_FLOOR, MAX_INFLATED_RATIO * compressed_size)


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Inflated:
    """The decompressed stream of a .blend, read forward only, refusing past `bound`."""

    def __init__(self, raw: _Readable, path: Path, bound: int) -> None:
        self.raw = raw
        self.path = path
        self.bound = bound
        self.position = 0

    def read(self, size: int) -> bytes:
        data = self.raw.read(size)
        self.position += len(data)
        if self.position > self.bound:
            raise BlendTooLarge(
                f"it inflates to more than {_mib(self.bound)} from "
                f"{_mib(self.path.stat().st_size)} compressed (a compressed .blend may grow "
                f"{MAX_INFLATED_RATIO} times, or to {_mib(MAX_INFLATED_FLOOR)}): not read"
            )
        return data

    def skip(self, size: int) -> int:
        """Skip `size` bytes (fewer at the end); how many were skipped."""
        skipped = 0
        while skipped < size:
            data = self.read(min(_CHUNK, size - skipped))
            if not data:
                break
            skipped += len(data)
        return skipped


class _Plain:
    """An uncompressed .blend: the same forward reads, skipping by seeking."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    def read(self, size: int) -> bytes:
        return self.raw.read(size)

    def skip(self, size: int) -> int:
        start = self.raw.tell()
        end = min(start + size, os.fstat(self.raw.fileno()).st_size)
        self.raw.seek(end)
        return end - start


def _block_header(head: bytes) -> tuple[struct.Struct, int, int] | None:
    """The block header's struct and the indexes of its code and length fields, for a
    file starting with `head` (its first 17 bytes); None if it is no .blend BAT reads.
    The layouts are BAT's (`header.create_block_header_struct`)."""
    if not head.startswith(BLEND_MAGIC) or len(head) < 12:
        return None
    kind = head[7:8]
    if kind in (b"_", b"-"):
        endian = "<" if head[8:9] == b"v" else ">"
        pointer = "I" if kind == b"_" else "Q"
        return struct.Struct(f"{endian}4si{pointer}ii"), 0, 1
    if head[7:12] == b"17-01" and len(head) >= 17:
        return struct.Struct("<4siQqq"), 0, 3
    return None


def _header_bytes(head: bytes) -> int:
    return 12 if head[7:8] in (b"_", b"-") else 17


def _walk(stream: _Inflated | _Plain, path: Path) -> None:
    """Pass every block header as BAT does, holding each claim to its bound. The headers
    are parsed from chunks of `_CHUNK` bytes (a big scene has many small blocks);
    longer blocks' data is skipped, never kept."""
    head = stream.read(17)
    layout = _block_header(head)
    if layout is None:
        return  # not a .blend BAT reads: BAT refuses it itself, in a few bytes
    header, code_at, size_at = layout
    unpack, width = header.unpack_from, header.size
    chunk, at = head[_header_bytes(head) :], 0
    blocks = 0
    while True:
        if len(chunk) - at < width:
            chunk, at = chunk[at:] + stream.read(_CHUNK), 0
            if len(chunk) < width:
                return  # cut short: BAT says the file is truncated
        fields = unpack(chunk, at)
        at += width
        code, size = fields[code_at], fields[size_at]
        if code == b"ENDB":
            return
        blocks += 1
        if blocks > MAX_BLOCKS:
            raise BlendTooLarge(
                f"it has more than {MAX_BLOCKS:,} blocks (a big scene has some hundred "
                "thousand): not read"
            )
        if size < 0 or (code == b"DNA1" and size > MAX_DNA_BYTES):
            raise BlendTooLarge(
                f"it claims a {code.decode(errors='replace')} block of {size:,} bytes: not read"
            )
        if size <= len(chunk) - at:
            at += size
            continue
        rest = size - (len(chunk) - at)
        chunk, at = b"", 0
        if stream.skip(rest) < rest:
            return


def _declared_zstd_size(head: bytes) -> int | None:
    """The size a zstd frame's header says it inflates to, if it says."""
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return size if size >= 0 else None


def check_blend(path: Path) -> None:
    """BlendTooLarge if BAT reading the .blend at `path` would go past a bound (see the
    module docstring); reads it streaming, holding a few KB. A file that is no .blend, or
    cannot be opened, passes: BAT says what is wrong with it. The answer is remembered per
    file version, as the client reads one file several times in one submit."""
    try:
        stat = path.stat()
    except OSError:
        return
    reason = _reason(path, stat.st_size, stat.st_mtime_ns)
    if reason is not None:
        raise BlendTooLarge(reason)


@lru_cache(maxsize=64)
def _reason(path: Path, size: int, mtime_ns: int) -> str | None:
    """Why `check_blend` refuses the file (of this size and time), or None."""
    try:
        with path.open("rb") as raw:
            head = raw.read(18)
            raw.seek(0)
            bound = inflated_bound(size)
            if head.startswith(ZSTD_MAGIC):
                declared = _declared_zstd_size(head)
                if declared is not None and declared > bound:
                    return (
                        f"it claims to inflate to {_mib(declared)} from {_mib(size)} "
                        f"compressed, more than the {_mib(bound)} read here: not read"
                    )
                decompressor = zstandard.ZstdDecompressor()
                with (
                    decompressor.stream_reader(raw, read_across_frames=True) as reader,
                    io.BufferedReader(reader, _CHUNK) as buffered,
                ):
                    _walk(_Inflated(buffered, path, bound), path)
            elif head.startswith(GZIP_MAGIC):
                with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
                    _walk(_Inflated(inflated, path, bound), path)
            else:
                _walk(_Plain(raw), path)
    except BlendTooLarge as exc:
        return str(exc)
    except (OSError, EOFError, ValueError, zstandard.ZstdError):
        return None  # damaged, or not compressed as it says: BAT says what is wrong
    return None
