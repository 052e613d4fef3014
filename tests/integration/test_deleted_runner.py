"""A runner an admin deletes is locked out: its worker stops rendering at once and exits,
rather than registering itself back with the shared registration token.

A real `farmhand manager` process; the worker agent runs in this process with a stand-in
renderer that renders until it is canceled, so what is checked is what the agent does
with the manager's answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from farmhand.localfarm import LocalFarm
from farmhand.worker.agent import (
    EXIT_DELETED,
    RenderJob,
    RenderOutcome,
    WorkerSettings,
    run_worker,
)
from tests.integration.conftest import submit_stand_in


@dataclass
class Renders:
    """A renderer that renders until canceled, telling the test when it starts and ends."""

    started: threading.Event = field(default_factory=threading.Event)
    canceled: threading.Event = field(default_factory=threading.Event)

    def __call__(self, job: RenderJob) -> RenderOutcome:
        self.started.set()
        job.cancel.wait()
        self.canceled.set()
        return RenderOutcome(ok=False, error="canceled")


@dataclass
class Worker:
    thread: threading.Thread
    stop: threading.Event
    code: list[int]

    def exit_code(self, timeout: float = 60.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not exit"
        return self.code[0]


def _start(farm: LocalFarm, work_dir: Path, renders: Renders, **options: Any) -> Worker:
    settings = WorkerSettings(
        manager_url=farm.url,
        registration_token=farm.runner_token,
        name="w1",
        work_dir=work_dir,
        heartbeat_interval=0.5,
        poll_wait=1.0,
        progress_interval=0.2,
        shutdown_grace=2.0,
        **options,
    )
    stop, code = threading.Event(), []
    thread = threading.Thread(
        target=lambda: code.append(
            run_worker(settings, renderer=renders, blender_versions=["3.4.1"], stop=stop)
        ),
        daemon=True,
    )
    thread.start()
    return Worker(thread, stop, code)


@pytest.fixture
def admin(manager: LocalFarm) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {manager.admin_token}"}
    with httpx.Client(base_url=manager.url, headers=headers, timeout=30) as client:
        yield client


def _runners(admin: httpx.Client) -> list[dict[str, Any]]:
    answer = admin.get("/api/admin/runners")
    assert answer.status_code == 200, answer.text
    runners: list[dict[str, Any]] = answer.json()
    return runners


def test_a_deleted_runner_stops_its_render_and_exits_without_registering_again(
    manager: LocalFarm, admin: httpx.Client, tmp_path: Path
) -> None:
    work_dir = tmp_path / "worker"
    renders = Renders()
    with capture_logs() as logs:
        worker = _start(manager, work_dir, renders)
        job_id = submit_stand_in(admin, frame_start=1, frame_end=1)
        assert renders.started.wait(60), "the worker never started the task"
        (runner,) = _runners(admin)
        assert admin.delete(f"/api/admin/runners/{runner['id']}").status_code == 204

        # The render is stopped because the manager refused the runner, not at its end:
        # this renderer never ends by itself.
        assert renders.canceled.wait(60), "the deleted runner's render went on"
        assert worker.exit_code() == EXIT_DELETED
    assert _runners(admin) == [], "the worker registered itself back"
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1, errors
    assert "deleted by admin" in errors[0]["detail"], errors[0]
    assert "--register-again" in errors[0]["event"]
    task = admin.get(f"/api/jobs/{job_id}").json()["tasks"][0]
    assert task["status"] == "queued" and task["worker"] is None, task

    # Started again with the same identity (a service manager's restart): the first
    # request hears the same answer, and it exits again, taking nothing.
    again = Renders()
    assert _start(manager, work_dir, again).exit_code() == EXIT_DELETED
    assert not again.started.is_set() and _runners(admin) == []

    # The operator means it: --register-again throws the old identity away.
    anew = Renders()
    worker = _start(manager, work_dir, anew, register_again=True)
    assert anew.started.wait(60), "the re-registered worker took no work"
    (new_runner,) = _runners(admin)
    assert new_runner["id"] != runner["id"]
    worker.stop.set()
    assert worker.exit_code() == 0
