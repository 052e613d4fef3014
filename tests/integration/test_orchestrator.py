"""`farmhand orchestrator` in front of `farmhand node`s: the tutorial's Part 2 contract.

The first tests run real processes: two nodes rendering with Blender (bpy) and the
orchestrator command itself. The rest drive the orchestrator's app against nodes
simulated with an httpx transport, for the answers that need a node to misbehave on cue
(busy, unreachable, never finishing) and for the input rules.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand import __version__
from farmhand.orchestrator import OrchestratorSettings, create_orchestrator_app
from farmhand.shared.images import verify_image
from tests.conftest import SCENE_SIZE
from tests.integration.conftest import scrape_metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(name: str, args: list[str], port: int, log_dir: Path) -> Iterator[str]:
    """`python -m farmhand …` listening on `port`; its URL once it answers."""
    log = (log_dir / f"{name}.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "farmhand", *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert child.poll() is None, (log_dir / f"{name}.log").read_text()
                assert time.monotonic() < deadline, f"{name} never started listening"
                time.sleep(0.2)
        yield url
    finally:
        child.terminate()
        child.wait(20)
        log.close()


def node(blend: Path, out: Path, log_dir: Path, name: str) -> AbstractContextManager[str]:
    args = ["node", "--blend", str(blend), "--output", str(out), "--blender", "bpy",
            "--retry-after", "1"]  # fmt: skip
    return process(name, args, free_port(), log_dir)


def orchestrator(nodes: list[str], log_dir: Path, *extra: str) -> AbstractContextManager[str]:
    args = ["orchestrator", *[a for url in nodes for a in ("--node", url)], "--batch", "2",
            "--retry-after", "1", "--max-poll-interval", "0.3", *extra]  # fmt: skip
    return process("orchestrator", args, free_port(), log_dir)


def render(client: httpx.Client, first: int, last: int, timeout: float = 180) -> httpx.Response:
    """What a client of the tutorial's orchestrator does: POST, then poll honouring Retry-After."""
    answer = client.post("/render", json={"from": first, "to": last})
    assert answer.status_code == 202, answer.text
    location = answer.headers["Location"]
    assert location == f"/status/{answer.json()['id']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), 0.5))
        answer = client.get(location)
        if answer.status_code != 202:
            return answer
        assert answer.headers["Location"] == location
        assert answer.json()["status"] == "running"
    raise AssertionError("the render never finished")


