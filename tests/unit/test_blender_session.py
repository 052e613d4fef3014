"""A persistent Blender session with the fake Blender: reuse, recycling, crashes, cancel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameStarted, Opened, Ready
from farmhand.worker.blender.process import RenderRequest, RenderResult, group_rss_bytes
from farmhand.worker.blender.session import BlenderSession

BLEND = Path("/scenes/x.blend")


@pytest.fixture
def starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the fake Blender appends its pid to at every start."""
    path = tmp_path / "pids"
    monkeypatch.setenv("FAKE_COUNT_FILE", str(path))
    return path


def pids(starts: Path) -> list[int]:
    return [int(pid) for pid in starts.read_text().split()] if starts.exists() else []


def render_task(
    session: BlenderSession,
    tmp_path: Path,
    task: int,
    frames: list[int],
    events: list[Event] | None = None,
    cancel: threading.Event | None = None,
    blend: Path = BLEND,
) -> RenderResult:
    log = tmp_path / f"task-{task}.log"
    return session.render(
        RenderRequest(blend, frames, tmp_path / f"out-{task}"),
        log_path=log,
        on_event=(events.append if events is not None else None),
        cancel=cancel,
    )


def test_many_tasks_of_one_job_share_one_blender(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path
) -> None:
    events: list[Event] = []
    ready: list[int] = []
    with BlenderSession(fake_blender) as session:
        for task in range(4):
            result = render_task(session, tmp_path, task, [task * 2 + 1, task * 2 + 2], events)
            assert result.ok, result.error
            assert sorted(result.frames) == [task * 2 + 1, task * 2 + 2]
            assert result.frames[task * 2 + 1].parent == tmp_path / f"out-{task}"
            ready.append(sum(isinstance(e, Ready) for e in events))
        pid = session.pid
    assert session.starts == 1 and len(pids(starts)) == 1
    assert ready == [1, 1, 1, 1]
    assert sum(isinstance(e, Opened) for e in events) == 1, "the file is opened once"
    # each task has its own log, which says whether Blender was started or reused
    assert "started Blender" in (tmp_path / "task-0.log").read_text()
    assert "Blender's own chatter" in (tmp_path / "task-0.log").read_text()
    assert "reusing the session's Blender" in (tmp_path / "task-3.log").read_text()
    # closing ends the Blender
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_another_file_is_opened_in_the_same_blender(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path
) -> None:
    events: list[Event] = []
    with BlenderSession(fake_blender) as session:
        assert render_task(session, tmp_path, 1, [1], events).ok
        assert render_task(session, tmp_path, 2, [1], events, blend=Path("/other.blend")).ok
    assert sum(isinstance(e, Opened) for e in events) == 2
    assert len(pids(starts)) == 1


def test_recycled_after_the_frame_limit(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path
) -> None:
    with BlenderSession(fake_blender, max_frames=4) as session:
        for task in range(5):
            assert render_task(session, tmp_path, task, [1, 2]).ok
    # 2 tasks of 2 frames reach the limit, so the 3rd and the 5th start a fresh Blender
    assert session.starts == 3 and len(pids(starts)) == 3
    assert "recycled after 4" in (tmp_path / "task-2.log").read_text()


def test_recycled_when_memory_passes_the_limit(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path
) -> None:
    with BlenderSession(fake_blender, max_memory_mb=1) as session:
        for task in range(3):
            assert render_task(session, tmp_path, task, [1]).ok
    assert session.starts == 3, "a Python process is always above 1 MB"
    assert "recycled above 1 MB" in (tmp_path / "task-1.log").read_text()
    with BlenderSession(fake_blender, max_memory_mb=100_000) as session:
        for task in range(3):
            assert render_task(session, tmp_path, task, [1]).ok
    assert session.starts == 1


