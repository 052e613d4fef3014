"""A `video` task: fetch the job's rendered frames, encode them with ffmpeg, check the file.

The frames are laid out as one gap-free sequence (`seq/000000.png`, …) in frame order,
whatever the job's frame numbers were (a step of 2, negative frames), because ffmpeg's
image-sequence reader stops at the first gap. They come through the worker's blob cache,
so a worker that rendered some of them downloads only the others.

OpenEXR frames are not given to ffmpeg as files: ffmpeg 5 reads neither Blender's
multilayer EXR (it exits with no message unless told the layer) nor Blender 5's
multi-part one ("Not yet implemented"), nor Blender 5's black-and-white `V` channel.
The worker reads each frame itself (`exr.read_picture`: the picture is a bare RGB or a
Combined pass, the rule the manager's thumbnails follow), shows it as the scene does and
pipes it to ffmpeg as 16-bit RGB, frame by frame as ffmpeg encodes, so one frame at a
time is in memory. Every EXR goes this way, single-layer too: one path, and
compressions or channels ffmpeg may not know are no concern.

An EXR holds scene-linear light; what a person sees of it is the scene's colour
management (view transform Filmic in Blender 3.4, AgX in 4 and 5, look, exposure,
gamma, curves), which is in the .blend, not the EXR, and which only Blender applies
exactly (its own OpenColorIO configuration, which differs between versions). So the
worker opens the job's .blend in its own Blender (`open_scene`, `SceneLook`: the newest
of its Blenders that can open the file, as for a render) and has Blender save each
picture through the scene's colour management, as it saves the scene's PNG frames: the
video looks like a video of Blender's own PNG frames, within a 16-bit rounding (at
Blender's cost: about half a second a 1080p frame, docs/DESIGN.md, Videos). Opening
the .blend also names the scene's first rendering view layer, which is the picture of a
multilayer frame of several view layers (`exr.image_channels`). A worker without a
Blender that can open the file (the manager sends video tasks to any worker with
ffmpeg), or without the .blend, shows the frames through the sRGB curve (`exr.to_srgb`,
Blender's Standard view) and takes the layer the file suggests, and the task's log says
so. Blender's previews carry the scene's look too, but are at most 512 pixels wide,
JPEG, and not made for tiled frames, so they are no source for the video.

Success means ffprobe reads back the codec that was asked for, one video frame per
rendered frame, at the frames' size (rounded down to even numbers, as yuv420p needs).
Without ffprobe the check is that the file is not empty.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy is loaded by the first EXR frame, not by every `farmhand` command
    import numpy as np
    import numpy.typing as npt

from farmhand.shared.images import ImageError, verify_image
from farmhand.shared.schemas import FrameFile, TaskAssignment, TaskFile
from farmhand.worker.cache import BlobCache, CacheError, materialise
from farmhand.worker.ffmpeg import (
    PROBE_CODEC,
    FfmpegInstall,
    ProbeError,
    RawFrames,
    encode_args,
    probe,
    raw_frame,
    run_ffmpeg,
)

SEQUENCE_DIGITS = 6


class SceneUnavailable(Exception):
    """The job's scene cannot be opened to show its EXR frames: why, in one line."""