@pytest.mark.blender
@pytest.mark.slow
def test_two_real_nodes_render_frames_1_to_6_in_batches(
    tmp_path: Path, animated_blend: Path
) -> None:
    with (
        node(animated_blend, tmp_path / "out-a", tmp_path, "node-a") as a,
        node(animated_blend, tmp_path / "out-b", tmp_path, "node-b") as b,
        orchestrator([a, b], tmp_path) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        final = render(client, 1, 6)
        assert final.status_code == 200, final.text
        body = final.json()
        assert body["status"] == "done" and body["error"] is None
        assert [(x["from"], x["to"]) for x in body["batches"]] == [(1, 2), (3, 4), (5, 6)]
        assert {x["node"] for x in body["batches"]} == {a, b}, "both nodes rendered"
        assert client.get("/status/999").status_code == 404
        assert client.get("/status/nope").status_code == 404
    frames = sorted(
        [*tmp_path.glob("out-a/*.png"), *tmp_path.glob("out-b/*.png")], key=lambda p: p.name
    )
    assert [p.name for p in frames] == [f"blender-render_{n:04d}.png" for n in range(1, 7)]
    for frame in frames:
        verify_image(frame, *SCENE_SIZE)


@pytest.mark.blender
@pytest.mark.slow
def test_a_batch_a_node_fails_is_rendered_by_the_other(
    tmp_path: Path, animated_blend: Path, no_camera_blend: Path
) -> None:
    with (
        node(animated_blend, tmp_path / "out-good", tmp_path, "good") as good,
        node(no_camera_blend, tmp_path / "out-bad", tmp_path, "bad") as bad,
        orchestrator([bad, good], tmp_path) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        final = render(client, 1, 4)
        assert final.status_code == 200, final.text
        batches = final.json()["batches"]
        assert all(x["node"] == good for x in batches)
        retried = [x for x in batches if x["errors"]]
        assert retried, "the bad node failed at least one batch first"
        assert all(e.startswith(f"{bad}: 500 Job failed") for x in retried for e in x["errors"])
        assert "camera" in retried[0]["errors"][0].lower()
    assert sorted(p.name for p in tmp_path.glob("out-good/*.png")) == [
        f"blender-render_{n:04d}.png" for n in range(1, 5)
    ]


@pytest.mark.blender
@pytest.mark.slow
def test_a_render_every_node_fails_is_a_502_with_the_reasons(
    tmp_path: Path, no_camera_blend: Path
) -> None:
    with (
        node(no_camera_blend, tmp_path / "out-a", tmp_path, "node-a") as a,
        node(no_camera_blend, tmp_path / "out-b", tmp_path, "node-b") as b,
        orchestrator([a, b], tmp_path) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        final = render(client, 1, 1)
    assert final.status_code == 502, final.text
    body = final.json()
    assert body["status"] == "failed"
    assert body["error"].startswith("frames 1-1 failed: ")
    (batch,) = body["batches"]
    assert batch["state"] == "failed"
    assert len(batch["errors"]) == 3, "max_attempts (3) over both nodes"
    assert {e.split(": ")[0] for e in batch["errors"]} == {a, b}


# ------------------------------------------------------- simulated nodes (no Blender)


class FakeNodes:
    """Nodes answering the tutorial's contract; `mode[url]` says how each behaves."""

    def __init__(self, mode: dict[str, str]) -> None:
        self.mode = mode
        self.jobs: dict[tuple[str, int], int] = {}
        self.posts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        mode = self.mode[base]
        if mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "POST":
            self.posts.append(base)
            if mode == "busy":
                return httpx.Response(503, text="Node busy", headers={"Retry-After": "0"})
            job = len(self.jobs) + 1
            self.jobs[(base, job)] = 0
            return httpx.Response(
                202, json={"pid": job}, headers={"Location": f"/job/{job}", "Retry-After": "0"}
            )
        job = int(request.url.path.rsplit("/", 1)[1])
        self.jobs[(base, job)] += 1
        if mode == "slow" or self.jobs[(base, job)] < 2:
            return httpx.Response(202, text="Job still running", headers={"Retry-After": "0"})
        return httpx.Response(200, text="Job completed")


A, B = "http://node-a:3000", "http://node-b:3000"


@contextmanager
def fake_orchestrator(nodes: FakeNodes, **options: object) -> Iterator[TestClient]:
    settings = OrchestratorSettings(
        nodes=(A, B),
        batch_size=2,
        retry_after=1,
        max_poll_interval=0.02,
        **options,  # type: ignore[arg-type]
    )
    with TestClient(create_orchestrator_app(settings, httpx.MockTransport(nodes))) as client:
        yield client


def poll(
    client: TestClient, location: str, until: Callable[[httpx.Response], bool]
) -> httpx.Response:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer: httpx.Response = client.get(location)
        if until(answer):
            return answer
        time.sleep(0.02)
    raise AssertionError(f"{location} never changed: {answer.text}")


def test_a_busy_node_is_left_for_the_other() -> None:
    nodes = FakeNodes({A: "busy", B: "ok"})
    with fake_orchestrator(nodes) as client:
        answer = client.post("/render", json={"from": 1, "to": 6})
        assert answer.status_code == 202
        assert answer.headers["Retry-After"] == "1"
        final = poll(client, answer.headers["Location"], lambda r: r.status_code != 202)
    assert final.status_code == 200
    assert {x["node"] for x in final.json()["batches"]} == {B}
    assert all(not x["errors"] for x in final.json()["batches"]), "busy is not a failure"
    assert A in nodes.posts, "node A was asked and said busy"


def test_an_unreachable_node_costs_an_attempt_and_the_other_renders() -> None:
    with fake_orchestrator(FakeNodes({A: "down", B: "ok"})) as client:
        answer = client.post("/render", json={"from": 1, "to": 2})
        final = poll(client, answer.headers["Location"], lambda r: r.status_code != 202)
    assert final.status_code == 200
    (batch,) = final.json()["batches"]
    assert batch["node"] == B
    assert batch["errors"] and batch["errors"][0].startswith(f"{A}: unreachable")


def test_past_max_active_renders_the_answer_is_503_with_retry_after() -> None:
    with fake_orchestrator(FakeNodes({A: "slow", B: "slow"}), max_active=1) as client:
        assert client.post("/render", json={"from": 1, "to": 2}).status_code == 202
        busy = client.post("/render", json={"from": 3, "to": 4})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert "busy" in busy.json()["detail"]
        assert client.get("/status/1").status_code == 202, "the first render runs on"
        assert client.get("/status/2").status_code == 404, "the refused one was not kept"


def test_past_the_rate_limit_a_client_gets_429_with_retry_after() -> None:
    with fake_orchestrator(FakeNodes({A: "ok", B: "ok"}), rate_limit=2, rate_window=60) as client:
        for _ in range(2):
            assert client.post("/render", json={"from": 1, "to": 1}).status_code == 202
        limited = client.post("/render", json={"from": 1, "to": 1})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert client.get("/status/1").status_code != 429, "polling is not limited"


def test_refused_requests_do_not_use_up_the_rate_limit() -> None:
    """Only renders that start count: a client that sent bad input, or was told to come
    back later (503), still gets its --rate-limit renders."""
    nodes = FakeNodes({A: "slow", B: "slow"})
    with fake_orchestrator(nodes, rate_limit=2, rate_window=600, max_active=1) as client:
        assert client.post("/render", json={"from": 5, "to": 1}).status_code == 400
        assert client.post("/render", json={"from": 1, "to": 99_999}).status_code == 400
        assert client.post("/render", json={"from": 1, "to": 1}).status_code == 202
        for _ in range(3):
            busy = client.post("/render", json={"from": 2, "to": 2})
            assert busy.status_code == 503, busy.text
        nodes.mode.update({A: "ok", B: "ok"})
        poll(client, "/status/1", lambda r: r.status_code == 200)
        deadline = time.monotonic() + 20
        while (second := client.post("/render", json={"from": 2, "to": 2})).status_code == 503:
            assert time.monotonic() < deadline, "the first render never stopped being active"
            time.sleep(0.02)
        assert second.status_code == 202, second.text
        poll(client, second.headers["Location"], lambda r: r.status_code == 200)
        third = client.post("/render", json={"from": 3, "to": 3})
        assert third.status_code == 429, "two renders started: the budget is spent"
        assert "more than 2 renders in 600 s" in third.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"from": "1", "to": 5},
        {"from": 1.0, "to": 5},
        {"from": True, "to": 5},
        {"from": 1},
        {"to": 5},
        {"from": 5, "to": 1},
        {"from": 1, "to": 20_000},
        {"from": 1, "to": 5, "step": 2},
        {"from": 1, "to": 99_999_999},
        [1, 5],
    ],
)
def test_bad_input_is_400_and_starts_nothing(body: object) -> None:
    nodes = FakeNodes({A: "ok", B: "ok"})
    with fake_orchestrator(nodes) as client:
        answer = client.post("/render", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]
        assert client.get("/status/1").status_code == 404
    assert nodes.posts == []


