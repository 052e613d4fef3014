"""Checking that a rendered frame is really an image, of the size we asked for.

Blender can exit with status 0 after failing to write a frame, a disk can fill up half way
through a file, and an upload can be cut short. So "the file exists" is not success: the
worker, the node and the manager all call `verify_image` before they count a frame as done.

PNG and JPEG (and anything else Pillow reads) are fully decoded, because truncation only
shows when the pixel data is read. OpenEXR is not readable by Pillow, so its header is
parsed here and the chunk offset table is checked against the file's length: that catches
truncated files without pulling in an EXR library.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


def verify_image_as(path: Path | str, suffix: str) -> ImageInfo:
    """`verify_image`, and the image must be the format its `suffix` says: a PNG stored
    as `0001.exr` would be downloaded, thumbnailed and merged as an EXR it is not."""
    info = verify_image(path)
    wanted = FORMAT_OF_SUFFIX.get(suffix.lower())
    if info.format != wanted:
        raise ImageError(f"it is a {info.format} image, not {suffix.lower()}")
    return info


def _verify_with_pillow(handle: BinaryIO, path: Path) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            # A truncated PNG/JPEG sometimes only warns; make every warning an error.
            warnings.simplefilter("error")
            with Image.open(handle) as image:
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
class _ExrHeader:
    width: int
    height: int
    compression: int
    tiles: tuple[int, int, int] | None
    header_end: int


def _verify_exr(handle: BinaryIO, file_size: int, path: Path) -> ImageInfo:
    try:
        header = _read_exr_header(handle, file_size)
    except (struct.error, UnicodeDecodeError, EOFError) as error:
        raise ImageError(
            f"is a damaged OpenEXR file: header is truncated ({error})",
            path,
        ) from None
    except _ExrProblem as problem:
        raise ImageError(f"is a damaged OpenEXR file: {problem}", path) from None
    if header.tiles is None:
        lines = _EXR_LINES_PER_CHUNK.get(header.compression)
        if lines is None:
            raise ImageError(f"uses an unknown OpenEXR compression {header.compression}", path)
        chunks: int | None = math.ceil(header.height / lines)
        chunk_header = 8  # int y, int data size
    else:
        tile_w, tile_h, mode = header.tiles
        chunks = (
            math.ceil(header.width / tile_w) * math.ceil(header.height / tile_h)
            if mode & 0x0F == 0 and tile_w > 0 and tile_h > 0
            else None  # mip/rip-mapped: the level count is more work than it is worth here
        )
        chunk_header = 20  # int tile x, y, level x, y, data size
    if chunks is None:
        return ImageInfo("OPEN_EXR", header.width, header.height)

    table_end = header.header_end + 8 * chunks
    if file_size < table_end:
        raise ImageError(
            f"is a truncated OpenEXR file: {file_size} bytes, "
            f"but its header and offset table alone need {table_end}",
            path,
        )
    handle.seek(header.header_end)
    offsets = struct.unpack(f"<{chunks}Q", handle.read(8 * chunks))
    bad = [offset for offset in offsets if not table_end <= offset < file_size]
    if bad:
        raise ImageError(
            f"is a truncated OpenEXR file: a pixel chunk starts at byte {bad[0]}, "
            f"the file has {file_size} bytes",
            path,
        )
    last = max(offsets)
    handle.seek(last + chunk_header - 4)
    data = handle.read(4)
    if len(data) < 4:
        raise ImageError("is a truncated OpenEXR file: the last pixel chunk is cut off", path)
    (data_size,) = struct.unpack("<i", data)
    if data_size < 0 or last + chunk_header + data_size > file_size:
        raise ImageError(
            f"is a truncated OpenEXR file: the last pixel chunk needs "
            f"{last + chunk_header + data_size} bytes, the file has {file_size}",
            path,
        )
    return ImageInfo("OPEN_EXR", header.width, header.height)


class _ExrProblem(Exception):
    pass


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


def _read_exr_header(handle: BinaryIO, file_size: int) -> _ExrHeader:
    magic, version = struct.unpack("<4sI", handle.read(8))
    if magic != EXR_MAGIC:
        raise _ExrProblem("bad magic number")
    if version & 0xFF != 2:
        raise _ExrProblem(f"unsupported OpenEXR version {version & 0xFF}")
    if version & (_EXR_MULTIPART | _EXR_NON_IMAGE):
        raise _ExrProblem("multi-part and deep OpenEXR files are not supported")
    data_window: tuple[int, int, int, int] | None = None
    compression = 0
    tiles: tuple[int, int, int] | None = None
    for _ in range(_MAX_ATTRIBUTES):
        name = _read_cstring(handle)
        if name == "":
            break
        kind = _read_cstring(handle)
        (size,) = struct.unpack("<i", handle.read(4))
        if not 0 <= size <= min(_MAX_ATTRIBUTE_SIZE, file_size):
            raise _ExrProblem(f"attribute {name!r} claims {size} bytes")
        value = handle.read(size)
        if len(value) < size:
            raise EOFError(f"end of file inside attribute {name!r}")
        if name == "dataWindow" and kind == "box2i":
            data_window = struct.unpack("<4i", value[:16])
        elif name == "compression" and kind == "compression":
            compression = value[0]
        elif name == "tiles" and kind == "tiledesc":
            tile_w, tile_h, mode = struct.unpack("<IIB", value[:9])
            tiles = (tile_w, tile_h, mode)
    else:
        raise _ExrProblem("the header never ends")
    if data_window is None:
        raise _ExrProblem("no dataWindow attribute")
    x_min, y_min, x_max, y_max = data_window
    width, height = x_max - x_min + 1, y_max - y_min + 1
    if width < 1 or height < 1:
        raise _ExrProblem(f"empty data window {data_window}")
    if bool(version & _EXR_TILED) != (tiles is not None):
        raise _ExrProblem("tiled flag and tiles attribute disagree")
    return _ExrHeader(width, height, compression, tiles, handle.tell())
