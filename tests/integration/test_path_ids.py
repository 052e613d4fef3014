"""`GET /status/{id}` (orchestrator) and `GET /job/{id}` (node) read an id as ASCII digits.

Python's digit tests are wider: `²` and `①` passed `isdigit()` and then made `int()`
fail (a 500 with no token needed), and full-width 5 (U+FF15) named render 5, whose `202`
then echoed it into a `Location` header HTTP cannot carry (another 500). An id written
any other way is an id the server does not know: the orchestrator's documented `404
{"detail": …}`, the node's `400 Job not found`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.node import NodeJob, NodeSettings, create_node_app
from farmhand.orchestrator import OrchestratorSettings, create_orchestrator_app
from farmhand.worker.blender.discovery import BlenderInstall

FULL_WIDTH = {ord(digit): ord(digit) + 0xFEE0 for digit in "0123456789"}
"""ASCII digits to full-width ones (U+FF10 to U+FF19)."""
ODD_IDS = [
    pytest.param(odd, id=name)
    for name, odd in [
        ("superscript", "²"),
        ("circled", "①"),
        ("arabic-indic", "\u0661"),
        ("devanagari", "\u096b"),
        ("digit-and-superscript", "1²"),
        ("5000-digits", "9" * 5000),  # more than int() reads
    ]
]


def running_node(request: httpx.Request) -> httpx.Response:
    """A node that takes every batch and is still rendering it whenever asked."""
    if request.method == "POST":
        return httpx.Response(202, json={"pid": 1}, headers={"Location": "/job/1"})
    return httpx.Response(202, text="Job still running", headers={"Retry-After": "1"})


@pytest.fixture
def orchestrator() -> Iterator[TestClient]:
    settings = OrchestratorSettings(nodes=("http://node-a:3000",), max_poll_interval=0.05)
    app = create_orchestrator_app(settings, httpx.MockTransport(running_node))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("render_id", ODD_IDS)
def test_orchestrator_answers_404_to_an_id_in_other_digits(
    orchestrator: TestClient, render_id: str
) -> None:
    answer = orchestrator.get(f"/status/{render_id}")
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"].startswith("no render ")


def test_orchestrator_knows_a_running_render_by_its_ascii_id_only(
    orchestrator: TestClient,
) -> None:
    started = orchestrator.post("/render", json={"from": 1, "to": 4})
    assert started.status_code == 202, started.text
    render_id = started.json()["id"]
    location = f"/status/{render_id}"
    assert started.headers["Location"] == location

    full_width = orchestrator.get(f"/status/{str(render_id).translate(FULL_WIDTH)}")
    assert full_width.status_code == 404, full_width.text

    for spelling in (str(render_id), f"0{render_id}"):
        running = orchestrator.get(f"/status/{spelling}")
        assert running.status_code == 202, running.text
        assert running.json()["id"] == render_id
        assert running.headers["Location"] == location, "the render's own address"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, threading.Event]]:
    release = threading.Event()

    def hold(_job: NodeJob) -> str | None:
        release.wait(30)
        return None

    settings = NodeSettings(
        blend=tmp_path / "scene.blend",
        output=tmp_path / "out",
        install=BlenderInstall("executable", "/nonexistent/blender", "0.0-fake"),
    )
    with TestClient(create_node_app(settings, run=hold), raise_server_exceptions=False) as client:
        yield client, release
        release.set()


def test_node_knows_a_job_by_its_ascii_id_only(node: tuple[TestClient, threading.Event]) -> None:
    client, _ = node
    started = client.post("/job", json={"from": 1, "to": 1})
    assert started.status_code == 202, started.text
    job_id = started.json()["pid"]
    assert client.get(f"/job/{job_id}").text == "Job still running"

    odd_ids = [str(job_id).translate(FULL_WIDTH), *(p.values[0] for p in ODD_IDS)]
    for odd in odd_ids:
        assert isinstance(odd, str)
        answer = client.get(f"/job/{odd}")
        assert (answer.status_code, answer.text) == (400, "Job not found"), odd[:20]
