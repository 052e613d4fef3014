"""A task's log lines reach the manager before its outcome or its give-back, even when
the progress reporter already took them and its call is still on the way.

The manager refuses a progress call for a task that has ended (`keep_going: false`, its
lines not kept), as the real one does. A short task (a video, a merge) can have all its
lines in the reporter's one call; if the completion overtook it, the task's log was
empty (seen in CI: a video task of a multilayer EXR job with no log at all). A worker
stopping gave its task back the same way, and the log of that attempt ended mid-frame.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from farmhand.worker.agent import RenderJob, RenderOutcome, run_worker
from tests.unit.test_worker_agent import FakeManager, _settings, _start, _stop, _write_frame


class EndingManager(FakeManager):
    """Keeps a progress call's lines only if the task has not ended by the time it
    answers; the reporter's first call with lines is slow to answer."""

    def __init__(self) -> None:
        super().__init__([1])
        self.kept: list[str] = []
        self.slow_call_arrived = threading.Event()
        self._slowed = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)
        if not request.url.path.endswith("/progress"):
            return response
        lines = [str(line) for line in json.loads(request.read()).get("log_lines") or []]
        if lines and not self._slowed:
            self._slowed = True
            self.slow_call_arrived.set()
            time.sleep(0.5)  # the render ends meanwhile: its outcome is ready to go
        with self.lock:
            ended = any(name in ("complete", "fail", "release") for name, _ in self.calls)
            if not ended:
                self.kept.extend(lines)
        return httpx.Response(200, json={"keep_going": not ended})


def test_lines_the_reporter_is_sending_arrive_before_the_completion(tmp_path: Path) -> None:
    manager = EndingManager()

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_started(1)
        job.on_log("Fra:1 the only line")
        # The reporter picks the line up and is still waiting for its answer when the
        # render ends.
        assert manager.slow_call_arrived.wait(5), "the reporter sent no progress"
        job.on_frame_saved(1, _write_frame(job, 1))
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)
    assert "Fra:1 the only line" in manager.kept, "the line reached the manager in time"
    assert "fail" not in manager.names()


def test_a_stopping_worker_gives_its_task_back_after_the_lines_it_is_sending(
    tmp_path: Path,
) -> None:
    manager = EndingManager()

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_started(1)
        job.on_log("Fra:1 Sample 3/16")
        assert job.cancel.wait(10), "the stop never reached the render"
        job.on_log("Blender quit: canceled")
        return RenderOutcome(ok=False, error="canceled")

    stop, thread, result = _start(tmp_path, manager, renderer)
    assert manager.slow_call_arrived.wait(5), "the reporter sent no progress"
    _stop(stop, thread, result)  # while that call waits for its answer
    assert "release" in manager.names() and "fail" not in manager.names()
    assert manager.kept == ["Fra:1 Sample 3/16", "Blender quit: canceled"]


def test_a_heartbeat_answered_while_the_completion_is_on_its_way_aborts_nothing(
    tmp_path: Path,
) -> None:
    """The manager names a task it no longer sees held among those to abort, and a
    completed one is such a task: a heartbeat that crosses the completion is no abort, and
    the worker's log must not say the manager aborted a task that completed."""
    manager = FakeManager([1])
    crossed = threading.Event()

    def on_call(name: str) -> None:
        if name == "complete":
            manager.abort = [11]  # the manager has the completion...
            assert crossed.wait(5)  # ...and answers a heartbeat before the worker hears so
        elif name == "heartbeat" and manager.abort:
            crossed.set()

    manager.on_call = on_call

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_saved(1, _write_frame(job, 1))
        return RenderOutcome(ok=True)

    with capture_logs() as logs:
        stop, thread, result = _start(tmp_path, manager, renderer)
        manager.wait_for("complete")
        assert crossed.wait(5), "no heartbeat crossed the completion"
        _stop(stop, thread, result)
    events = [entry["event"] for entry in logs]
    assert "manager aborted the task" not in events


class _Served(http.server.BaseHTTPRequestHandler):
    """The fake manager's answers over real HTTP: a request timeout is the transport's,
    which `httpx.MockTransport` would never apply."""

    manager: FakeManager

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = httpx.Request(
            self.command,
            f"http://manager.test{self.path}",
            headers=dict(self.headers.items()),
            content=self.rfile.read(length) if length else b"",
        )
        response = self.manager.handler(request)
        body = response.read()
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_stopping_worker_does_not_wait_long_for_a_manager_that_takes_its_lines_and_hangs(
    tmp_path: Path,
) -> None:
    """The give-back sends the task's last lines first; a manager that accepts that call
    and never answers must not hold the stop for the client's own timeout (90 s):
    the whole flush gets `shutdown_grace` (2 s here)."""
    manager = FakeManager([1])
    hung = threading.Event()
    freed = threading.Event()

    def on_call(name: str) -> None:
        if name == "progress":
            hung.set()
            freed.wait(60)

    manager.on_call = on_call
    _Served.manager = manager
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Served)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    started = threading.Event()

    def renderer(job: RenderJob) -> RenderOutcome:
        job.on_frame_started(1)
        job.on_log("Fra:1 Sample 3/16")
        started.set()
        assert job.cancel.wait(30), "the stop never reached the render"
        return RenderOutcome(ok=False, error="canceled")

    stop = threading.Event()
    settings = replace(_settings(tmp_path), manager_url=url, progress_interval=600.0)
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_worker(settings, renderer=renderer, blender_versions=["4.2.0"], stop=stop)
        ),
        daemon=True,
    )
    thread.start()
    try:
        assert started.wait(10), "the render never started"
        stop.set()
        assert hung.wait(10), "the give-back sent no lines"
        thread.join(20)
        assert not thread.is_alive(), "the stop waited for the hung progress call"
        assert result == [0]
        assert "release" in manager.names()
    finally:
        freed.set()
        server.shutdown()
        server.server_close()
