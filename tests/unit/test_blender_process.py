"""The render runner's judgement, with a fake Blender: fast, and able to misbehave on cue."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import (
    DriverError,
    Event,
    FrameSaved,
    FrameStarted,
    Progress,
    Ready,
    parse_event_line,
    parse_progress_line,
)
from farmhand.worker.blender.process import RenderRequest, RenderResult, render


def run(
    install: BlenderInstall,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    frames: list[int] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[RenderResult, list[Event], list[str]]:
    monkeypatch.setenv("FAKE_MODE", mode)
    events: list[Event] = []
    lines: list[str] = []
    result = render(
        install,
        RenderRequest(Path("/scenes/x.blend"), frames or [1, 2, 3], tmp_path / "out"),
        log_path=tmp_path / "task.log",
        on_event=events.append,
        on_log=lines.append,
        cancel=cancel,
    )
    return result, events, lines


def test_success_returns_every_verified_frame(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, events, lines = run(fake_blender, tmp_path, monkeypatch, "ok")
    assert result.ok, result.error
    assert result.exit_code == 0
    assert sorted(result.frames) == [1, 2, 3]
    assert result.frames[2] == tmp_path / "out" / "frame_0002.png"
    assert isinstance(events[0], Ready)
    assert [e.frame for e in events if isinstance(e, FrameStarted)] == [1, 2, 3]
    assert len([e for e in events if isinstance(e, FrameSaved)]) == 3
    assert [e for e in events if isinstance(e, Progress)][-1] == Progress(3, 2, 2)
    # Blender's own output reaches the log callback and the log file; events do not clutter it.
    assert "Blender's own chatter, which is not an event" in lines
    assert "Blender's own chatter" in (tmp_path / "task.log").read_text()


def test_exit_zero_without_frames_is_a_failure(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, _ = run(fake_blender, tmp_path, monkeypatch, "exit0_no_frames")
    assert result.exit_code == 0
    assert not result.ok
    assert result.error is not None and "frame 1" in result.error


def test_truncated_frames_are_a_failure(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, _ = run(fake_blender, tmp_path, monkeypatch, "truncated")
    assert not result.ok
    assert result.error is not None and "truncated" in result.error
    assert result.frames == {}


def test_error_event_fails_with_blenders_message(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, events, _ = run(fake_blender, tmp_path, monkeypatch, "error")
    assert not result.ok
    assert result.error == "Error: Cannot render, no camera"
    assert any(isinstance(e, DriverError) for e in events)
    assert any("no camera" in line for line in result.log_tail)


def test_sigkill_is_reported_as_probably_out_of_memory(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, _ = run(fake_blender, tmp_path, monkeypatch, "oom")
    assert not result.ok
    assert result.exit_code == -9
    assert result.error is not None
    assert "signal 9" in result.error and "out of memory" in result.error


def test_cancel_kills_even_a_blender_that_ignores_sigterm(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    started = threading.Event()
    monkeypatch.setenv("FAKE_COUNT_FILE", str(tmp_path / "pids"))
    monkeypatch.setenv("FAKE_MODE", "hang")
    box: list[RenderResult] = []

    def on_event(event: Event) -> None:
        if isinstance(event, FrameStarted):
            started.set()

    thread = threading.Thread(
        target=lambda: box.append(
            render(
                fake_blender,
                RenderRequest(Path("/x.blend"), [1], tmp_path / "out"),
                log_path=tmp_path / "log",
                on_event=on_event,
                cancel=cancel,
            )
        )
    )
    thread.start()
    assert started.wait(30), "the fake Blender never started rendering"
    began = time.monotonic()
    cancel.set()
    thread.join(10)
    assert not thread.is_alive(), "render() did not return after cancel"
    assert time.monotonic() - began < 6, "SIGTERM ignored, so SIGKILL must follow within ~3 s"
    assert box[0].ok is False and box[0].error == "canceled"
    pid = int((tmp_path / "pids").read_text().split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_blender_that_cannot_start_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    missing = BlenderInstall("executable", str(tmp_path / "no-such-blender"), "0")
    try:
        result = render(
            missing,
            RenderRequest(Path("/x.blend"), [1], tmp_path / "out"),
            log_path=tmp_path / "log",
        )
    except OSError:
        pytest.fail("a missing Blender should be a failed result, not an exception")
    assert not result.ok and result.error


@pytest.mark.parametrize(
    "line",
    [
        "Fra:1 Mem:12.00M | Sample 1/4",
        "@@farmhand@@ not json",
        '@@farmhand@@ {"event": "frame_saved", "frame": "x"}',
        '@@farmhand@@ {"event": "no-such-event"}',
        '@@farmhand@@ ["a list"]',
    ],
)
def test_non_events_are_just_log(line: str) -> None:
    assert parse_event_line(line) is None


def test_event_lines_parse_even_after_blender_output_on_the_same_line() -> None:
    event = parse_event_line(
        'Saved: x.png@@farmhand@@ {"event": "frame_saved", "frame": 3, "path": "/o/f.png",'
        ' "seconds": 0.5, "width": 64, "height": 48}'
    )
    assert event == FrameSaved(3, Path("/o/f.png"), 0.5, 64, 48)


@pytest.mark.parametrize(
    ("line", "progress"),
    [
        ("Fra:12 Mem:9.57M (Peak 9.82M) | Time:00:00.13 | Scene, ViewLayer | Sample 0/64",
         Progress(12, 0, 64)),
        ("Fra:-3 Mem:9M | Time:00:01.00 | Remaining:00:00.50 | Scene, ViewLayer | Sample 5/8",
         Progress(-3, 5, 8)),
        ("Fra:1 Mem:9.57M | Time:00:00.13 | Scene, ViewLayer | Synchronizing object | Cube",
         None),
        ("Saved: 'frame_0001.png'", None),
        # What the driver prints for the bpy module, from its render_stats handler:
        ("Fra:4 | Remaining: 00:00.01 | Mem: 2M | Sample 1/8", Progress(4, 1, 8)),
        ("Fra:4 | Rendering 3 / 16 samples", Progress(4, 3, 16)),
        ("Fra:4 | Mem: 2M | Finished", None),
    ],
)  # fmt: skip
def test_cycles_progress_is_read_from_blenders_status_lines(
    line: str, progress: Progress | None
) -> None:
    assert parse_progress_line(line) == progress


@pytest.mark.timeout(30)
def test_cancel_is_prompt_while_blender_is_stuck_opening_with_a_long_frame_list(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100,000 frames of commands fill the pipe while Blender opens: cancel still works."""
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    began = time.monotonic()
    result, _, _ = run(
        fake_blender, tmp_path, monkeypatch, "hang_open", list(range(1, 100_001)), cancel
    )
    assert result.error == "canceled"
    assert time.monotonic() - began < 6
