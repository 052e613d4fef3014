"""An EXR frame's thumbnail is made from a band of rows at a time, not the whole frame.

Decoding an 8192 by 8192 EXR whole as float32 held about 1.4 GiB to make a 256-px
thumbnail, two at a time nearly 3 GiB. The thumbnail now reads the picture's rows a band
at a time (`exr.PictureBands`) and averages each band down before reading the next, so
the memory is a band's and the small image's whatever the frame's size; and it looks as
the whole frame's did (Pillow's thumbnail of the frame in display values), within a level
of 8 bits. The frames are real OpenEXR files written here; the memory is measured in a
child process (its peak resident size, Linux's `VmHWM`), which sees every allocation,
the OpenEXR library's own too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import OpenEXR
import pytest
from PIL import Image

from farmhand.manager.storage.thumbnail_cache import placeholder_path
from farmhand.manager.web import thumbnails
from farmhand.manager.web.thumbnails import exr_preview, thumbnail
from farmhand.worker.exr import read_picture, to_srgb

Channels = dict[str, npt.NDArray[Any]]


def pattern(width: int, height: int, seed: int = 0) -> tuple[Channels, Channels, Channels]:
    """Red, green and blue planes a resampling mistake shows in: a ramp past 1.0 (clipped),
    a curve with noise, and fine stripes of black and white (averaged after the sRGB curve,
    as a whole frame's thumbnail averages them, they are mid-grey 128; before it, 188)."""
    x = np.arange(width, dtype=np.float32)[np.newaxis, :]
    y = np.arange(height, dtype=np.float32)[:, np.newaxis]
    noise = np.random.default_rng(seed).random((height, width), np.float32)
    noise *= np.float32(0.1)
    noise += (y / height) ** 2
    red = np.repeat((x / width * 1.5).astype(np.float16), height, axis=0)  # contiguous
    green = noise.astype(np.float16)
    blue = ((x // 3 + y // 5) % 2).astype(np.float16)
    return {"R": red}, {"G": green}, {"B": blue}


def header(**more: Any) -> dict[str, Any]:
    return {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage} | more


def single_part(path: Path, width: int, height: int) -> Path:
    """Blender's EXR: bare R, G, B (and A), half float."""
    red, green, blue = pattern(width, height)
    alpha = {"A": np.ones((height, width), np.float16)}
    OpenEXR.File(header(), red | green | blue | alpha).write(str(path))
    return path


def one_part_multilayer(path: Path, width: int, height: int) -> Path:
    """Blender 3.4's multilayer EXR: every pass's channels in one part (a Depth pass, and a
    second view layer whose Combined pass is not the picture: `ViewLayer` sorts after it
    but `Composite` is the compositor's)."""
    red, green, blue = pattern(width, height)
    picture = {f"Composite.Combined.{c}": v for p in (red, green, blue) for c, v in p.items()}
    shape = (height, width)
    other = {f"ViewLayer.Combined.{c}": np.full(shape, 0.9, np.float16) for c in "RGBA"}
    depth = {"ViewLayer.Depth.Z": np.full(shape, 7.0, np.float32)}
    OpenEXR.File(header(), picture | other | depth).write(str(path))
    return path


def multi_part(path: Path, width: int, height: int, combined_first: bool = True) -> Path:
    """Blender 5's multilayer EXR with passes: a part a pass, full-float data passes."""
    red, green, blue = pattern(width, height)
    shape = (height, width)
    combined = {f"ViewLayer.Combined.{c}": v for p in (red, green, blue) for c, v in p.items()}
    combined["ViewLayer.Combined.A"] = np.ones(shape, np.float16)
    passes = [
        OpenEXR.Part(header(), {"ViewLayer.Depth.Z": np.full(shape, 3, np.float32)}, "Depth"),
        OpenEXR.Part(header(), {"ViewLayer.Mist.Z": np.full(shape, 1, np.float32)}, "Mist"),
    ]
    first = OpenEXR.Part(header(), combined, "ViewLayer.Combined")
    parts = [first, *passes] if combined_first else [*passes, first]
    OpenEXR.File(parts).write(str(path))
    return path


def grey(path: Path, width: int, height: int) -> Path:
    """Blender 5's black-and-white EXR: one `V` channel."""
    _, green, _ = pattern(width, height)
    OpenEXR.File(header(), {"V": green["G"]}).write(str(path))
    return path


def offset_window(path: Path, width: int, height: int) -> Path:
    """A data window that does not start at (0, 0): the image is its pixels."""
    red, green, blue = pattern(width, height)
    window = (np.array([10, 20], np.int32), np.array([9 + width, 19 + height], np.int32))
    made = header(dataWindow=window, displayWindow=window)
    OpenEXR.File(made, red | green | blue).write(str(path))
    return path


KINDS: dict[str, Callable[[Path, int, int], Path]] = {
    "single part": single_part,
    "one-part multilayer": one_part_multilayer,
    "multi-part": multi_part,
    "grey": grey,
    "data window off the origin": offset_window,
}


def whole_frame_thumbnail(path: Path, size: int) -> Image.Image:
    """The thumbnail as it was made before: the whole picture decoded, through the sRGB
    curve to 8 bits, then Pillow's `thumbnail`."""
    linear, _ = read_picture(path)
    display = to_srgb(linear)
    display *= np.float32(255)
    display += np.float32(0.5)
    image = Image.fromarray(display.astype(np.uint8), "RGB")
    image.thumbnail((size, size))
    return image


def assert_looks_the_same(ours: Image.Image, theirs: Image.Image) -> None:
    assert ours.size == theirs.size
    difference = np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16))
    assert difference.max() <= 1, f"{difference.max()} levels apart at most"
    assert difference.mean() < 0.5


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_thumbnail_made_band_by_band_looks_as_the_whole_frames(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bands of a few rows (a last one shorter, blocks cut off at the right and bottom
    edges), every kind of picture a file may hold."""
    path = KINDS[kind](tmp_path / "frame.exr", 203, 157)
    monkeypatch.setattr(thumbnails, "BAND_PIXELS", 203 * 6)
    for size in (16, 64, 100, 256):
        assert_looks_the_same(exr_preview(path, size), whole_frame_thumbnail(path, size))


@pytest.fixture(scope="module")
def large_frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4099 by 3001 half-float frame (no block size divides it)."""
    return single_part(tmp_path_factory.mktemp("large") / "frame.exr", 4099, 3001)


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_a_large_frames_thumbnail_looks_as_the_whole_frames(large_frame: Path, size: int) -> None:
    assert_looks_the_same(exr_preview(large_frame, size), whole_frame_thumbnail(large_frame, size))
    stripes = np.asarray(exr_preview(large_frame, size))[..., 2]
    assert abs(int(np.median(stripes)) - 128) <= 2, "the stripes averaged as displayed"


MEASURE = """
import json, sys
from pathlib import Path
from farmhand.manager.web.thumbnails import exr_preview
import farmhand.worker.exr  # numpy, OpenEXR: loaded before the baseline

def peak_kib():  # this program's peak resident size (ru_maxrss keeps the parent's)
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])

before = peak_kib()
made = exr_preview(Path(sys.argv[1]), 256)
print(json.dumps({"grown_kib": peak_kib() - before, "size": made.size}))
"""

BOUND_MIB = 64
"""What making the thumbnail may add to the process's peak: a band (some 16 MiB), the
OpenEXR library's buffers and the small image; the whole picture of the 4096 by 4096
frame below is 192 MiB as float32 alone, and decoding it held some 300 MiB."""


@pytest.mark.parametrize("kind", ["single part", "one-part multilayer", "multi-part"])
def test_making_a_large_frames_thumbnail_holds_a_band_not_the_frame(
    tmp_path: Path, kind: str
) -> None:
    width = height = 4096
    path = KINDS[kind](tmp_path / "frame.exr", width, height)
    assert width * height * 12 >= 3 * BOUND_MIB * 2**20, "the bound is far below the picture"
    child = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    measured = json.loads(child.stdout)
    assert measured["size"] == [256, 256], "the frame's thumbnail, not a placeholder"
    grown_mib = measured["grown_kib"] / 1024
    assert grown_mib < BOUND_MIB, f"{grown_mib:.0f} MiB held to make a 256-px thumbnail"


def test_a_picture_outside_the_first_part_is_read_whole_only_when_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OpenEXR package reads a range of rows of a file's first part only: a picture in
    another part is read whole, within `WHOLE_READ_BYTES`, and the frame past it gets the
    'EXR' tile rather than holding what it needs."""
    path = multi_part(tmp_path / "frame.exr", 203, 157, combined_first=False)
    assert_looks_the_same(exr_preview(path, 64), whole_frame_thumbnail(path, 64))
    cache = tmp_path / "cache"
    monkeypatch.setattr(thumbnails, "WHOLE_READ_BYTES", 203 * 157 * 8)
    made = thumbnail(cache, path, "a" * 64, "frames/0001.exr", 64)
    assert made == placeholder_path(cache, "EXR")


def test_a_frame_cut_short_is_the_exr_tile(tmp_path: Path) -> None:
    """Its headers read, its rows fail part way: the tile, never an error."""
    whole = single_part(tmp_path / "whole.exr", 512, 1024).read_bytes()
    cut = tmp_path / "cut.exr"
    cut.write_bytes(whole[: len(whole) // 2])
    cache = tmp_path / "cache"
    assert thumbnail(cache, cut, "b" * 64, "frames/0001.exr") == placeholder_path(cache, "EXR")
    with Image.open(placeholder_path(cache, "EXR")) as tile:
        assert tile.size == (256, 192)


@pytest.mark.parametrize(
    "width, height", [(4099, 3001), (3001, 4099), (1, 5000), (5000, 1), (7, 7)]
)
def test_an_exr_thumbnail_is_as_large_as_pillows_of_the_whole_frame(
    width: int, height: int
) -> None:
    for size in (1, 64, 256, 2048):
        whole = Image.new("L", (width, height))
        whole.thumbnail((size, size))
        assert thumbnails.fitted_size(width, height, size) == whole.size