class SceneLook(Protocol):
    """The job's scene, open in a Blender: how it shows a scene-linear picture."""

    @property
    def view_layer(self) -> str | None:
        """The scene's first view layer that renders (None if Blender named none)."""
        ...

    @property
    def description(self) -> str:
        """Which Blender and colour management, for the task's log."""
        ...

    def display(self, linear: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """`linear` (height x width x 3) as the scene shows it: display values, 0-1.
        ImageError (a ValueError) when it cannot, which fails the video."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SceneLooks(Protocol):
    """A renderer that can open a job's scene for its video (the Blender one can)."""

    def scene_look(
        self,
        task: TaskAssignment,
        blend: Path,
        log_path: Path,
        on_log: Callable[[str], None],
        cancel: threading.Event,
    ) -> SceneLook:
        """The scene of `blend`, open; SceneUnavailable if no Blender here can open it."""
        ...


@dataclass
class VideoWork:
    """One video task's inputs; callbacks may come from other threads."""

    task: TaskAssignment
    work_dir: Path
    """Emptied, then holds `seq/` (the frames) and the video."""
    cancel: threading.Event
    cache: BlobCache
    fetch: Callable[[FrameFile, Path], object]
    """Download one rendered frame of the job to a path."""
    on_frames: Callable[[int], None] = lambda _n: None
    on_log: Callable[[str], None] = lambda _line: None
    open_scene: Callable[[], SceneLook] | None = None
    """Open the job's scene to show EXR frames as it does (`SceneLook`); SceneUnavailable
    when it cannot. None: no Blender on this worker, the sRGB curve it is."""


@dataclass
class VideoResult:
    ok: bool
    video: Path | None = None
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)


def _failed(error: str, tail: list[str] | None = None) -> VideoResult:
    return VideoResult(ok=False, error=error, log_tail=tail or [])


def lay_out_frames(work: VideoWork, frames: list[FrameFile], suffix: str) -> Path:
    """Place the frames as `seq/000000<suffix>`, … in frame order; the ffmpeg pattern."""
    by_path: dict[str, FrameFile] = {}
    sequence: list[TaskFile] = []
    for number, frame in enumerate(frames):
        path = f"seq/{number:0{SEQUENCE_DIGITS}d}{suffix}"
        by_path[path] = frame
        sequence.append(TaskFile(path=path, sha256=frame.sha256, size=frame.size))

    def download(task_file: TaskFile, dest: Path) -> None:
        work.fetch(by_path[task_file.path], dest)

    materialise(work.cache, work.work_dir, sequence, download)
    return work.work_dir / "seq" / f"%0{SEQUENCE_DIGITS}d{suffix}"


def exr_feed(
    paths: list[Path],
    frames: list[FrameFile],
    size: tuple[int, int],
    on_log: Callable[[str], None],
    look: SceneLook | None = None,
) -> Iterator[bytes]:
    """Each EXR frame's picture as a raw frame for ffmpeg's stdin, as `look` shows it
    (without one, through the sRGB curve); read as ffmpeg asks for it, so only the
    frame being made is held. Says in the log which channels are the picture (and again
    should a frame's differ from the last's).
    """
    # Here, not at the top: every `farmhand` command imports this module, and numpy and
    # OpenEXR only a video of EXR frames needs.
    from farmhand.worker.exr import read_picture, to_srgb

    described = None
    view_layer = look.view_layer if look is not None else None
    for path, frame in zip(paths, frames, strict=True):
        try:
            linear, where = read_picture(path, view_layer)
        except ImageError as error:
            # Its messages begin with the file's name here (`000001.exr`), not the job's.
            problem = str(error).removeprefix(path.name)
            raise ImageError(f"frame {frame.frame}: {frame.path}{problem}") from None
        height, width = linear.shape[:2]
        if (width, height) != size:
            raise ImageError(
                f"frame {frame.frame}: {frame.path} is {width}x{height}, the first frame "
                f"{size[0]}x{size[1]}: a video's frames must all be one size"
            )
        if where.describe() != described:
            described = where.describe()
            on_log(f"frame {frame.frame} onwards: the picture is the {described} channels")
        if look is None:
            yield raw_frame(to_srgb(linear))
            continue
        try:
            shown = look.display(linear)
        except ImageError as error:
            raise ImageError(f"frame {frame.frame}: {frame.path}: {error}") from None
        yield raw_frame(shown)


