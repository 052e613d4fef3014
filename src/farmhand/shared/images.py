"""Is this file a complete, readable image of the size we expect?

Blender can exit 0 after failing to write a frame, or leave a truncated file when it is
killed; a worker checks every frame with `verify_image` before reporting it, and the
manager checks again before storing it. PNG and JPEG are fully decoded with Pillow (so
truncation is caught). OpenEXR, which Pillow cannot read, is checked by parsing its
header and offset table: the data window gives the size, and the last chunk offset must
lie inside the file.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

EXR_MAGIC = b"\x76\x2f\x31\x01"
_EXR_TILED = 0x200
_EXR_MULTIPART = 0x1000
# Scanlines per chunk, by the EXR `compression` attribute's value.
_EXR_LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
_MAX_HEADER = 1 << 20


class ImageError(ValueError):
    """The file is missing, unreadable, truncated or of the wrong size; says which."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def verify_image(
    path: Path | str, expected_width: int | None = None, expected_height: int | None = None
) -> ImageInfo:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ImageError(f"{path.name} does not exist") from error
    if size == 0:
        raise ImageError(f"{path.name} is empty")
    with path.open("rb") as handle:
        head = handle.read(4)
    info = _exr_info(path, size) if head == EXR_MAGIC else _pillow_info(path)
    if (expected_width is not None and info.width != expected_width) or (
        expected_height is not None and info.height != expected_height
    ):
        raise ImageError(
            f"{path.name} is {info.width}x{info.height}, "
            f"expected {expected_width}x{expected_height}"
        )
    return info


def _pillow_info(path: Path) -> ImageInfo:
    try:
        with Image.open(path) as image:
            image.load()
            return ImageInfo(image.format or "unknown", image.width, image.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path.name} is not a readable image: {error}") from error


def _exr_info(path: Path, size: int) -> ImageInfo:
    with path.open("rb") as handle:
        data = handle.read(min(size, _MAX_HEADER))
    try:
        (version,) = struct.unpack_from("<I", data, 4)
        attributes, offset = _exr_attributes(data, 8)
        window = attributes.get("dataWindow")
        if window is None or len(window) != 16:
            raise ImageError(f"{path.name}: EXR header has no dataWindow")
        x_min, y_min, x_max, y_max = struct.unpack("<4i", window)
        width, height = x_max - x_min + 1, y_max - y_min + 1
        if width <= 0 or height <= 0:
            raise ImageError(f"{path.name}: EXR data window is empty")
        if not version & (_EXR_TILED | _EXR_MULTIPART):
            compression = attributes.get("compression", b"\x00")[0]
            chunks = math.ceil(height / _EXR_LINES_PER_CHUNK.get(compression, 1))
            table_end = offset + 8 * chunks
            if table_end > size:
                raise ImageError(f"{path.name} is truncated (EXR offset table incomplete)")
            with path.open("rb") as handle:
                handle.seek(offset)
                offsets = struct.unpack(f"<{chunks}Q", handle.read(8 * chunks))
            if not offsets or max(offsets) >= size or min(offsets) < table_end:
                raise ImageError(f"{path.name} is truncated (EXR chunk outside the file)")
    except struct.error as error:
        raise ImageError(f"{path.name} is not a readable EXR: {error}") from error
    return ImageInfo("OPEN_EXR", width, height)


def _exr_attributes(data: bytes, offset: int) -> tuple[dict[str, bytes], int]:
    """Parse `name\\0type\\0size value` attributes up to the header's closing null byte."""
    attributes: dict[str, bytes] = {}
    while True:
        if offset >= len(data):
            raise struct.error("header runs past the end of the file")
        if data[offset] == 0:
            return attributes, offset + 1
        name_end = data.index(b"\x00", offset)
        type_end = data.index(b"\x00", name_end + 1)
        (length,) = struct.unpack_from("<i", data, type_end + 1)
        start = type_end + 5
        if length < 0 or start + length > len(data):
            raise struct.error("attribute runs past the end of the file")
        attributes[data[offset:name_end].decode("latin-1")] = data[start : start + length]
        offset = start + length
