"""OpenEXR tiles of a still, read and written with every part and channel as rendered.

A tile of an EXR still is cut down (`blender.process._cut_out_tile`) and placed in its
frame (`merge.py`) with the `OpenEXR` package, not Pillow, which reads no EXR and keeps
no float. Each channel is read on its own (`separate_channels`) as a 2D numpy array of
its own pixel type (half, float or uint), so a multilayer file's passes
(`ViewLayer.Combined.R`, `ViewLayer.Depth.Z`, ...) are channels like any other and
survive the cut and the merge bit for bit; each part's header (compression, Blender's
metadata, `BlenderMultiChannel`, the part's name) is carried over.

Blender 3.4 writes a multilayer EXR as one part holding every pass's channels; Blender
5.0 writes it as a multi-part file, one part a pass (`ViewLayer.Combined`,
`ViewLayer.Depth`, `ViewLayer.Mist`, ...; one part only when there are no passes), each
with its own channels and pixel types (data passes in full float in a half-float file).
So an image here is a list of parts, written back in the order read: a tile or a merged
frame is the same kind of file as the whole render, part for part.

Blender writes a border render cropped to the border with its data window at (0, 0) and
the size of the crop, the same as its display window (checked with Blender 3.4 and 5.0,
single and multilayer, every part alike). A file whose data window lies elsewhere is
taken as its pixels: the image is the data window, and what is written here has both
windows at (0, 0)-(width - 1, height - 1) in every part.

Compression is kept, except a lossy one (`lossy_compression`: DWAA, DWAB, B44, B44A;
PXR24 for 32-bit float): Blender already compressed the tile with it, and compressing the
decoded pixels again would lose detail a second time (a DWAA frame re-encoded once
changes about a fifth of its pixels). Such a part is written with ZIP, losslessly, and
`RENDERED_COMPRESSION` in its header names the codec Blender used, so the merge (whose
tiles the cut already wrote in ZIP) can say so. The merged frame then differs from a
whole render only within that codec's own loss.

Which channels are the picture (`image_channels`) is decided here once, for the
manager's EXR thumbnails and the worker's videos alike. A video shows it through the
scene's own colour management when the worker's Blender can open the job's .blend
(`worker/video.py`); otherwise, and in the manager's thumbnails of frames Blender made
no preview of, through the sRGB curve (`to_srgb`, Blender's Standard view). A thumbnail
reads the picture a band of rows at a time (`PictureBands`), never the whole frame's
float32 pixels (768 MiB for an 8K frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import OpenEXR

from farmhand.shared.images import ImageError

_RECOMPUTED = ("channels", "dataWindow", "displayWindow", "chunkCount")
"""Header attributes that follow from the pixels written, never carried over: a cut or
merged image has other windows and another number of chunks than the file read."""


LOSSY_COMPRESSIONS = frozenset(
    {
        OpenEXR.B44_COMPRESSION,
        OpenEXR.B44A_COMPRESSION,
        OpenEXR.DWAA_COMPRESSION,
        OpenEXR.DWAB_COMPRESSION,
    }
)
"""Codecs that lose detail on any pixels they compress (PXR24 only on 32-bit float)."""
LOSSLESS_COMPRESSION = OpenEXR.ZIP_COMPRESSION
"""What a part in a lossy codec is written with instead: lossless, and what Blender
offers as its default for OpenEXR."""
RENDERED_COMPRESSION = "farmhandRenderedCompression"
"""Header attribute of a part written losslessly in place of a lossy codec: that codec's
name (`DWAA`), the one Blender compressed the pixels with."""


@dataclass
class ExrPart:
    """One part of an EXR: its name (`""` for a single-part file without one), header
    and channels, each a (height, width) array."""

    name: str
    header: dict[str, Any]
    channels: dict[str, npt.NDArray[Any]]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), from the pixels (every channel is as large: checked on read)."""
        height, width = next(iter(self.channels.values())).shape
        return int(width), int(height)


