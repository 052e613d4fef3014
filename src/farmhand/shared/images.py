"""Checking that a rendered frame is really an image, of the size we asked for.

Blender can exit with status 0 after failing to write a frame, a disk can fill up half way
through a file, and an upload can be cut short. So "the file exists" is not success: the
worker, the node and the manager all call `verify_image` before they count a frame as done.

PNG and JPEG (and anything else Pillow reads) are fully decoded, because truncation only
shows when the pixel data is read. OpenEXR is not readable by Pillow, so its header is
parsed here and the chunk offset table is checked against the file's length: that catches
truncated files without pulling in an EXR library. A multi-part OpenEXR file (what
Blender 5 writes for a multilayer EXR with passes: a part a pass) is checked part by
part the same way. Deep OpenEXR is refused as what it is, valid but unsupported, never
as "damaged".
"""

from __future__ import annotations

import math
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from PIL import Image, UnidentifiedImageError

EXR_MAGIC = b"\x76\x2f\x31\x01"

_EXR_TILED = 0x200
_EXR_NON_IMAGE = 0x800  # deep data
_EXR_MULTIPART = 0x1000
_MAX_ATTRIBUTES = 1024
_MAX_ATTRIBUTE_SIZE = 16 * 1024 * 1024

# Scan lines per chunk for each OpenEXR compression (the `compression` attribute value).
_EXR_LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}


class ImageError(ValueError):
    """A file is not a usable image; the message says why, in words a person can act on.

    The message names the file's `path` (what a worker's log or a person at their own
    machine needs); `reason` is the same without it, for an answer to someone who never
    saw that path: a manager's temporary file name means nothing to the worker that sent
    the bytes, and tells anyone asking how the manager's disk is laid out.
    """

    def __init__(self, problem: str, path: Path | None = None) -> None:
        super().__init__(f"{path} {problem}" if path is not None else problem)
        self.path = path
        self.reason = f"it {problem}" if path is not None else problem


@dataclass(frozen=True)
class ImageInfo:
    """What a verified image is: `format` is Pillow's name (PNG, JPEG, ...) or OPEN_EXR."""

    format: str
    width: int
    height: int


