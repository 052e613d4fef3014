"""A Blender that goes silent is killed at the task timeout; each frame reports its cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameStats
from farmhand.worker.blender.process import RenderRequest, render
from farmhand.worker.blender.session import BlenderSession


def test_a_hung_blender_is_killed_at_the_timeout_with_a_reason(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake Blender starts a frame, ignores SIGTERM and never answers again."""
    monkeypatch.setenv("FAKE_MODE", "hang")
    request = RenderRequest(tmp_path / "s.blend", [1], tmp_path / "out", stall_timeout=1.0)
    result = render(fake_blender, request, log_path=tmp_path / "task.log")
    assert not result.ok and result.timed_out
    assert result.error is not None
    assert result.error == (
        "no output and no CPU use for 1 seconds (task timeout): Blender hung and was killed"
    )
    assert not [line for line in result.log_tail if "still working" in line], "it was idle"
    assert result.exit_code == -9, "SIGKILLed after ignoring SIGTERM"


def test_a_session_whose_blender_hung_starts_a_fresh_one(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("FAKE_MODE_FROM", "2")
    with BlenderSession(fake_blender) as session:
        first = session.render(
            RenderRequest(tmp_path / "s.blend", [1], tmp_path / "a", stall_timeout=1.0),
            log_path=tmp_path / "a.log",
        )
        assert first.ok, first.error
        hung = session.render(
            RenderRequest(tmp_path / "s.blend", [2], tmp_path / "b", stall_timeout=1.0),
            log_path=tmp_path / "b.log",
        )
        assert not hung.ok and hung.timed_out
        assert session.pid is None, "the hung Blender is not kept for the next task"
        assert session.starts == 1, "a hang is the task's failure, not silently retried"


def test_each_saved_frame_reports_seconds_and_peak_memory(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    events: list[Event] = []
    request = RenderRequest(tmp_path / "s.blend", [1, 2], tmp_path / "out")
    result = render(fake_blender, request, log_path=tmp_path / "t.log", on_event=events.append)
    assert result.ok, result.error
    stats = [event for event in events if isinstance(event, FrameStats)]
    assert [s.frame for s in stats] == [1, 2]
    assert all(s.seconds == 0.01 for s in stats)
    assert all(s.peak_memory_bytes > 1_000_000 for s in stats), "Blender's resident memory"
