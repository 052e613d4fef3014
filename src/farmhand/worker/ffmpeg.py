"""ffmpeg on a worker: finding it, encoding an image sequence, checking the result.

ffmpeg is optional: a worker without it simply does not offer the `video` task type,
so video tasks wait for a worker that has it instead of failing on one that does not.

Every command is an argument list (never a shell string); file names come from the
worker's own layout, settings from validated `VideoSettings`. Progress is read from
`-progress pipe:1` (`key=value` lines on stdout), errors from stderr at
`-loglevel error`, so a failure can name ffmpeg's own last error line. Frames ffmpeg
cannot read itself (OpenEXR, `video.py`) reach it on stdin as raw pixels
(`RawFrames`), one frame at a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # numpy is loaded by the first raw frame, not by every `farmhand` command
    import numpy as np
    import numpy.typing as npt

from farmhand.shared.schemas import DEFAULT_VIDEO_FPS, VideoSettings

ENV_VAR = "FARMHAND_FFMPEG"
LOG_TAIL = 50


class FfmpegNotFound(RuntimeError):
    """An explicitly named ffmpeg (`--ffmpeg`, `FARMHAND_FFMPEG`) is not there."""


@dataclass(frozen=True)
class FfmpegInstall:
    ffmpeg: str
    ffprobe: str | None
    version: str


def _version(ffmpeg: str) -> str | None:
    try:
        done = subprocess.run(
            [ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    first = (done.stdout.splitlines() or [""])[0]
    # "ffmpeg version 5.1.9-0+deb12u1 Copyright …"
    words = first.split()
    return words[2] if len(words) > 2 and words[1] == "version" else first[:100] or "unknown"


NO_FFMPEG = "none"
"""`--ffmpeg none` / `FARMHAND_FFMPEG=none`: keep video tasks off this worker."""


def find_ffmpeg(
    explicit: str | None = None, env: Mapping[str, str] | None = None
) -> FfmpegInstall | None:
    """`--ffmpeg PATH`, then `FARMHAND_FFMPEG`, then `ffmpeg` on PATH; None if none.

    A path the user named that does not run is an error (they meant it); no ffmpeg on
    PATH just means the worker makes no videos. `none` (`NO_FFMPEG`) says so on purpose:
    no ffmpeg, so no video tasks, even with one on PATH.
    """
    env = os.environ if env is None else env
    named = explicit or env.get(ENV_VAR) or None
    if named is not None and named.strip().lower() == NO_FFMPEG:
        return None
    candidate = shutil.which(named) if named else shutil.which("ffmpeg", path=env.get("PATH"))
    if named and candidate is None:
        raise FfmpegNotFound(f"ffmpeg not found at {named!r}")
    if candidate is None:
        return None
    version = _version(candidate)
    if version is None:
        if named:
            raise FfmpegNotFound(f"{named!r} does not run as ffmpeg")
        return None
    sibling = Path(candidate).with_name("ffprobe")
    ffprobe = (
        str(sibling)
        if os.access(sibling, os.X_OK)
        else shutil.which("ffprobe", path=env.get("PATH"))
    )
    return FfmpegInstall(ffmpeg=candidate, ffprobe=ffprobe, version=version)


# ---------------------------------------------------------------------- encoding

CODEC_ARGS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "medium"],
    "h265": ["-c:v", "libx265", "-preset", "medium", "-x265-params", "log-level=error"],
    "vp9": ["-c:v", "libvpx-vp9", "-b:v", "0", "-row-mt", "1"],
}
DEFAULT_CRF = {"h264": 23, "h265": 28, "vp9": 31}
PROBE_CODEC = {"h264": "h264", "h265": "hevc", "vp9": "vp9"}
RAW_PIXEL_FORMAT = "rgb48le"
"""What `raw_frame` makes: 16 bits a channel, so display values reach the encoder as
finely as from a 16-bit PNG (the 8-bit video loses nothing to them)."""


@dataclass(frozen=True)
class RawFrames:
    """Frames sent to ffmpeg's stdin rather than read from files: `width` x `height`
    pixels each, as `raw_frame` packs them."""

    width: int
    height: int


def raw_frame(display: npt.NDArray[np.float32]) -> bytes:
    """Display values (0-1, sRGB-encoded, height x width x 3) as one raw frame of
    `RAW_PIXEL_FORMAT`, rounded to the nearest 16-bit step."""
    scaled = display * 65535
    scaled += 0.5
    return scaled.astype("<u2").tobytes()


def frame_rate(fps: float) -> str:
    """`fps` as ffmpeg's exact rate: Blender's NTSC rates are fps / 1.001 (29.97 is
    30000/1001), and a rounded decimal would drift from the scene's timing."""
    rate = Fraction(fps).limit_denominator(1001)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def input_args(source: Path | RawFrames, fps: float) -> list[str]:
    """How ffmpeg reads the frames: an image sequence (`…/%06d.png`, numbered from 0),
    or raw frames on stdin, whose size and pixel format it cannot know otherwise."""
    rate = ["-framerate", frame_rate(fps)]
    if isinstance(source, RawFrames):
        return [
            "-f", "rawvideo", "-pixel_format", RAW_PIXEL_FORMAT,
            "-video_size", f"{source.width}x{source.height}", *rate, "-i", "pipe:0",
        ]  # fmt: skip
    return [*rate, "-start_number", "0", "-i", str(source)]


