"""Videos of every kind of OpenEXR frame farmhand accepts, and the rule for which
channels are the picture, on files written here with the OpenEXR library.

ffmpeg 5 reads only a plain single-layer EXR: Blender 3.4's multilayer file (the
picture as `ViewLayer.Combined.R`, ... next to the passes' channels, one part) made it
exit 1 without a word, Blender 5's multi-part one (a part a pass) "Not yet implemented",
and Blender 5's black-and-white `V` channel too. The worker now reads each frame's
picture itself and pipes it to ffmpeg, so all of them make the same video as a
single-layer frame of the same pixels. The real Blender files are
`tests/integration/test_video_multilayer.py`'s.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import OpenEXR
import pytest
from PIL import Image

from farmhand.manager.web.thumbnails import exr_preview
from farmhand.shared.images import ImageError
from farmhand.shared.schemas import FrameFile, VideoSettings
from farmhand.worker.cache import BlobCache
from farmhand.worker.exr import ImageChannels, image_channels
from farmhand.worker.ffmpeg import FfmpegInstall, find_ffmpeg, run_ffmpeg
from farmhand.worker.video import SceneLook, SceneUnavailable, VideoResult, VideoWork, make_video
from tests.unit.test_exr_multipart import write_multipart
from tests.unit.test_ffmpeg import needs_ffmpeg, script, video_task

WIDTH, HEIGHT = 32, 16
SKY = (0.2, 0.3, 0.5)
"""Scene-linear light; 124, 149, 188 in Blender's Standard view (and in sRGB)."""
SKY_SRGB = (124, 149, 188)

Parts = dict[str, dict[str, npt.NDArray[Any]]]


def plane(value: float, dtype: str = "float32") -> npt.NDArray[Any]:
    return np.full((HEIGHT, WIDTH), value, dtype=dtype)


def combined(prefix: str, dtype: str = "float16") -> dict[str, npt.NDArray[Any]]:
    colour = {f"{prefix}{c}": plane(v, dtype) for c, v in zip("RGB", SKY, strict=True)}
    return colour | {f"{prefix}A": plane(1.0, dtype)}


# Bright data passes, so that a pass taken for the picture shows.
DEPTH = {"ViewLayer.Depth.Z": plane(40.0)}
MIST = {"ViewLayer.Mist.Z": plane(1.0)}
NORMAL = {f"ViewLayer.Normal.{c}": plane(v) for c, v in zip("XYZ", (1.0, 0.0, 1.0), strict=True)}
VECTOR = {f"ViewLayer.Vector.{c}": plane(1.0) for c in "RGBA"}

KINDS: dict[str, Parts] = {
    "single-layer RGBA": {"": combined("")},
    "Blender 3.4 multilayer": {"": combined("ViewLayer.Combined.")},
    "Blender 3.4 multilayer with passes": {
        "": combined("ViewLayer.Combined.", "float32") | DEPTH | MIST | NORMAL | VECTOR
    },
    "Blender 5.0 multilayer": {"ViewLayer.Combined": combined("ViewLayer.Combined.")},
    "Blender 5.0 multi-part with passes, Combined not first": {
        "ViewLayer.Vector": VECTOR,
        "ViewLayer.Combined": combined("ViewLayer.Combined."),
        "ViewLayer.Depth": DEPTH,
        "ViewLayer.Mist": MIST,
        "ViewLayer.Normal": NORMAL,
    },
}