@dataclass
class ExrImage:
    """One EXR image: its parts, in the file's order, all of one size (checked on read)."""

    parts: list[ExrPart]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every part."""
        return self.parts[0].size

    @property
    def layout(self) -> list[tuple[str, dict[str, str]]]:
        """Each part's name and its channels' pixel types (channel name → `float16`,
        `float32`, `uint32`), in order: what tiles of one frame must share."""
        return [
            (part.name, {name: str(p.dtype) for name, p in sorted(part.channels.items())})
            for part in self.parts
        ]


def read_exr(path: Path) -> ExrImage:
    """Every part and channel of an EXR at full resolution; ImageError otherwise (deep
    data, a subsampled channel, parts of different sizes, a file that is not an EXR,
    pixels cut short), saying which is not supported rather than calling it damaged."""
    file = _open(path)
    parts: list[ExrPart] = []
    for part in file.parts:
        label = _check_part(path, file, part, part.channels.values())
        channels = {name: channel.pixels for name, channel in part.channels.items()}
        if len({pixels.shape for pixels in channels.values()}) != 1:
            raise ImageError(f"{label}: its channels differ in size")
        parts.append(ExrPart(part.name(), dict(part.header), channels))
    _check_sizes(path, {part.name: part.size for part in parts})
    return ExrImage(parts)


def _check_part(path: Path, file: Any, part: Any, channels: Iterable[Any]) -> str:
    """The part's name for a message (the file's, and the part's in a multi-part file),
    once its kind and `channels` (`OpenEXR.Channel`s) are ones read here; ImageError for
    deep data, a subsampled channel or none at all."""
    label = f"{path.name} (part {part.name()!r})" if len(file.parts) > 1 else path.name
    if part.type() in (OpenEXR.deepscanline, OpenEXR.deeptile):
        raise ImageError(f"{label} holds deep data, which is not supported")
    listed = False
    for channel in channels:
        listed = True
        if (channel.xSampling, channel.ySampling) != (1, 1):
            raise ImageError(
                f"{label}: channel {channel.name} is subsampled, which is not supported"
            )
    if not listed:
        raise ImageError(f"{label} has no channels")
    return label


def _check_sizes(path: Path, sizes: dict[str, tuple[int, int]]) -> None:
    """ImageError unless the file has parts, all of one size ((width, height) by name)."""
    if not sizes:
        raise ImageError(f"{path.name} has no parts")
    if len(set(sizes.values())) != 1:
        described = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
        raise ImageError(f"{path.name}: its parts differ in size ({described}), not supported")


def compression_name(compression: object) -> str:
    """`DWAA` for `OpenEXR.DWAA_COMPRESSION`: as Blender's codec menu names it."""
    name = getattr(compression, "name", str(compression))
    return name.removesuffix("_COMPRESSION")


def lossy_compression(part: ExrPart) -> str | None:
    """The name of the part's codec if compressing these pixels with it loses detail:
    DWAA, DWAB, B44 and B44A always, PXR24 when a channel is 32-bit float (it keeps 24
    bits of it; half and uint are kept whole); None for a lossless one."""
    compression = part.header.get("compression")
    if compression in LOSSY_COMPRESSIONS or (
        compression == OpenEXR.PXR24_COMPRESSION
        and any(pixels.dtype == np.float32 for pixels in part.channels.values())
    ):
        return compression_name(compression)
    return None


def rendered_lossy(image: ExrImage) -> list[str]:
    """The lossy codecs Blender compressed the image's parts with, once each in order:
    a part still in one, or one written losslessly in its place (`RENDERED_COMPRESSION`)."""
    names = [
        part.header.get(RENDERED_COMPRESSION) or lossy_compression(part) for part in image.parts
    ]
    return list(dict.fromkeys(str(name) for name in names if name))


def write_exr(image: ExrImage, path: Path) -> None:
    """Write `image`, part by part in its order, each with its header (compression,
    metadata, name) and both windows set to its pixels; the channel lists and chunk
    counts are made from the pixels, so they always match them. One part makes a
    single-part file, as one part was read from.

    A part in a lossy codec is written with `LOSSLESS_COMPRESSION` and named by
    `RENDERED_COMPRESSION`: its pixels were decoded from Blender's file, and a second
    lossy compression would lose more (the cut and the merge would each add their own)."""
    width, height = image.size
    window = (np.array([0, 0], dtype=np.int32), np.array([width - 1, height - 1], np.int32))
    parts = []
    for part in image.parts:
        header = {k: v for k, v in part.header.items() if k not in _RECOMPUTED}
        header |= {"dataWindow": window, "displayWindow": window}
        lossy = lossy_compression(part)
        if lossy is not None:
            header["compression"] = LOSSLESS_COMPRESSION
            header.setdefault(RENDERED_COMPRESSION, lossy)
        channels = {name: np.ascontiguousarray(pixels) for name, pixels in part.channels.items()}
        parts.append(OpenEXR.Part(header, channels, part.name))
    try:
        OpenEXR.File(parts).write(str(path))
    except (RuntimeError, ValueError, TypeError) as error:
        raise ImageError(f"cannot write {path.name}: {error}") from error