def test_a_body_that_is_not_json_is_400() -> None:
    with fake_orchestrator(FakeNodes({A: "ok", B: "ok"})) as client:
        answer = client.post("/render", content=b"from=1&to=5")
    assert answer.status_code == 400


def scrape_until(client: TestClient, ready: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while not ready(metrics := scrape_metrics(client)):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.02)
    return metrics


def labelled(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """One family's samples by the value of its only label."""
    prefix = f'{name}{{{label}="'
    return {k.removeprefix(prefix)[:-2]: v for k, v in metrics.items() if k.startswith(prefix)}


def test_metrics_count_renders_batches_and_what_each_node_renders() -> None:
    with fake_orchestrator(
        FakeNodes({A: "slow", B: "slow"}), max_active=3, rate_limit=7, rate_window=30
    ) as client:
        idle = scrape_metrics(client)
        assert idle[f'farmhand_orchestrator_info{{version="{__version__}"}}'] == 1
        assert labelled(idle, "farmhand_orchestrator_renders", "status") == {
            "running": 0, "done": 0, "failed": 0
        }  # fmt: skip
        assert set(labelled(idle, "farmhand_orchestrator_batches", "state").values()) == {0}
        assert labelled(idle, "farmhand_orchestrator_node_batches_running", "node") == {A: 0, B: 0}
        assert idle["farmhand_orchestrator_nodes"] == 2
        assert idle["farmhand_orchestrator_renders_started_total"] == 0
        assert idle["farmhand_orchestrator_renders_active"] == 0
        assert idle["farmhand_orchestrator_max_active"] == 3
        assert idle["farmhand_orchestrator_rate_limit"] == 7
        assert idle["farmhand_orchestrator_rate_limit_window_seconds"] == 30

        assert client.post("/render", json={"from": 1, "to": 6}).status_code == 202
        running = "farmhand_orchestrator_node_batches_running"
        busy = scrape_until(client, lambda m: sum(labelled(m, running, "node").values()) == 2)
        assert labelled(busy, "farmhand_orchestrator_node_batches_running", "node") == {A: 1, B: 1}
        batches = labelled(busy, "farmhand_orchestrator_batches", "state")
        assert batches == {"pending": 1, "running": 2, "done": 0, "failed": 0}
        assert sum(batches.values()) == client.get("/status/1").json()["batches_total"] == 3
        assert labelled(busy, "farmhand_orchestrator_renders", "status")["running"] == 1
        assert busy["farmhand_orchestrator_renders_started_total"] == 1
        assert busy["farmhand_orchestrator_renders_active"] == 1


def test_metrics_after_a_render_is_done() -> None:
    with fake_orchestrator(FakeNodes({A: "ok", B: "ok"})) as client:
        answer = client.post("/render", json={"from": 1, "to": 5})
        poll(client, answer.headers["Location"], lambda r: r.status_code == 200)
        # The render stops counting as active once its node threads have ended.
        done = scrape_until(client, lambda m: m["farmhand_orchestrator_renders_active"] == 0)
    assert labelled(done, "farmhand_orchestrator_renders", "status") == {
        "running": 0, "done": 1, "failed": 0
    }  # fmt: skip
    assert labelled(done, "farmhand_orchestrator_batches", "state") == {
        "pending": 0, "running": 0, "done": 3, "failed": 0
    }  # fmt: skip
    assert labelled(done, "farmhand_orchestrator_node_batches_running", "node") == {A: 0, B: 0}
    assert done["farmhand_orchestrator_renders_started_total"] == 1


def test_openapi_documents_metrics_as_text() -> None:
    with fake_orchestrator(FakeNodes({A: "ok", B: "ok"})) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/render", "/status/{render_id}", "/metrics"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_metrics_show_a_render_that_failed_on_every_node() -> None:
    with fake_orchestrator(FakeNodes({A: "down", B: "down"})) as client:
        answer = client.post("/render", json={"from": 1, "to": 2})
        poll(client, answer.headers["Location"], lambda r: r.status_code == 502)
        failed = scrape_until(client, lambda m: m["farmhand_orchestrator_renders_active"] == 0)
    assert labelled(failed, "farmhand_orchestrator_renders", "status") == {
        "running": 0, "done": 0, "failed": 1
    }  # fmt: skip
    assert labelled(failed, "farmhand_orchestrator_batches", "state")["failed"] == 1