def write_exr(path: Path, parts: Parts) -> Path:
    """One part named "" is a single-part file, as Blender 3.4 writes; else multi-part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if list(parts) == [""]:
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, dict(parts[""])).write(str(path))
        return path
    return write_multipart(path, parts)


def exr_job(tmp_path: Path, frames: list[Parts]) -> tuple[list[FrameFile], dict[str, Path]]:
    files, sources = [], {}
    for number, parts in enumerate(frames, start=1):
        name = f"frames/{number:04d}.exr"
        path = write_exr(tmp_path / "rendered" / name, parts)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files.append(FrameFile(path=name, sha256=digest, size=len(data), frame=number))
        sources[name] = path
    return files, sources


def encode(
    tmp_path: Path,
    frames: list[Parts],
    ffmpeg: FfmpegInstall | None = None,
    open_scene: Callable[[], SceneLook] | None = None,
) -> tuple[VideoResult, list[str]]:
    files, sources = exr_job(tmp_path, frames)
    ffmpeg = ffmpeg or find_ffmpeg()
    assert ffmpeg is not None
    lines: list[str] = []
    work = VideoWork(
        video_task(files, VideoSettings(crf=0)), tmp_path / "work", threading.Event(),
        BlobCache(tmp_path / "cache"),
        lambda frame, dest: shutil.copyfile(sources[frame.path], dest),
        on_log=lines.append, open_scene=open_scene,
    )  # fmt: skip
    return make_video(work, ffmpeg), lines


def first_pixel(video: Path, tmp_path: Path) -> tuple[int, int, int]:
    first = tmp_path / "first.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(first)],
        check=True,
    )
    with Image.open(first) as image:
        pixel = image.convert("RGB").getpixel((WIDTH // 2, HEIGHT // 2))
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


# ---------------------------------------------------------------------- the picture


def test_the_picture_is_a_bare_rgb_then_the_combined_pass_then_any_rgb_layer() -> None:
    bare = image_channels([["A", "B", "G", "R", "Z"]])
    assert bare == ImageChannels(0, "", ("R", "G", "B"))
    # A Vector pass has R, G, B and A too, and comes first by name and by part.
    one_part = image_channels([["ViewLayer.Combined.R", "ViewLayer.Combined.G",
                                "ViewLayer.Combined.B", "ViewLayer.AO.R", "ViewLayer.AO.G",
                                "ViewLayer.AO.B", "ViewLayer.Depth.Z"]])  # fmt: skip
    assert one_part.layer == "ViewLayer.Combined"
    parts = [list(VECTOR), list(DEPTH), list(combined("ViewLayer.Combined."))]
    assert image_channels(parts) == ImageChannels(
        2, "ViewLayer.Combined", ("ViewLayer.Combined.R", "ViewLayer.Combined.G",
                                  "ViewLayer.Combined.B"),
    )  # fmt: skip
    assert image_channels([["Beauty.R", "Beauty.G", "Beauty.B"]]).layer == "Beauty"


TWO_LAYERS = ["Second.Combined.R", "Second.Combined.G", "Second.Combined.B",
              "ViewLayer.Combined.R", "ViewLayer.Combined.G", "ViewLayer.Combined.B"]  # fmt: skip
"""Blender 3.4's one part of a scene with the view layers `ViewLayer` (the scene's first)
and `Second`: OpenEXR keeps the channels sorted by name, so `Second` comes first."""


def test_of_several_view_layers_the_picture_is_the_scenes_first_when_known() -> None:
    assert image_channels([TWO_LAYERS], "ViewLayer").layer == "ViewLayer.Combined"
    assert image_channels([TWO_LAYERS], "Second").layer == "Second.Combined"
    # Not known (a worker without Blender, the manager's thumbnail): the file decides.
    assert image_channels([TWO_LAYERS]).layer == "Second.Combined"
    assert image_channels([TWO_LAYERS], "Gone").layer == "Second.Combined"
    # Blender 5's parts keep the scene's order of view layers.
    parts = [TWO_LAYERS[3:], list(DEPTH), TWO_LAYERS[:3]]
    assert image_channels(parts).layer == "ViewLayer.Combined"
    # Only a Combined pass is a view layer's picture: a layer's other RGB pass is not.
    vector = [f"Second.Vector.{c}" for c in "RGB"]
    assert image_channels([[*vector, *TWO_LAYERS[3:]]], "Second").layer == "ViewLayer.Combined"


def test_with_compositing_the_picture_is_the_compositors_whatever_the_layer() -> None:
    """Blender 3.4 writes the compositor's result as a `Composite` layer beside the view
    layers, and saves it, not a view layer, as the frame's picture (PNG, preview)."""
    composite = ["Composite.Combined.R", "Composite.Combined.G", "Composite.Combined.B"]
    assert image_channels([[*TWO_LAYERS, *composite]], "ViewLayer").layer == "Composite.Combined"
    assert image_channels([[*TWO_LAYERS, *composite]]).layer == "Composite.Combined"