def crop_exr(image: ExrImage, left: int, top: int, width: int, height: int) -> ExrImage:
    """The `width` x `height` pixels at (`left`, `top`) from the top left, every part's
    every channel."""
    return ExrImage(
        [
            ExrPart(
                part.name,
                part.header,
                {
                    name: pixels[top : top + height, left : left + width]
                    for name, pixels in part.channels.items()
                },
            )
            for part in image.parts
        ]
    )


def _open(path: Path, header_only: bool = False) -> Any:
    try:
        return OpenEXR.File(str(path), separate_channels=True, header_only=header_only)
    except (RuntimeError, ValueError, TypeError) as error:  # the library's read errors
        raise ImageError(f"{path.name} is not a readable OpenEXR file: {error}") from error


# ---------------------------------------------------------------------- the picture

GREY_CHANNELS = ("V", "Y")
"""A single channel that is a grey picture: Blender 5 writes a black-and-white EXR as
`V`, the OpenEXR library's luminance images are `Y`."""


@dataclass(frozen=True)
class ImageChannels:
    """Where an EXR's picture is: the part (its index in the file) and the channels
    shown as red, green and blue (one channel three times for a grey picture)."""

    part: int
    layer: str
    """The channels' common prefix without its dot: `""` for bare `R`, `G`, `B`;
    `ViewLayer.Combined` for Blender's multilayer files."""
    rgb: tuple[str, str, str]

    def describe(self) -> str:
        """For a log line: `R, G, B`, `ViewLayer.Combined R, G, B`, `V (grey)`."""
        components = [name.rpartition(".")[2] for name in dict.fromkeys(self.rgb)]
        shown = ", ".join(components) + (" (grey)" if len(components) == 1 else "")
        return f"{self.layer} {shown}" if self.layer else shown


def _layers(names: Iterable[str]) -> dict[str, set[str]]:
    """Channel names grouped by layer: `ViewLayer.Combined.R` is component `R` of layer
    `ViewLayer.Combined`, a bare `R` component `R` of layer `""`."""
    layers: dict[str, set[str]] = {}
    for name in names:
        layer, _, component = name.rpartition(".")
        layers.setdefault(layer, set()).add(component)
    return layers


COMPOSITE_LAYER = "Composite"
"""The view layer name Blender gives the compositor's result in a multilayer EXR
(`Composite.Combined.R`, ...), written next to the view layers when compositing is on."""