def encode_args(
    ffmpeg: str, source: Path | RawFrames, frames: int, video: VideoSettings, output: Path
) -> list[str]:
    """The ffmpeg command turning `source` (`input_args`) into a video.

    yuv420p is what every player reads; it needs even sizes, hence the scale filter that
    drops an odd last row or column.
    """
    crf = video.crf if video.crf is not None else DEFAULT_CRF[video.codec]
    args = [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
        "-progress", "pipe:1",
        *input_args(source, video.fps or DEFAULT_VIDEO_FPS),
        "-frames:v", str(frames),
        "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p",
        *CODEC_ARGS[video.codec], "-crf", str(crf),
    ]  # fmt: skip
    if video.codec == "h265" and video.container in ("mp4", "mov"):
        args += ["-tag:v", "hvc1"]  # what Apple players want for HEVC in ISO media
    if video.container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    return [*args, str(output)]


@dataclass
class EncodeResult:
    ok: bool
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)


def parse_progress(line: str, state: dict[str, str]) -> int | None:
    """Feed one `-progress` line; the frame count when a block ends, else None."""
    key, sep, value = line.strip().partition("=")
    if not sep:
        return None
    state[key] = value
    if key != "progress":
        return None
    try:
        return int(state.get("frame", "0"))
    except ValueError:
        return None


def _drain(stream: object, lines: list[str], on_log: Callable[[str], None]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = str(raw).rstrip()
        if line:
            lines.append(line)
            del lines[:-LOG_TAIL]
            on_log(f"ffmpeg: {line}")


def _kill_on_cancel(process: subprocess.Popen[bytes], cancel: threading.Event) -> None:
    while process.poll() is None:
        if cancel.wait(0.2):
            process.kill()
            return


def _feed(
    process: subprocess.Popen[bytes],
    frames: Iterable[bytes],
    cancel: threading.Event,
    failure: list[BaseException],
) -> None:
    """Write `frames` to ffmpeg's stdin, then close it: the end of the input. A frame
    that cannot be made kills ffmpeg, which would otherwise wait for it; an ffmpeg that
    stopped reading (failed, or killed on cancel) ends the feed, and its own error or
    the cancel is what the encode reports."""
    stdin = process.stdin
    assert stdin is not None
    try:
        for frame in frames:
            if cancel.is_set():
                return
            stdin.write(frame)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException as error:  # run_ffmpeg reports or raises it: not lost in a thread
        failure.append(error)
        process.kill()
    finally:
        with contextlib.suppress(OSError):  # the pipe is broken: ffmpeg is gone
            stdin.close()


def run_ffmpeg(
    args: list[str],
    cancel: threading.Event,
    on_frames: Callable[[int], None] = lambda _n: None,
    on_log: Callable[[str], None] = lambda _line: None,
    feed: Iterable[bytes] | None = None,
) -> EncodeResult:
    """Run an encode to its end (or until `cancel`); ffmpeg's last error line on failure.

    `feed` is the raw frames for an encode of `RawFrames`, made as ffmpeg takes them, so
    only a frame or two is ever in memory. A frame it cannot make (ValueError, OSError:
    an unreadable file) fails the encode with its message; any other error is raised.
    """
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        return EncodeResult(ok=False, error=f"cannot start ffmpeg: {error}")
    errors: list[str] = []
    reader = threading.Thread(
        target=_drain,
        args=(_text(process.stderr), errors, on_log),
        name="ffmpeg-stderr",
        daemon=True,
    )
    reader.start()
    watcher = threading.Thread(
        target=_kill_on_cancel, args=(process, cancel), name="ffmpeg-cancel", daemon=True
    )
    watcher.start()
    failure: list[BaseException] = []
    writer = None
    if feed is not None:
        writer = threading.Thread(
            target=_feed, args=(process, feed, cancel, failure), name="ffmpeg-feed", daemon=True
        )
        writer.start()
    state: dict[str, str] = {}
    for line in _text(process.stdout):
        frames = parse_progress(line, state)
        if frames is not None:
            on_frames(frames)
    code = process.wait()
    if writer is not None:
        writer.join()  # at most the frame being made: ffmpeg has stopped reading
    reader.join(5)
    if cancel.is_set():
        return EncodeResult(ok=False, error="canceled", log_tail=errors)
    if failure:
        if isinstance(failure[0], (ValueError, OSError)):
            return EncodeResult(ok=False, error=str(failure[0]), log_tail=errors)
        raise failure[0]
    if code != 0:
        last = errors[-1] if errors else f"exit code {code}"
        return EncodeResult(ok=False, error=f"ffmpeg failed: {last}", log_tail=errors)
    return EncodeResult(ok=True, log_tail=errors)


def _text(stream: IO[bytes] | None) -> io.TextIOWrapper:
    """ffmpeg's stdout or stderr as lines of text (the pipes are binary, for stdin's sake)."""
    assert stream is not None
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")


# ---------------------------------------------------------------------- checking


@dataclass(frozen=True)
class VideoFacts:
    codec: str
    width: int
    height: int
    frames: int


class ProbeError(RuntimeError):
    """The file is not a video ffprobe can read."""


def probe(ffprobe: str, path: Path) -> VideoFacts:
    """Codec, size and decoded frame count of the first video stream."""
    args = [
        ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames",
        "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json",
        str(path),
    ]  # fmt: skip
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ProbeError(f"ffprobe did not run: {error}") from error
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ProbeError(f"ffprobe cannot read the video: {last}")
    try:
        stream = json.loads(done.stdout)["streams"][0]
        return VideoFacts(
            codec=str(stream["codec_name"]),
            width=int(stream["width"]),
            height=int(stream["height"]),
            frames=int(stream["nb_read_frames"]),
        )
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ProbeError(f"ffprobe found no video stream ({error})") from error
