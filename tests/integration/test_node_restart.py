"""A restarted `farmhand node` never answers an id it handed out before for another job.

The node keeps its jobs in memory, so after a restart an id an orchestrator still polls
must be unknown (`400 Job not found`, which the orchestrator retries), never the id of a
job the new process accepted since (which would answer "done" for frames never
rendered). The nodes here are the node's app in-process, "restarted" by closing one app
and starting another on the same settings; the orchestrator reaches them through an
httpx transport, so when it polls is under the test's control.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from farmhand.node import JobQueue, NodeJob, NodeSettings, create_node_app
from farmhand.orchestrator import OrchestratorSettings, create_orchestrator_app
from farmhand.worker.blender.discovery import BlenderInstall

NODE = "http://node:3000"


class Renderer:
    """Records the frames of each job; holds every job until released or canceled."""

    def __init__(self, hold: bool) -> None:
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.jobs: list[list[int]] = []

    def __call__(self, job: NodeJob) -> str | None:
        self.jobs.append(job.frames)
        while not self.release.wait(0.02):
            if job.cancel.is_set():
                return "the node shut down"
        return None


def settings(tmp_path: Path, fake_blender: BlenderInstall) -> NodeSettings:
    return NodeSettings(
        blend=tmp_path / "scene.blend", output=tmp_path / "out", install=fake_blender, retry_after=0
    )


def wait_until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ids_from_before_a_restart_are_job_not_found_after_it(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    before = Renderer(hold=True)
    with TestClient(create_node_app(settings(tmp_path, fake_blender), before)) as node:
        old = node.post("/job", json={"from": 1, "to": 20})
        assert old.status_code == 202
        wait_until(lambda: before.jobs == [list(range(1, 21))])
    old_id = old.json()["pid"]

    after = Renderer(hold=False)
    with TestClient(create_node_app(settings(tmp_path, fake_blender), after)) as node:
        new = node.post("/job", json={"from": 100, "to": 100})
        assert new.status_code == 202
        new_id = new.json()["pid"]
        assert isinstance(new_id, int) and new_id > old_id, "ids keep growing across restarts"
        assert new.headers["Location"] == f"/job/{new_id}"
        wait_until(lambda: node.get(f"/job/{new_id}").status_code == 200)
        answer = node.get(old.headers["Location"])
        assert (answer.status_code, answer.text) == (400, "Job not found")


def test_ids_stay_exact_for_javascript_clients_and_grow_if_the_clock_steps_back() -> None:
    """The tutorial's clients are JavaScript: an id must be below 2**53 to be read exactly.
    Within a run, a clock stepped back must not make an id come round again."""
    readings = iter([2_000_000, 2_000_000, 1_000_000, 3_000_000])
    jobs = JobQueue(lambda _job: None, queue_limit=8, clock=lambda: next(readings))
    assert [jobs.submit([1]).id for _ in range(4)] == [2_000_000, 2_000_001, 2_000_002, 3_000_000]
    first = JobQueue(lambda _job: None).submit([1]).id
    assert time.time_ns() // 1000 - 10_000_000 < first < 2**53


class RestartingNode:
    """One node URL, served by whichever node app runs now. `restarting()` holds every
    request to the node while the app is replaced, as a node that is slow to answer."""

    def __init__(self, tmp_path: Path, fake_blender: BlenderInstall) -> None:
        self.settings = settings(tmp_path, fake_blender)
        self.stack = ExitStack()
        self.lock = threading.Lock()
        self.renderer = Renderer(hold=True)
        self.client = self._start(self.renderer)

    def _start(self, renderer: Renderer) -> TestClient:
        return self.stack.enter_context(TestClient(create_node_app(self.settings, renderer)))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            answer = self.client.request(
                request.method,
                request.url.path,
                content=request.content,
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @contextmanager
    def restarting(self) -> Iterator[None]:
        with self.lock:
            self.stack.close()
            self.renderer = Renderer(hold=False)
            self.client = self._start(self.renderer)
            yield

    def close(self) -> None:
        self.stack.close()


def test_the_orchestrator_renders_again_a_batch_whose_node_restarted(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    """QA's repro: the orchestrator's batch 1-20 is the node's job; the node restarts
    and takes another client's job for frame 100; the orchestrator, polling its old id,
    must hear "Job not found" and send 1-20 again, not take frame 100 for its batch."""
    node = RestartingNode(tmp_path, fake_blender)
    options = OrchestratorSettings(
        nodes=(NODE,), batch_size=20, retry_after=1, max_poll_interval=0.02
    )
    try:
        with TestClient(create_orchestrator_app(options, httpx.MockTransport(node))) as client:
            started = client.post("/render", json={"from": 1, "to": 20})
            assert started.status_code == 202
            first = node.renderer
            wait_until(lambda: first.jobs == [list(range(1, 21))])
            with node.restarting():
                other = node.client.post("/job", json={"from": 100, "to": 100})
                assert other.status_code == 202
            deadline = time.monotonic() + 20
            while (final := client.get(started.headers["Location"])).status_code == 202:
                assert time.monotonic() < deadline, final.text
                time.sleep(0.02)
    finally:
        node.close()
    assert final.status_code == 200, final.text
    (batch,) = final.json()["batches"]
    assert batch["errors"] == [f"{NODE}: 400 Job not found"], "the lost job was noticed"
    assert node.renderer.jobs == [[100], list(range(1, 21))], "1-20 rendered after the restart"