def open_look(work: VideoWork) -> SceneLook | None:
    """The job's scene, open to show its EXR frames; None (said in the log) when this
    worker cannot open it, and the frames go through the sRGB curve."""
    fallback = (
        "the video shows the OpenEXR frames through the sRGB curve (Blender's Standard "
        "view), not the scene's own colour management, and a multilayer frame's picture "
        "is the layer the file suggests, which need not be the scene's first view layer"
    )
    if work.open_scene is None:
        work.on_log(f"this worker has no Blender to open the job's scene: {fallback}")
        return None
    try:
        look = work.open_scene()
    except SceneUnavailable as error:
        work.on_log(f"the job's scene could not be opened ({error}): {fallback}")
        return None
    work.on_log(
        f"the frames are OpenEXR (scene-linear): the video shows them through the scene's "
        f"colour management, as Blender saves its PNG frames ({look.description})"
    )
    return look


def make_video(work: VideoWork, ffmpeg: FfmpegInstall) -> VideoResult:
    """Encode the task's frames into the video its job asked for; never raises for a
    problem of the job (those become a failed result with a readable reason)."""
    video = work.task.video
    if video is None:
        return _failed("the task carries no video settings")
    frames = sorted(work.task.frame_files, key=lambda f: f.frame)
    if not frames:
        return _failed("the job has no rendered frames to make a video of")
    suffixes = {PurePosixPath(f.path).suffix.lower() for f in frames}
    if len(suffixes) != 1:
        return _failed(f"the frames have mixed formats ({', '.join(sorted(suffixes))})")
    suffix = suffixes.pop()
    shutil.rmtree(work.work_dir, ignore_errors=True)
    work.work_dir.mkdir(parents=True)
    try:
        pattern = lay_out_frames(work, frames, suffix)
    except (CacheError, OSError) as error:
        return _failed(f"cannot fetch the rendered frames: {error}")
    paths = [pattern.parent / f"{n:0{SEQUENCE_DIGITS}d}{suffix}" for n in range(len(frames))]
    try:
        first = verify_image(paths[0])
    except ImageError as error:
        return _failed(f"a rendered frame is not readable: {error}")
    output = work.work_dir / video.filename
    source: Path | RawFrames = pattern
    feed = None
    look = None
    if suffix == ".exr":
        source = RawFrames(first.width, first.height)
        look = open_look(work)
        feed = exr_feed(paths, frames, (first.width, first.height), work.on_log, look)
        work.on_log(
            "the worker reads each frame's picture itself and hands it to ffmpeg as 16-bit "
            "RGB, a frame at a time as it encodes: ffmpeg cannot read Blender's multilayer "
            "or multi-part OpenEXR (single-layer frames go the same way)"
        )
    work.on_log(f"encoding {len(frames)} frames as {video.codec} in {video.container}")
    try:
        result = run_ffmpeg(
            encode_args(ffmpeg.ffmpeg, source, len(frames), video, output),
            work.cancel,
            on_frames=work.on_frames,
            on_log=work.on_log,
            feed=feed,
        )
    finally:
        if look is not None:
            look.close()
    if not result.ok:
        return _failed(result.error or "ffmpeg failed", result.log_tail)
    problem = check_video(ffmpeg, output, video.codec, len(frames), first.width, first.height)
    if problem is not None:
        return _failed(problem, result.log_tail)
    work.on_log(f"video ready: {output.name}, {output.stat().st_size} bytes")
    return VideoResult(ok=True, video=output, log_tail=result.log_tail)


def check_video(
    ffmpeg: FfmpegInstall, path: Path, codec: str, frames: int, width: int, height: int
) -> str | None:
    """What is wrong with the encoded file, or None if it is what was asked for."""
    if not path.is_file() or path.stat().st_size == 0:
        return "ffmpeg exited without writing a video"
    if ffmpeg.ffprobe is None:
        return None
    try:
        facts = probe(ffmpeg.ffprobe, path)
    except ProbeError as error:
        return str(error)
    want = (PROBE_CODEC[codec], frames, width // 2 * 2, height // 2 * 2)
    got = (facts.codec, facts.frames, facts.width, facts.height)
    if got != want:
        return (
            f"the video is {facts.codec} {facts.width}x{facts.height} with {facts.frames} "
            f"frames; expected {want[0]} {want[2]}x{want[3]} with {frames}"
        )
    return None