def test_a_lone_grey_channel_is_a_grey_picture_but_only_without_colour() -> None:
    assert image_channels([["V"]]).rgb == ("V", "V", "V"), "Blender 5's black and white"
    assert image_channels([["A", "Y"]]).rgb == ("Y", "Y", "Y")
    assert image_channels([["Y", "R", "G", "B"]]).rgb == ("R", "G", "B")
    assert image_channels([["V"]]).describe() == "V (grey)"


def test_a_file_of_data_passes_only_has_no_picture(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no R, G and B channels"):
        image_channels([list(DEPTH), list(NORMAL)])  # Normal's Y is no grey picture
    path = write_exr(tmp_path / "data.exr", {"ViewLayer.Depth": DEPTH, "ViewLayer.Mist": MIST})
    with pytest.raises(ImageError, match=r"data\.exr has no R, G and B"):
        exr_preview(path)


# ---------------------------------------------------------------------- the video


@needs_ffmpeg
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_exr_frame_makes_the_video_of_its_combined_pass(
    tmp_path: Path, kind: str
) -> None:
    result, lines = encode(tmp_path, [KINDS[kind]] * 3)
    assert result.ok, result.error
    assert result.video is not None
    pixel = first_pixel(result.video, tmp_path)
    assert all(abs(got - want) <= 3 for got, want in zip(pixel, SKY_SRGB, strict=True)), pixel
    assert any("reads each frame's picture itself" in line for line in lines), lines
    layer = "R, G, B" if kind.startswith("single") else "ViewLayer.Combined R, G, B"
    assert f"frame 1 onwards: the picture is the {layer} channels" in lines
    # The manager's thumbnail of the frame shows the same picture.
    shown = exr_preview(tmp_path / "rendered" / "frames" / "0001.exr").getpixel((1, 1))
    assert shown == SKY_SRGB


class StandInLook:
    """The job's scene as a stand-in for Blender (`SceneLook`): shows every picture as
    mid-grey, and keeps what it was given."""

    view_layer = "ViewLayer"
    description = "Blender 9.9: Filmic view"

    def __init__(self) -> None:
        self.given: list[npt.NDArray[np.float32]] = []
        self.closed = False

    def display(self, linear: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.given.append(linear.copy())
        return np.full(linear.shape, 0.5, dtype=np.float32)

    def close(self) -> None:
        self.closed = True


BRIGHT = (0.8, 0.8, 0.8)
TWO_LAYER_FRAME: Parts = {
    "": combined("Second.Combined.")
    | {f"ViewLayer.Combined.{c}": plane(v) for c, v in zip("RGB", BRIGHT, strict=True)}
}


@needs_ffmpeg
def test_the_scene_shows_the_pictures_of_its_first_view_layer(tmp_path: Path) -> None:
    look = StandInLook()
    result, lines = encode(tmp_path, [TWO_LAYER_FRAME] * 2, open_scene=lambda: look)
    assert result.ok, result.error
    assert result.video is not None
    assert all(abs(got - 128) <= 2 for got in first_pixel(result.video, tmp_path))
    assert len(look.given) == 2, "every frame went through the scene's view"
    assert np.allclose(look.given[0], BRIGHT), "the scene's first layer, not Second"
    assert look.closed, "and its Blender was closed"
    assert any("Blender 9.9: Filmic view" in line for line in lines), lines


@needs_ffmpeg
def test_a_scene_that_cannot_be_opened_leaves_the_srgb_curve_and_says_why(
    tmp_path: Path,
) -> None:
    def cannot() -> SceneLook:
        raise SceneUnavailable("none of this worker's Blenders (3.4) can open it")

    result, lines = encode(tmp_path, [KINDS["Blender 3.4 multilayer"]] * 2, open_scene=cannot)
    assert result.ok, result.error
    assert result.video is not None
    pixel = first_pixel(result.video, tmp_path)
    assert all(abs(got - want) <= 3 for got, want in zip(pixel, SKY_SRGB, strict=True)), pixel
    assert any("(none of this worker's Blenders (3.4) can open it)" in line for line in lines)
    assert any("through the sRGB curve" in line for line in lines)


@needs_ffmpeg
def test_a_black_and_white_exr_makes_a_grey_video(tmp_path: Path) -> None:
    """Blender 5 writes a BW single-layer EXR as one `V` channel, which ffmpeg 5 did not
    read ("Not yet implemented")."""
    result, _ = encode(tmp_path, [{"": {"V": plane(0.2)}}] * 2)
    assert result.ok, result.error
    assert result.video is not None
    assert all(abs(got - 124) <= 3 for got in first_pixel(result.video, tmp_path))


@needs_ffmpeg
def test_a_frame_that_cannot_be_read_fails_the_video_naming_it(tmp_path: Path) -> None:
    broken = {"": DEPTH}
    result, _ = encode(tmp_path, [KINDS["Blender 3.4 multilayer"], broken, broken])
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("frame 2: frames/0002.exr has no R, G and B channels")

    smaller = {"": {c: np.ones((8, 8), np.float32) for c in "RGB"}}
    result, _ = encode(tmp_path / "sizes", [KINDS["single-layer RGBA"], smaller])
    assert not result.ok
    assert result.error == (
        "frame 2: frames/0002.exr is 8x8, the first frame 32x16: a video's frames must "
        "all be one size"
    )


# ---------------------------------------------------------------------- the pipe


def test_frames_are_made_as_ffmpeg_takes_them_not_all_at_once(tmp_path: Path) -> None:
    """Memory holds a frame or two, however many frames there are: the feed is asked
    for the next frame only once ffmpeg has taken the last (the pipe holds 64 KiB)."""
    fake = script(tmp_path / "ffmpeg", "exec cat > /dev/null\n")
    made: list[int] = []

    def frames() -> Iterator[bytes]:
        for number in range(20):
            made.append(number)
            yield bytes(1 << 20)

    result = run_ffmpeg([str(fake)], threading.Event(), feed=frames())
    assert result.ok, result.error
    assert made == list(range(20))

    stuck = script(tmp_path / "stuck", "exec sleep 60\n")  # never reads its stdin
    made.clear()
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = run_ffmpeg([str(stuck)], cancel, feed=frames())
    assert result.error == "canceled"
    assert len(made) <= 2, f"{len(made)} frames made for an ffmpeg that read none"


def test_an_ffmpeg_that_stops_reading_reports_its_own_error(tmp_path: Path) -> None:
    fake = script(tmp_path / "ffmpeg", "echo 'pipe:0: Invalid data' >&2; exit 1\n")

    def endless() -> Iterator[bytes]:
        while True:
            yield bytes(1 << 20)

    result = run_ffmpeg([str(fake)], threading.Event(), feed=endless())
    assert not result.ok
    assert result.error == "ffmpeg failed: pipe:0: Invalid data"


def test_a_frame_that_cannot_be_made_stops_ffmpeg(tmp_path: Path) -> None:
    fake = script(tmp_path / "ffmpeg", "exec sleep 60\n")  # would wait for ever

    def failing() -> Iterator[bytes]:
        yield b"x"
        raise ImageError("frame 2: frames/0002.exr is not a readable OpenEXR file")

    result = run_ffmpeg([str(fake)], threading.Event(), feed=failing())
    assert not result.ok
    assert result.error == "frame 2: frames/0002.exr is not a readable OpenEXR file"

    def buggy() -> Iterator[bytes]:
        raise KeyError("a bug, not a problem of the job")
        yield b""

    with pytest.raises(KeyError, match="a bug"):
        run_ffmpeg([str(fake)], threading.Event(), feed=buggy())
