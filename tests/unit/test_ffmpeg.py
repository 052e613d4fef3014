"""ffmpeg on a worker: finding it, the command, progress, errors, and the video check.

The encode tests run the real ffmpeg on a few tiny PNGs (well under a second); the
plumbing tests use a shell-script stand-in that fails or prints on cue.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from PIL import Image

from farmhand.shared.schemas import FrameFile, TaskAssignment, VideoSettings
from farmhand.worker.cache import BlobCache
from farmhand.worker.ffmpeg import (
    RAW_PIXEL_FORMAT,
    FfmpegInstall,
    FfmpegNotFound,
    RawFrames,
    encode_args,
    find_ffmpeg,
    frame_rate,
    parse_progress,
    probe,
    run_ffmpeg,
)
from farmhand.worker.video import VideoResult, VideoWork, make_video

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs ffmpeg (Debian ffmpeg)",
)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


FAKE_VERSION = 'case "$*" in *-version*) echo "ffmpeg version 6.1-test Copyright"; exit 0;; esac\n'


# ---------------------------------------------------------------------- finding


def test_explicit_path_then_env_then_path(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    explicit = script(tmp_path / "mine" / "ffmpeg", FAKE_VERSION)
    on_path = tmp_path / "bin"
    on_path.mkdir()
    script(on_path / "ffmpeg", FAKE_VERSION)
    script(on_path / "ffprobe", "exit 0\n")

    found = find_ffmpeg(str(explicit), env={"PATH": str(on_path)})
    assert found is not None and found.ffmpeg == str(explicit)
    assert found.version == "6.1-test"
    assert found.ffprobe == str(on_path / "ffprobe"), "no sibling ffprobe: the one on PATH"

    found = find_ffmpeg(None, env={"PATH": str(on_path), "FARMHAND_FFMPEG": str(explicit)})
    assert found is not None and found.ffmpeg == str(explicit)

    found = find_ffmpeg(None, env={"PATH": str(on_path)})
    assert found is not None and found.ffmpeg == str(on_path / "ffmpeg")
    assert found.ffprobe == str(on_path / "ffprobe"), "the sibling ffprobe"


def test_no_ffmpeg_anywhere_means_no_videos(tmp_path: Path) -> None:
    assert find_ffmpeg(None, env={"PATH": str(tmp_path)}) is None


def test_a_named_ffmpeg_that_is_missing_or_broken_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FfmpegNotFound, match="not found"):
        find_ffmpeg(str(tmp_path / "nope"), env={"PATH": ""})
    broken = script(tmp_path / "ffmpeg", "exit 3\n")
    with pytest.raises(FfmpegNotFound, match="does not run"):
        find_ffmpeg(None, env={"PATH": "", "FARMHAND_FFMPEG": str(broken)})


# ---------------------------------------------------------------------- command


@pytest.mark.parametrize(
    ("fps", "rate"),
    [(24.0, "24"), (25.0, "25"), (30 / 1.001, "30000/1001"), (24 / 1.001, "24000/1001"),
     (12.5, "25/2")],
)  # fmt: skip
def test_the_frame_rate_reaches_ffmpeg_as_an_exact_fraction(fps: float, rate: str) -> None:
    assert frame_rate(fps) == rate


def test_settings_without_a_rate_play_at_the_scenes_then_at_24() -> None:
    assert VideoSettings().at_scene_fps(25.0).fps == 25.0
    assert VideoSettings().at_scene_fps(None).fps == 24.0
    assert VideoSettings(fps=50).at_scene_fps(25.0).fps == 50.0, "the job's own rate wins"


def test_encode_args_is_an_argument_list_with_the_chosen_codec(tmp_path: Path) -> None:
    out = tmp_path / "video; rm -rf ~.mp4"
    args = encode_args("/usr/bin/ffmpeg", tmp_path / "%06d.png", 3, VideoSettings(fps=25), out)
    assert args[0] == "/usr/bin/ffmpeg" and args[-1] == str(out), "the name is one argument"
    assert args[args.index("-c:v") + 1] == "libx264"
    assert args[args.index("-crf") + 1] == "23"
    assert args[args.index("-framerate") + 1] == "25"
    assert args[args.index("-frames:v") + 1] == "3"
    assert args[args.index("-progress") + 1] == "pipe:1"
    vp9 = encode_args(
        "ffmpeg",
        tmp_path / "%06d.png",
        3,
        VideoSettings(codec="vp9", container="webm", crf=40),
        out,
    )
    assert vp9[vp9.index("-c:v") + 1] == "libvpx-vp9" and vp9[vp9.index("-crf") + 1] == "40"
    assert "-movflags" not in vp9


def test_progress_lines_report_the_frame_count_at_each_block_end() -> None:
    state: dict[str, str] = {}
    lines = ["frame=2\n", "fps=0.0\n", "progress=continue\n", "frame=3\n", "progress=end\n"]
    assert [parse_progress(line, state) for line in lines] == [None, None, 2, None, 3]


# ---------------------------------------------------------------------- running


def test_a_failing_ffmpeg_reports_its_last_error_line(tmp_path: Path) -> None:
    fake = script(
        tmp_path / "ffmpeg",
        "echo 'frame=1'; echo 'progress=continue'\n"
        "echo 'first problem' >&2; echo 'Conversion failed!' >&2; exit 1\n",
    )
    frames: list[int] = []
    logged: list[str] = []
    result = run_ffmpeg([str(fake)], threading.Event(), frames.append, logged.append)
    assert not result.ok
    assert result.error == "ffmpeg failed: Conversion failed!"
    assert frames == [1]
    assert logged == ["ffmpeg: first problem", "ffmpeg: Conversion failed!"]


def test_cancel_stops_ffmpeg(tmp_path: Path) -> None:
    fake = script(tmp_path / "ffmpeg", "exec sleep 60\n")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    result = run_ffmpeg([str(fake)], cancel)
    assert not result.ok and result.error == "canceled"


# ---------------------------------------------------------------------- real encodes


def frames_for(
    tmp_path: Path, numbers: list[int], size: tuple[int, int]
) -> tuple[list[FrameFile], dict[str, Path]]:
    files, sources = [], {}
    for n, frame in enumerate(numbers):
        path = tmp_path / "rendered" / f"{frame}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", size, (40 * n % 255, 80, 160)).save(path)
        data = path.read_bytes()
        name = f"frames/{frame:04d}.png" if frame >= 0 else f"frames/m{-frame:04d}.png"
        files.append(
            FrameFile(
                path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), frame=frame
            )
        )
        sources[name] = path
    return files, sources


def video_task(files: list[FrameFile], video: VideoSettings) -> TaskAssignment:
    return TaskAssignment(
        task_id=9, job_id=1, job_name="j", type="video", frames=[], main_file="a.blend",
        files=[], output_format=None, resolution_percentage=None, samples=None, attempt=1,
        video=video, frame_files=files,
    )  # fmt: skip


def run_video(
    tmp_path: Path, numbers: list[int], size: tuple[int, int], video: VideoSettings
) -> tuple[VideoResult, FfmpegInstall]:
    files, sources = frames_for(tmp_path, numbers, size)
    ffmpeg = find_ffmpeg()
    assert ffmpeg is not None
    work = VideoWork(
        video_task(files, video),
        tmp_path / "work",
        threading.Event(),
        BlobCache(tmp_path / "cache"),
        lambda frame, dest: shutil.copyfile(sources[frame.path], dest),
    )
    return make_video(work, ffmpeg), ffmpeg


@needs_ffmpeg
@pytest.mark.parametrize(
    ("video", "codec"),
    [
        (VideoSettings(), "h264"),
        (VideoSettings(codec="vp9", container="webm"), "vp9"),
        (VideoSettings(codec="h265", container="mkv"), "hevc"),
    ],
)
def test_frames_with_gaps_and_negative_numbers_become_one_video(
    tmp_path: Path, video: VideoSettings, codec: str
) -> None:
    result, ffmpeg = run_video(tmp_path, [-2, 0, 2, 4], (64, 48), video)
    assert result.ok, result.error
    assert result.video is not None and result.video.name == video.filename
    assert ffmpeg.ffprobe is not None
    facts = probe(ffmpeg.ffprobe, result.video)
    assert (facts.codec, facts.width, facts.height, facts.frames) == (codec, 64, 48, 4)


@needs_ffmpeg
def test_odd_sizes_are_rounded_down_to_even(tmp_path: Path) -> None:
    result, ffmpeg = run_video(tmp_path, [1, 2], (65, 49), VideoSettings())
    assert result.ok, result.error
    assert ffmpeg.ffprobe is not None and result.video is not None
    facts = probe(ffmpeg.ffprobe, result.video)
    assert (facts.width, facts.height) == (64, 48)


def exr_frames(tmp_path: Path, colour: tuple[float, float, float]) -> list[FrameFile]:
    """Two 32x16 OpenEXR frames of one scene-linear colour, as Blender writes them."""
    pixels = np.empty((16, 32, 3), dtype=np.float32)
    pixels[:] = colour
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    files = []
    for frame in (1, 2):
        path = tmp_path / "rendered" / f"frames/{frame:04d}.exr"
        path.parent.mkdir(parents=True, exist_ok=True)
        OpenEXR.File(header, {"RGB": pixels}).write(str(path))
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files.append(
            FrameFile(path=f"frames/{frame:04d}.exr", sha256=digest, size=len(data), frame=frame)
        )
    return files


@needs_ffmpeg
def test_exr_frames_are_encoded_through_the_srgb_transfer_not_as_dark_linear_values(
    tmp_path: Path,
) -> None:
    """0.2, 0.3, 0.5 of linear light is 124, 149, 188 in Blender's Standard view (and in
    sRGB); encoded as they are, they came out about 50, 75, 126."""
    files = exr_frames(tmp_path, (0.2, 0.3, 0.5))
    ffmpeg = find_ffmpeg()
    assert ffmpeg is not None
    lines: list[str] = []
    work = VideoWork(
        video_task(files, VideoSettings(crf=0)), tmp_path / "work", threading.Event(),
        BlobCache(tmp_path / "cache"),
        lambda frame, dest: shutil.copyfile(tmp_path / "rendered" / frame.path, dest),
        on_log=lines.append,
    )  # fmt: skip
    result = make_video(work, ffmpeg)
    assert result.ok, result.error
    assert result.video is not None
    first = tmp_path / "first.png"
    done = subprocess.run(
        [ffmpeg.ffmpeg, "-v", "error", "-i", str(result.video), "-frames:v", "1", str(first)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    pixel = Image.open(first).convert("RGB").getpixel((16, 8))
    assert isinstance(pixel, tuple)
    assert all(abs(got - want) <= 3 for got, want in zip(pixel, (124, 149, 188), strict=True)), (
        pixel
    )
    # A worker without a Blender (none here) cannot show them through the scene's own
    # colour management, and says so.
    assert any("through the sRGB curve" in line for line in lines), "the log says how EXR is shown"


def test_raw_frames_reach_ffmpeg_on_stdin_with_their_size_and_pixel_format(
    tmp_path: Path,
) -> None:
    """EXR frames are read by the worker and piped (ffmpeg cannot read Blender's
    multilayer files): ffmpeg must be told what the bytes are, as it would read no
    header; image files keep their numbered sequence."""
    raw = encode_args("ffmpeg", RawFrames(65, 49), 3, VideoSettings(), tmp_path / "v.mp4")
    given = raw.index("-i")
    assert raw[given + 1] == "pipe:0"
    assert raw[raw.index("-f") + 1] == "rawvideo" and raw.index("-f") < given
    assert raw[raw.index("-pixel_format") + 1] == RAW_PIXEL_FORMAT == "rgb48le"
    assert raw[raw.index("-video_size") + 1] == "65x49"
    assert "-apply_trc" not in raw and "-start_number" not in raw
    png = encode_args("ffmpeg", tmp_path / "%06d.png", 3, VideoSettings(), tmp_path / "v.mp4")
    assert png[png.index("-i") + 1] == str(tmp_path / "%06d.png")
    assert "-f" not in png and png[png.index("-start_number") + 1] == "0"


def test_mixed_formats_and_no_frames_are_refused_before_ffmpeg(tmp_path: Path) -> None:
    ffmpeg = FfmpegInstall(ffmpeg=str(tmp_path / "never-run"), ffprobe=None, version="x")
    files = [
        FrameFile(path="frames/0001.png", sha256="a" * 64, size=1, frame=1),
        FrameFile(path="frames/0002.exr", sha256="b" * 64, size=1, frame=2),
    ]
    for frames, message in ((files, "mixed formats (.exr, .png)"), ([], "no rendered frames")):
        work = VideoWork(
            video_task(frames, VideoSettings()), tmp_path / "w", threading.Event(),
            BlobCache(tmp_path / "cache"), lambda *_: None,
        )  # fmt: skip
        result = make_video(work, ffmpeg)
        assert not result.ok and message in (result.error or "")