def image_channels(parts: Sequence[Iterable[str]], view_layer: str | None = None) -> ImageChannels:
    """The channels that are the picture, given each part's channel names in file order.

    Blender's single-layer EXR has bare `R`, `G`, `B` (and `A`); its multilayer one keeps
    the picture as the Combined pass (`ViewLayer.Combined.R`, ...) next to data passes
    (Depth, Normal, Mist; a Vector pass even has R, G, B, A), all in one part in Blender
    3.4, a part a pass in Blender 5, where the Combined part need not come first. So: a
    bare RGB first, then a Combined pass, then any other layer with R, G and B; only
    without any of those, a lone grey channel (`GREY_CHANNELS`). ImageError when there
    is no picture at all (a file of data passes only).

    Among the Combined passes of a scene with several view layers, the one Blender saves
    as the frame's picture: the compositor's (`COMPOSITE_LAYER`) when the file has it,
    else `view_layer`, the scene's first view layer that renders, when the caller knows
    it (the driver reports it when Blender opens the .blend). Without it the file must
    decide, and only Blender 5's parts keep the scene's order of view layers: OpenEXR
    sorts the channels of one part by name, so in Blender 3.4's file the first is the
    alphabetically first layer, which need not be the scene's first (`Second` before
    `ViewLayer`). So, failing those: the first part, then the layer's name.
    """
    candidates: list[tuple[tuple[bool, bool, bool, int, int, str], ImageChannels]] = []
    for index, names in enumerate(parts):
        for layer, components in _layers(names).items():
            dot = f"{layer}." if layer else ""
            colour = components - {"A"}
            if {"R", "G", "B"} <= colour:
                rgb = (f"{dot}R", f"{dot}G", f"{dot}B")
            elif len(colour) == 1 and colour <= set(GREY_CHANNELS):
                grey = f"{dot}{next(iter(colour))}"
                rgb = (grey, grey, grey)
            else:
                continue
            combined = layer == "Combined" or layer.endswith(".Combined")
            owner = layer.removesuffix(".Combined") if combined else None
            chosen = 0 if owner == COMPOSITE_LAYER else 1 if owner and owner == view_layer else 2
            rank = (rgb[0] == rgb[1], layer != "", not combined, chosen, index, layer)
            candidates.append((rank, ImageChannels(index, layer, rgb)))
    if not candidates:
        raise ImageError("has no R, G and B channels (nor a grey V or Y channel) to show")
    return min(candidates, key=lambda candidate: candidate[0])[1]


def read_picture(
    path: Path, view_layer: str | None = None
) -> tuple[npt.NDArray[np.float32], ImageChannels]:
    """The EXR's picture (`image_channels`, preferring `view_layer`'s Combined pass) as
    scene-linear float32 RGB, (height, width, 3), and where it was found; every part is
    read and checked as `read_exr` does."""
    image = read_exr(path)
    try:
        where = image_channels([part.channels for part in image.parts], view_layer)
    except ImageError as error:
        raise ImageError(f"{path.name} {error}") from None
    channels = image.parts[where.part].channels
    return np.stack([channels[name] for name in where.rgb], axis=-1, dtype=np.float32), where


