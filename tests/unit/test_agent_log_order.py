"""A task's log lines reach the manager before its outcome, even when the progress
reporter already took them and its call is still on the way.

The manager refuses a progress call for a task that has ended (`keep_going: false`, its
lines not kept), as the real one does. A short task (a video, a merge) can have all its
lines in the reporter's one call; if the completion overtook it, the task's log was
empty (seen in CI: a video task of a multilayer EXR job with no log at all).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from farmhand.worker.agent import RenderJob, RenderOutcome
from tests.unit.test_worker_agent import FakeManager, _start, _stop, _write_frame


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
            ended = any(name in ("complete", "fail") for name, _ in self.calls)
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
