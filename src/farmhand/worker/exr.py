"""OpenEXR tiles of a still, read and written with every channel as it was rendered.

A tile of an EXR still is cut down (`blender.process._cut_out_tile`) and placed in its
frame (`merge.py`) with the `OpenEXR` package, not Pillow, which reads no EXR and keeps
no float. Each channel is read on its own (`separate_channels`) as a 2D numpy array of
its own pixel type (half, float or uint), so a multilayer file's passes
(`ViewLayer.Combined.R`, `ViewLayer.Depth.Z`, ...) are channels like any other and
survive the cut and the merge bit for bit; the header (compression, Blender's metadata,
`BlenderMultiChannel`) is carried over.

Blender writes a border render cropped to the border with its data window at (0, 0) and
the size of the crop, the same as its display window (checked with Blender 3.4 and 5.0,
single and multilayer). A file whose data window lies elsewhere is taken as its pixels:
the image is the data window, and what is written here has both windows at
(0, 0)-(width - 1, height - 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import OpenEXR

from farmhand.shared.images import ImageError


@dataclass
class ExrImage:
    """One EXR image: its header and its channels, each a (height, width) array."""

    header: dict[str, Any]
    channels: dict[str, npt.NDArray[Any]]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), from the pixels (every channel is as large: checked on read)."""
        height, width = next(iter(self.channels.values())).shape
        return int(width), int(height)

    @property
    def layout(self) -> dict[str, str]:
        """Channel name → pixel type (`float16`, `float32`, `uint32`): what tiles of one
        frame must share."""
        return {name: str(pixels.dtype) for name, pixels in sorted(self.channels.items())}


def read_exr(path: Path) -> ExrImage:
    """Every channel of a single-part EXR at full resolution; ImageError otherwise (a
    subsampled channel, a file that is not an EXR, pixels cut short)."""
    file = _open(path)
    if len(file.parts) != 1:
        raise ImageError(f"{path.name} has {len(file.parts)} parts; one is supported")
    channels: dict[str, npt.NDArray[Any]] = {}
    for name, channel in file.channels().items():
        if (channel.xSampling, channel.ySampling) != (1, 1):
            raise ImageError(f"{path.name}: channel {name} is subsampled, which is not supported")
        channels[name] = channel.pixels
    if not channels:
        raise ImageError(f"{path.name} has no channels")
    if len({pixels.shape for pixels in channels.values()}) != 1:
        raise ImageError(f"{path.name}: its channels differ in size")
    return ExrImage(dict(file.header()), channels)


def write_exr(image: ExrImage, path: Path) -> None:
    """Write `image` with its header (compression, metadata) and both windows set to its
    pixels; the channel list is made from the pixels, so it always matches them."""
    width, height = image.size
    window = (np.array([0, 0], dtype=np.int32), np.array([width - 1, height - 1], np.int32))
    header = {k: v for k, v in image.header.items() if k not in ("channels", "dataWindow")}
    header |= {"dataWindow": window, "displayWindow": window}
    channels = {name: np.ascontiguousarray(pixels) for name, pixels in image.channels.items()}
    try:
        OpenEXR.File(header, channels).write(str(path))
    except (RuntimeError, ValueError, TypeError) as error:
        raise ImageError(f"cannot write {path.name}: {error}") from error


def crop_exr(image: ExrImage, left: int, top: int, width: int, height: int) -> ExrImage:
    """The `width` x `height` pixels at (`left`, `top`) from the top left, every channel."""
    return ExrImage(
        image.header,
        {
            name: pixels[top : top + height, left : left + width]
            for name, pixels in image.channels.items()
        },
    )


def _open(path: Path) -> Any:
    try:
        return OpenEXR.File(str(path), separate_channels=True)
    except (RuntimeError, ValueError, TypeError) as error:  # the library's read errors
        raise ImageError(f"{path.name} is not a readable OpenEXR file: {error}") from error