def to_srgb(linear: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scene-linear light as sRGB display values from 0 to 1, overwriting `linear`: what
    Blender's Standard view transform shows. Values past 0-1 are clipped (NaN is 0, as
    a pixel without light: `fmax` takes the number over a NaN), then the sRGB curve;
    computed in place (a 4K frame's three channels are 100 MB a copy)."""
    out = np.fmax(linear, np.float32(0.0), out=linear)
    np.fmin(out, np.float32(1.0), out=out)
    dark = out <= 0.0031308
    dark_values = out[dark] * np.float32(12.92)
    np.power(out, np.float32(1 / 2.4), out=out)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    out[dark] = dark_values
    return out


# ------------------------------------------------------- the picture, a band at a time

_BYTES_PER_PIXEL_READ_WHOLE = 4 + 4 + 4 + 3 + 3
"""What `read_picture` and `to_srgb` hold a pixel besides its channels: three float32
values, the sRGB curve's mask of dark values, and an 8-bit RGB pixel made from them."""


def _scanline_reader() -> tuple[Any, Any] | None:
    """The OpenEXR package's older `InputFile` and the pixel type to read with it
    (float32), or None if this version of the package has dropped them (deprecated
    since 3.3, said to go in a future release): then a picture is read whole.

    Kept rather than `OpenEXR.File` because `File` cannot read part of a file: in 3.5.3
    its only reading arguments are `separate_channels` and `header_only`, so it reads
    every part's every channel whole (a many-pass 8K frame's gigabytes, for a thumbnail
    of three channels). `InputFile` is deprecated only in its docstring: 3.5.3 issues
    no DeprecationWarning for it (checked with `-W error` on `InputFile`, `channels`
    and `close`), so there is nothing to silence. Should a later version warn, the
    filter must not be a `warnings.catch_warnings` here: the manager makes thumbnails
    on several threads, and that saves and restores the process's one list of filters
    (see `shared.images._pillow_warnings_are_errors`)."""
    try:
        import Imath  # type: ignore[import-untyped]  # shipped with OpenEXR, untyped
    except ImportError:
        return None
    input_file = getattr(OpenEXR, "InputFile", None)
    if input_file is None:
        return None
    return input_file, Imath.PixelType(Imath.PixelType.FLOAT)


class PictureBands:
    """The picture `read_picture` returns, read a band of scanlines at a time, so that a
    caller needs memory for a band, not for the frame (an 8192 by 8192 frame's picture
    is 768 MiB as float32; a band of 64 of its rows 6 MiB).

    Only the headers are read when made: the picture's place (`image_channels`) and size,
    and the checks `read_exr` makes of them (deep data, subsampled channels, parts of
    different sizes refused as unsupported). Pixels are read by `read`, with the OpenEXR
    package's `InputFile` (its older API, still shipped; `OpenEXR.File` reads every
    part's every pixel at once and has no range of scanlines), which reads only the
    chunks of the scanlines asked for, of the picture's channels only. That API reads
    the first part of a multi-part file and no other: a picture in another part (a
    Blender 5 file whose Combined part is not the first) is read whole, once, by
    `read_picture` on the first `read` (`in_bands` False; `whole_read_bytes` is what
    that holds at most, for a caller to decide whether to).
    """

    def __init__(self, path: Path, view_layer: str | None = None) -> None:
        self.path = path
        file = _open(path, header_only=True)
        names: list[list[str]] = []
        sizes: dict[str, tuple[int, int]] = {}
        windows: list[tuple[int, int]] = []
        for part in file.parts:
            channels = part.header.get("channels") or []  # no pixels: their names, sampling
            _check_part(path, file, part, channels)
            low, high = part.header["dataWindow"]
            sizes[part.name()] = (int(high[0] - low[0] + 1), int(high[1] - low[1] + 1))
            windows.append((int(low[0]), int(low[1])))
            names.append([channel.name for channel in channels])
        _check_sizes(path, sizes)
        try:
            self.where = image_channels(names, view_layer)
        except ImageError as error:
            raise ImageError(f"{path.name} {error}") from None
        self.view_layer = view_layer
        self.size: tuple[int, int] = next(iter(sizes.values()))
        """(width, height) of the picture."""
        self._top = windows[self.where.part][1]
        self._reader = _scanline_reader() if self.where.part == 0 else None
        self.in_bands = self._reader is not None
        """Whether `read` reads only the rows asked for (the picture is in the first part)."""
        width, height = self.size
        channel_count = sum(len(part) for part in names)
        self.whole_read_bytes = width * height * (4 * channel_count + _BYTES_PER_PIXEL_READ_WHOLE)
        """At most what reading the picture whole holds (every part's channels, taken as
        4 bytes a pixel, the header-only read giving no pixel types, and the float32
        picture made of them), for a picture not `in_bands`."""
        self._input: Any = None
        self._whole: npt.NDArray[np.float32] | None = None

    def read(self, first: int, count: int) -> npt.NDArray[np.float32]:
        """Rows `first` to `first + count - 1` (from the top) of the picture, as
        scene-linear float32 RGB, (count, width, 3), for the caller to overwrite
        (`to_srgb` does: each row is meant to be read once); ImageError when the pixels
        cannot be read (a file cut short, damaged chunks)."""
        width, height = self.size
        if count < 1 or first < 0 or first + count > height:
            raise ValueError(f"rows {first} to {first + count - 1} of a {height}-row picture")
        if not self.in_bands:
            if self._whole is None:
                self._whole, _ = read_picture(self.path, self.view_layer)
            return self._whole[first : first + count]
        assert self._reader is not None  # in_bands
        input_file, as_float = self._reader
        unique = list(dict.fromkeys(self.where.rgb))  # a grey picture's one channel once
        try:
            if self._input is None:
                self._input = input_file(str(self.path))
            read = self._input.channels(
                unique,
                as_float,
                scanLine1=self._top + first,
                scanLine2=self._top + first + count - 1,
            )
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            raise ImageError(f"{self.path.name}: its pixels cannot be read: {error}") from error
        planes = dict(zip(unique, read, strict=True))
        picture = np.empty((count, width, 3), dtype=np.float32)
        for index, name in enumerate(self.where.rgb):
            picture[..., index] = np.frombuffer(planes[name], dtype=np.float32).reshape(
                count, width
            )
        return picture

    def close(self) -> None:
        """Let go of the open file and of a picture read whole."""
        if self._input is not None:
            self._input.close()
            self._input = None
        self._whole = None
