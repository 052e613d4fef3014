"""A `video` task: fetch the job's rendered frames, encode them with ffmpeg, check the file.

The frames are laid out as one gap-free sequence (`seq/000000.png`, …) in frame order,
whatever the job's frame numbers were (a step of 2, negative frames), because ffmpeg's
image-sequence reader stops at the first gap. They come through the worker's blob cache,
so a worker that rendered some of them downloads only the others.

OpenEXR frames are not given to ffmpeg as files: ffmpeg 5 reads neither Blender's
multilayer EXR (it exits with no message unless told the layer) nor Blender 5's
multi-part one ("Not yet implemented"), nor Blender 5's black-and-white `V` channel.
The worker reads each frame itself (`exr.read_picture`: the picture is a bare RGB or the
Combined pass, the rule the manager's thumbnails follow), puts it through the sRGB curve
(`exr.to_srgb`, Blender's Standard view) and pipes it to ffmpeg as 16-bit RGB, frame by
frame as ffmpeg encodes, so one frame at a time is in memory and nothing more is
written to disk. Every EXR goes this way, single-layer too: one path, a few seconds
more for hundreds of frames (docs/DESIGN.md, Videos), and compressions or channels
ffmpeg may not know are no concern. The scene's view transform (Filmic, AgX…) is not in
the EXR; the task's log says so. Blender's previews do carry it, but are at most 512
pixels wide, JPEG, and not made for tiled frames, so they are no source for the video.

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
    paths: list[Path], frames: list[FrameFile], size: tuple[int, int], on_log: Callable[[str], None]
) -> Iterator[bytes]:
    """Each EXR frame's picture, in the sRGB view, as a raw frame for ffmpeg's stdin;
    read as ffmpeg asks for it, so only the frame being made is held. Says in the log
    which channels are the picture (and again should a frame's differ from the last's).
    """
    # Here, not at the top: every `farmhand` command imports this module, and numpy and
    # OpenEXR only a video of EXR frames needs.
    from farmhand.worker.exr import read_picture, to_srgb

    described = None
    for path, frame in zip(paths, frames, strict=True):
        try:
            linear, where = read_picture(path)
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
        yield raw_frame(to_srgb(linear))


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
    if suffix == ".exr":
        source = RawFrames(first.width, first.height)
        feed = exr_feed(paths, frames, (first.width, first.height), work.on_log)
        work.on_log(
            "the frames are OpenEXR (scene-linear): the video shows them through the sRGB "
            "transfer (Blender's Standard view), not the scene's view transform (Filmic, "
            "AgX…); render PNG frames for a video with the scene's look"
        )
        work.on_log(
            "the worker reads each frame's picture itself and hands it to ffmpeg as 16-bit "
            "sRGB, a frame at a time as it encodes: ffmpeg cannot read Blender's multilayer "
            "or multi-part OpenEXR (single-layer frames go the same way)"
        )
    work.on_log(f"encoding {len(frames)} frames as {video.codec} in {video.container}")
    result = run_ffmpeg(
        encode_args(ffmpeg.ffmpeg, source, len(frames), video, output),
        work.cancel,
        on_frames=work.on_frames,
        on_log=work.on_log,
        feed=feed,
    )
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