def test_crash_mid_session_fails_that_task_and_the_next_gets_a_fresh_blender(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "oom")
    monkeypatch.setenv("FAKE_MODE_FROM", "2")  # the 2nd render of each Blender is killed
    with BlenderSession(fake_blender) as session:
        assert render_task(session, tmp_path, 1, [1, 2]).ok
        crashed = render_task(session, tmp_path, 2, [3, 4])
        assert not crashed.ok
        assert crashed.error is not None and "signal 9" in crashed.error
        assert crashed.exit_code == -9
        again = render_task(session, tmp_path, 3, [3, 4])
        assert again.ok, again.error
    assert len(pids(starts)) == 2


def test_blender_dying_between_tasks_is_restarted(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "die_after")
    with BlenderSession(fake_blender) as session:
        first = render_task(session, tmp_path, 1, [1])
        assert first.ok, "it answered with every frame before it died"
        # Between tasks: let it be gone before the next request. On a loaded machine it
        # may already be gone (the session then dropped it at once) or still be exiting
        # (that race is the reuse path, not this test's).
        deadline = time.monotonic() + 10
        while session._process is not None and session._process.alive:
            assert time.monotonic() < deadline, "the fake Blender did not exit"
            time.sleep(0.01)
        second = render_task(session, tmp_path, 2, [2])
        assert second.ok, second.error
    assert len(pids(starts)) == 2


def test_driver_error_closes_the_session(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "error")
    monkeypatch.setenv("FAKE_MODE_FROM", "2")
    with BlenderSession(fake_blender) as session:
        assert render_task(session, tmp_path, 1, [1]).ok
        failed = render_task(session, tmp_path, 2, [2])
        assert failed.error == "Error: Cannot render, no camera"
        assert session.pid is None
        assert render_task(session, tmp_path, 3, [2]).ok
    assert len(pids(starts)) == 2


def test_truncated_frame_in_a_session_is_a_failure(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "truncated")
    monkeypatch.setenv("FAKE_MODE_FROM", "2")
    with BlenderSession(fake_blender) as session:
        assert render_task(session, tmp_path, 1, [1]).ok
        result = render_task(session, tmp_path, 2, [2])
    assert not result.ok and result.error is not None and "truncated" in result.error


def test_cancel_kills_the_blender_and_the_next_request_gets_a_fresh_one(
    fake_blender: BlenderInstall, tmp_path: Path, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")  # ignores SIGTERM
    monkeypatch.setenv("FAKE_MODE_FROM", "2")
    cancel = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, FrameStarted) and event.frame == 9:
            cancel.set()

    with BlenderSession(fake_blender) as session:
        assert render_task(session, tmp_path, 1, [1]).ok
        hung_pid = session.pid
        result = session.render(
            RenderRequest(BLEND, [9], tmp_path / "out-2"),
            log_path=tmp_path / "task-2.log",
            on_event=on_event,
            cancel=cancel,
        )
        assert result.error == "canceled"
        assert hung_pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(hung_pid, 0)
        assert render_task(session, tmp_path, 3, [1]).ok
    assert len(pids(starts)) == 2


def test_frames_are_reported_ready_as_each_is_verified(
    fake_blender: BlenderInstall, tmp_path: Path
) -> None:
    ready: list[int] = []
    with BlenderSession(fake_blender) as session:
        for task in range(2):
            session.render(
                RenderRequest(BLEND, [task * 2 + 1, task * 2 + 2], tmp_path / f"o{task}"),
                log_path=tmp_path / "log",
                on_frame_ready=lambda frame, _path: ready.append(frame),
            )
    assert ready == [1, 2, 3, 4]


def test_a_blender_that_cannot_start_is_a_failed_result(tmp_path: Path) -> None:
    missing = BlenderInstall("executable", str(tmp_path / "no-such-blender"), "0")
    with BlenderSession(missing) as session:
        result = render_task(session, tmp_path, 1, [1])
    assert not result.ok and result.error and "cannot start Blender" in result.error


def test_group_memory_counts_this_process() -> None:
    assert group_rss_bytes(os.getpgid(0)) > 1024 * 1024
    assert group_rss_bytes(os.getpgid(0), Path("/no/such/proc")) == 0