def verify_image(
    path: Path | str, expected_width: int | None = None, expected_height: int | None = None
) -> ImageInfo:
    """Read the whole image at `path` and return its format and size.

    Raises `ImageError` if the file is missing, empty, truncated, not an image, or not
    `expected_width` x `expected_height` (when given).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("does not exist", path) from None
    except OSError as error:
        raise ImageError(f"cannot be read: {error.strerror or error}", path) from None
    if not path.is_file():
        raise ImageError("is not a file", path)
    if size == 0:
        raise ImageError("is empty (0 bytes)", path)

    try:
        with path.open("rb") as handle:
            if handle.read(4) == EXR_MAGIC:
                handle.seek(0)
                info = _verify_exr(handle, size, path)
            else:
                handle.seek(0)
                info = _verify_with_pillow(handle, path)
    except OSError as error:
        raise ImageError(f"cannot be read: {error.strerror or error}", path) from None

    if expected_width is not None and expected_height is not None:
        if (info.width, info.height) != (expected_width, expected_height):
            raise ImageError(
                f"is {info.width}x{info.height} pixels, "
                f"expected {expected_width}x{expected_height}",
                path,
            )
    elif expected_width is not None and info.width != expected_width:
        raise ImageError(f"is {info.width} pixels wide, expected {expected_width}", path)
    elif expected_height is not None and info.height != expected_height:
        raise ImageError(f"is {info.height} pixels high, expected {expected_height}", path)
    return info


FORMAT_OF_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".exr": "OPEN_EXR",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
"""The image format a file of each suffix must be (`verify_image`'s names)."""


KEPT_FORMATS = frozenset({"PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "TIFF", "WEBP", "BMP"})
"""Blender's output formats a worker renders a scene in as it is saved: those every part
of the farm can verify and thumbnail (`FORMAT_OF_SUFFIX`). The driver's `EXTENSIONS`
lists the same (it runs inside Blender and imports nothing of farmhand)."""


def rendered_format(scene_format: str) -> str:
    """The format a job keeping the .blend's output format gets frames in: the scene's
    own if the farm keeps it, else PNG (Targa, JPEG 2000, DPX, Cineon, HDR, Iris, and a
    scene that writes a video, FFMPEG: its frames, no video unless the job asks for one).
    For whatever tells a person at submit time what their frames will be."""
    return scene_format if scene_format in KEPT_FORMATS else "PNG"


def verify_image_as(path: Path | str, suffix: str) -> ImageInfo:
    """`verify_image`, and the image must be the format its `suffix` says: a PNG stored
    as `0001.exr` would be downloaded, thumbnailed and merged as an EXR it is not."""
    info = verify_image(path)
    wanted = FORMAT_OF_SUFFIX.get(suffix.lower())
    if info.format != wanted:
        raise ImageError(f"it is a {info.format} image, not {suffix.lower()}")
    return info


_PILLOW = r"PIL(\.|$)"
"""Warnings issued by Pillow's own modules: the filter is the whole process's, so it must
not turn other code's warnings into exceptions."""

_IN_A_CHECK = threading.local()
"""`active` is True while this thread is inside `_verify_with_pillow`."""


class _OnlyInACheck(type):
    """The metaclass of `_WarningInACheck`: its `issubclass` is true only in a thread in
    the middle of a check, which is what makes one process-wide filter thread-local."""

    def __subclasscheck__(cls, subclass: type) -> bool:
        return bool(getattr(_IN_A_CHECK, "active", False)) and issubclass(subclass, Warning)


class _WarningInACheck(Warning, metaclass=_OnlyInACheck):
    """The filter's category: any warning, but only one issued in a thread that is
    checking an image (the warnings machinery matches a filter with `issubclass`)."""


_PILLOW_ERRORS = ("error", None, _WarningInACheck, re.compile(_PILLOW), 0)
"""The `warnings.filters` entry `warnings.filterwarnings` makes of the filter below."""
_PILLOW_ALWAYS = ("always", None, Warning, re.compile(_PILLOW), 0)
"""The entry after it, for Pillow's warnings in threads not checking (a thumbnail): shown
as they come, and not noted as shown. Noted (the default action), a warning a thumbnail
met while a check ran would make the check's own, the same words from the same line, be
skipped before any filter is consulted: a damaged frame would pass (QA round 12)."""
_checks_running = 0
_CHECKS_RUNNING_LOCK = threading.Lock()
"""Held only to count checks and add or remove the filter, never for a decode."""


@contextmanager
def _pillow_warnings_are_errors() -> Iterator[None]:
    """While the body runs, Pillow's warnings in this thread are exceptions, and no
    other thread's warnings, Pillow's included (a thumbnail being made), are.

    Pillow only warns about some damage (a TIFF tag past the file's end) and about an
    image past its decompression-bomb threshold, both when it reads the header (`open`)
    and when it decodes (`load`: a TIFF's tile size, a GIF's frames), so the whole
    decode needs the filter. `warnings.catch_warnings` cannot give it: it saves and
    restores the process's one list of filters, so checks on two threads restored each
    other's and "every warning is an error" stayed on for good (any deprecation warning
    in any request was a 500 from then on, QA round 7), and making checks take turns
    around it made every upload thread wait for every other frame's whole decode.

    So the filter is added once for all the checks running at once (counted) and taken
    out when the last ends, leaving the list as it was; it matches only in a thread in
    a check (`_WarningInACheck`). Each check adds it anew: that also makes the warnings
    machinery forget which warnings it has already shown (it skips a warning shown once
    before, from the same line with the same words, without looking at the filters: one
    a thumbnail's `Image.open` showed would pass a check unnoticed), and puts it back at
    the front if a `catch_warnings` elsewhere restored a list without it.
    """
    global _checks_running
    with _CHECKS_RUNNING_LOCK:
        # Already there (another check runs): `append` leaves them in their place, never
        # out of the list for a moment, and still makes the machinery forget. Else the
        # "always" goes in first, so that the "error" ends up in front of it.
        there = _PILLOW_ERRORS in warnings.filters and _PILLOW_ALWAYS in warnings.filters
        warnings.filterwarnings("always", category=Warning, module=_PILLOW, append=there)
        warnings.filterwarnings("error", category=_WarningInACheck, module=_PILLOW, append=there)
        _checks_running += 1
    _IN_A_CHECK.active = True
    try:
        yield
    finally:
        _IN_A_CHECK.active = False
        with _CHECKS_RUNNING_LOCK:
            _checks_running -= 1
            if _checks_running == 0:
                filters = cast("list[object]", warnings.filters)  # typeshed: a Sequence
                ours = (_PILLOW_ERRORS, _PILLOW_ALWAYS)
                filters[:] = [entry for entry in filters if entry not in ours]


def _verify_with_pillow(handle: BinaryIO, path: Path) -> ImageInfo:
    try:
        with _pillow_warnings_are_errors(), Image.open(handle) as image:
            # A damaged TIFF (a tag past the file's end) or an image past Pillow's
            # decompression-bomb threshold only warns: Pillow's warnings are errors here.
            image.load()
            return ImageInfo(
                format=image.format or "unknown", width=image.width, height=image.height
            )
    except UnidentifiedImageError:
        raise ImageError("is not an image file Farmhand can read", path) from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"is too large to check: {error}", path) from None
    except (OSError, SyntaxError, ValueError, Warning, struct.error) as error:
        raise ImageError(f"is damaged or truncated: {error}", path) from None


@dataclass
class _ExrPart:
    """What the checks need of one part's header (a single-part file has one part)."""

    name: str
    width: int
    height: int
    compression: int
    storage: str
    """`scanlineimage` or `tiledimage` (`deepscanline`/`deeptile` are refused on read)."""
    tiles: tuple[int, int, int] | None
    chunk_count: int | None
    """The `chunkCount` attribute: every part of a multi-part file has one."""


class _ExrProblem(Exception):
    """The file breaks the OpenEXR format: it is damaged."""


class _ExrUnsupported(Exception):
    """A valid OpenEXR file holding what Farmhand does not handle (deep data)."""


_DEEP_STORAGE = ("deepscanline", "deeptile")
_MAX_PARTS = 1024


def _verify_exr(handle: BinaryIO, file_size: int, path: Path) -> ImageInfo:
    """The header(s) and the chunk offset table(s) of a single- or multi-part file.

    Blender 5 writes a multilayer EXR with passes as a multi-part file, one part a pass
    (`ViewLayer.Combined`, `ViewLayer.Depth`, ...): as valid a frame as a single-part
    one. Its size is the first part's (Blender's parts are all the frame's size; a tile
    cut or merged needs them equal, which `worker/exr.read_exr` checks).
    """
    try:
        multipart, parts, header_end = _read_exr_headers(handle, file_size)
    except (struct.error, UnicodeDecodeError, EOFError) as error:
        raise ImageError(
            f"is a damaged OpenEXR file: header is truncated ({error})",
            path,
        ) from None
    except _ExrProblem as problem:
        raise ImageError(f"is a damaged OpenEXR file: {problem}", path) from None
    except _ExrUnsupported as problem:
        raise ImageError(f"is {problem}", path) from None
    info = ImageInfo("OPEN_EXR", parts[0].width, parts[0].height)

    counts: list[int] = []
    for index, part in enumerate(parts):
        try:
            chunks = _chunk_count(part, multipart)
        except _ExrProblem as problem:
            where = f"part {index} ({part.name!r}): " if multipart else ""
            raise ImageError(f"is a damaged OpenEXR file: {where}{problem}", path) from None
        except _ExrUnsupported as problem:
            raise ImageError(str(problem), path) from None
        if chunks is None:  # mip/rip-mapped: the level count is more work than it is worth
            return info
        counts.append(chunks)

    table_end = header_end + 8 * sum(counts)
    if file_size < table_end:
        raise ImageError(
            f"is a truncated OpenEXR file: {file_size} bytes, "
            f"but its header and offset table alone need {table_end}",
            path,
        )
    handle.seek(header_end)
    last, last_part = -1, 0
    for index, chunks in enumerate(counts):
        offsets = struct.unpack(f"<{chunks}Q", handle.read(8 * chunks))
        bad = [offset for offset in offsets if not table_end <= offset < file_size]
        if bad:
            raise ImageError(
                f"is a truncated OpenEXR file: a pixel chunk starts at byte {bad[0]}, "
                f"the file has {file_size} bytes",
                path,
            )
        if offsets and max(offsets) > last:
            last, last_part = max(offsets), index
    if last < 0:
        return info

    # A chunk: in a multi-part file the part's number first, then int y (scan lines) or
    # int tile x, y, level x, y (tiles), then the int size of the data that follows.
    chunk_header = (4 if multipart else 0) + (20 if parts[last_part].tiles else 8)
    handle.seek(last)
    data = handle.read(chunk_header)
    if len(data) < chunk_header:
        raise ImageError("is a truncated OpenEXR file: the last pixel chunk is cut off", path)
    (owner,) = struct.unpack("<i", data[:4])
    if multipart and owner != last_part:
        raise ImageError(
            f"is a damaged OpenEXR file: the pixel chunk at byte {last} of part {last_part} "
            f"says it belongs to part {owner}",
            path,
        )
    (data_size,) = struct.unpack("<i", data[-4:])
    if data_size < 0 or last + chunk_header + data_size > file_size:
        raise ImageError(
            f"is a truncated OpenEXR file: the last pixel chunk needs "
            f"{last + chunk_header + data_size} bytes, the file has {file_size}",
            path,
        )
    return info


def _chunk_count(part: _ExrPart, multipart: bool) -> int | None:
    """How many chunks the part's offset table lists; None for a single-part mip- or
    rip-mapped file (not checked). A multi-part file states each part's count
    (`chunkCount`), checked against its size where that is simple to work out."""
    if part.tiles is None:
        lines = _EXR_LINES_PER_CHUNK.get(part.compression)
        expected = math.ceil(part.height / lines) if lines is not None else None
    else:
        tile_w, tile_h, mode = part.tiles
        expected = (
            math.ceil(part.width / tile_w) * math.ceil(part.height / tile_h)
            if mode & 0x0F == 0 and tile_w > 0 and tile_h > 0
            else None
        )
    if not multipart:
        if part.tiles is None and expected is None:
            raise _ExrUnsupported(f"uses an unknown OpenEXR compression {part.compression}")
        return expected
    if part.chunk_count is None:
        raise _ExrProblem("no chunkCount attribute, which every part of a multi-part file has")
    if part.chunk_count < 0 or (expected is not None and part.chunk_count != expected):
        raise _ExrProblem(f"chunkCount is {part.chunk_count}, its size makes {expected}")
    return part.chunk_count


def _read_cstring(handle: BinaryIO, limit: int = 256) -> str:
    raw = bytearray()
    while True:
        byte = handle.read(1)
        if not byte:
            raise EOFError("end of file inside a name")
        if byte == b"\0":
            return raw.decode("ascii")
        raw += byte
        if len(raw) > limit:
            raise _ExrProblem("an attribute name is implausibly long")


def _read_exr_headers(handle: BinaryIO, file_size: int) -> tuple[bool, list[_ExrPart], int]:
    """(multi-part?, each part's header, where the offset tables start).

    A multi-part file holds a header a part, the list ended by an empty header (a lone
    NUL). Deep data (a single-part file's "non-image" flag, a part of type `deep...`)
    is valid OpenEXR that Farmhand does not handle: `_ExrUnsupported`, not damage.
    """
    magic, version = struct.unpack("<4sI", handle.read(8))
    if magic != EXR_MAGIC:
        raise _ExrProblem("bad magic number")
    if version & 0xFF != 2:
        raise _ExrProblem(f"unsupported OpenEXR version {version & 0xFF}")
    multipart = bool(version & _EXR_MULTIPART)
    if not multipart and version & _EXR_NON_IMAGE:
        raise _ExrUnsupported(_deep_message(None))
    if multipart and version & _EXR_TILED:
        raise _ExrProblem("a multi-part file with the single-part tiled flag")
    parts: list[_ExrPart] = []
    while True:
        attributes = _read_attributes(handle, file_size)
        if not attributes:
            if multipart and parts:
                break  # the empty header that ends a multi-part file's list
            raise _ExrProblem("a header without attributes")
        part = _parse_header(attributes)
        if part.storage in _DEEP_STORAGE:
            raise _ExrUnsupported(_deep_message(part.name if multipart else None))
        if multipart and part.storage not in ("scanlineimage", "tiledimage"):
            raise _ExrProblem(f"part {len(parts)} has the unknown type {part.storage!r}")
        if not multipart and bool(version & _EXR_TILED) != (part.tiles is not None):
            raise _ExrProblem("tiled flag and tiles attribute disagree")
        if multipart and (part.storage == "tiledimage") != (part.tiles is not None):
            raise _ExrProblem(f"part {len(parts)}'s type and tiles attribute disagree")
        parts.append(part)
        if not multipart:
            break
        if len(parts) > _MAX_PARTS:
            raise _ExrProblem(f"more than {_MAX_PARTS} parts")
    return multipart, parts, handle.tell()


def _deep_message(part: str | None) -> str:
    where = f" (part {part!r})" if part else ""
    return (
        f"a deep OpenEXR file{where}: deep data, a list of samples a pixel, is valid OpenEXR "
        "but Farmhand does not support it; render flat (scan line) OpenEXR"
    )


def _read_attributes(handle: BinaryIO, file_size: int) -> dict[str, tuple[str, bytes]]:
    """One header's attributes, name → (type, value), up to its terminating NUL."""
    attributes: dict[str, tuple[str, bytes]] = {}
    for _ in range(_MAX_ATTRIBUTES):
        name = _read_cstring(handle)
        if name == "":
            return attributes
        kind = _read_cstring(handle)
        (size,) = struct.unpack("<i", handle.read(4))
        if not 0 <= size <= min(_MAX_ATTRIBUTE_SIZE, file_size):
            raise _ExrProblem(f"attribute {name!r} claims {size} bytes")
        value = handle.read(size)
        if len(value) < size:
            raise EOFError(f"end of file inside attribute {name!r}")
        attributes[name] = (kind, value)
    raise _ExrProblem("the header never ends")


def _parse_header(attributes: dict[str, tuple[str, bytes]]) -> _ExrPart:
    def value(name: str, kind: str, size: int) -> bytes | None:
        found = attributes.get(name)
        if found is None or found[0] != kind:
            return None
        if len(found[1]) < size:
            raise _ExrProblem(f"attribute {name!r} is {len(found[1])} bytes, not {size}")
        return found[1]

    window = value("dataWindow", "box2i", 16)
    if window is None:
        raise _ExrProblem("no dataWindow attribute")
    x_min, y_min, x_max, y_max = struct.unpack("<4i", window[:16])
    width, height = x_max - x_min + 1, y_max - y_min + 1
    if width < 1 or height < 1:
        raise _ExrProblem(f"empty data window {(x_min, y_min, x_max, y_max)}")
    compression = value("compression", "compression", 1)
    tiles = value("tiles", "tiledesc", 9)
    chunks = value("chunkCount", "int", 4)
    name = value("name", "string", 0)
    storage = value("type", "string", 0)
    return _ExrPart(
        name=name.decode("utf-8", "replace") if name is not None else "",
        width=width,
        height=height,
        compression=compression[0] if compression is not None else 0,
        storage=(
            storage.decode("ascii")
            if storage is not None
            else ("tiledimage" if tiles is not None else "scanlineimage")
        ),
        tiles=struct.unpack("<IIB", tiles[:9]) if tiles is not None else None,
        chunk_count=struct.unpack("<i", chunks[:4])[0] if chunks is not None else None,
    )
