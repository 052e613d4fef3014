"""Stopping a manager while a worker's claim waits for work is a routine, quiet stop.

Uvicorn waits for open requests before it stops, and after its graceful timeout cuts
off those still open: an idle worker's long-polling claim was one of them, so every
`kill -TERM` of a manager with a worker attached logged "Cancel 1 running task(s),
timeout graceful shutdown exceeded" and an "Exception in ASGI application" traceback,
and the worker was answered 500. A claim waiting when the manager begins to stop is
now answered "no task" (204) at once, as when its wait ends.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from farmhand.localfarm import descendants, local_farm
from tests.integration.test_manager_processes import _register

pytestmark = pytest.mark.xdist_group("manager-processes")


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_a_waiting_claim_is_answered_and_the_manager_stops_quietly(
    tmp_path: Path, processes: int
) -> None:
    with local_farm(tmp_path, heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager(*(["--processes", "2"] if processes > 1 else []))
        assert manager.process is not None
        if processes > 1:
            deadline = time.monotonic() + 30
            # Both server processes up, so the claim may land on either.
            while len(descendants(manager.process.pid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        secret = _register(farm, "idle")
        answers: list[httpx.Response | Exception] = []

        def claim() -> None:
            try:
                with httpx.Client(
                    base_url=farm.url,
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=60,
                ) as client:
                    answers.append(client.get("/api/runner/tasks", params={"wait": 30}))
            except httpx.HTTPError as error:
                answers.append(error)

        claimer = threading.Thread(target=claim, daemon=True)
        claimer.start()
        time.sleep(1.0)  # the claim reaches the manager and waits (there is no work)
        assert claimer.is_alive(), answers  # still waiting, 29 s to go

        manager.terminate()
        claimer.join(10)  # would wait 29 s more if the stop did not answer it
        assert not claimer.is_alive(), "the waiting claim was not answered on SIGTERM"
        manager.process.wait(10)  # raises if the manager does not stop by itself
        log = manager.log_path.read_text(encoding="utf-8", errors="replace")

    # "No task", as when a wait ends: the worker asks again. Not a 500.
    assert len(answers) == 1
    answer = answers[0]
    assert isinstance(answer, httpx.Response), repr(answer)
    assert answer.status_code == 204, answer.text
    # A clean stop: status 0, as supervisors expect of a SIGTERM honoured (1de1bce).
    assert manager.process.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-6000:]
    assert "[error" not in log, log[-6000:]
    assert "Exception in ASGI application" not in log, log[-6000:]
