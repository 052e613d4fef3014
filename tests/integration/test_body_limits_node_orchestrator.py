"""`farmhand node` and `farmhand orchestrator` refuse oversized and absurdly nested bodies
in their documented styles (NODE.md: plain text; ORCHESTRATOR.md: `{"detail": …}`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.node import NodeJob, NodeSettings, create_node_app
from farmhand.orchestrator import OrchestratorSettings, create_orchestrator_app
from farmhand.worker.blender.discovery import BlenderInstall

DEEP = b"[" * 10_000 + b"]" * 10_000
BIG = json.dumps({"from": 1, "to": 1, "pad": "x" * (20 * 1024**2)}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def started() -> list[NodeJob]:
    return []


@pytest.fixture
def node(tmp_path: Path, started: list[NodeJob]) -> Iterator[TestClient]:
    settings = NodeSettings(
        blend=tmp_path / "scene.blend",
        output=tmp_path / "out",
        install=BlenderInstall("executable", "/nonexistent/blender", "0.0-fake"),
    )
    with TestClient(create_node_app(settings, run=lambda job: started.append(job))) as client:
        yield client


@pytest.fixture
def orchestrator() -> Iterator[TestClient]:
    posts: list[httpx.Request] = []

    def nodes(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        return httpx.Response(503, headers={"Retry-After": "0"})

    settings = OrchestratorSettings(nodes=("http://node-a:3000",))
    with TestClient(create_orchestrator_app(settings, httpx.MockTransport(nodes))) as client:
        yield client
    assert posts == [], "a refused body reached a node"


def chunked(body: bytes) -> Iterator[bytes]:
    """The body without a Content-Length, so the limit must count what arrives."""
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


def test_node_refuses_a_20_mib_body_with_413_text(node: TestClient, started: list[NodeJob]) -> None:
    answer = node.post("/job", content=BIG, headers=JSON)
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith("Request too large: the request body is larger than 65536")
    assert node.get("/job/1").text == "Job not found"
    assert started == []


def test_node_refuses_a_chunked_body_past_the_limit(node: TestClient) -> None:
    answer = node.post("/job", content=chunked(BIG), headers=JSON)
    assert answer.status_code == 413, answer.text
    assert answer.text.startswith("Request too large")


def test_node_answers_deep_json_with_its_invalid_input_text(
    node: TestClient, started: list[NodeJob]
) -> None:
    answer = node.post("/job", content=DEEP, headers=JSON)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith("Invalid input: ")
    assert "nests deeper than 32 levels" in answer.text
    assert started == []


def test_node_still_takes_a_small_job_with_extra_keys(node: TestClient) -> None:
    body = json.dumps({"from": 1, "to": 2, "note": "x" * 1000, "tags": [[1]]}).encode()
    answer = node.post("/job", content=body, headers=JSON)
    assert answer.status_code == 202, answer.text


def test_orchestrator_refuses_a_20_mib_body_with_413_json(orchestrator: TestClient) -> None:
    answer = orchestrator.post("/render", content=BIG, headers=JSON)
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"].startswith("the request body is larger than 65536 bytes")
    assert orchestrator.get("/status/1").status_code == 404


def test_orchestrator_answers_deep_json_with_its_400_detail(orchestrator: TestClient) -> None:
    answer = orchestrator.post("/render", content=DEEP, headers=JSON)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith('send JSON {"from": <integer>, "to": <integer>}')
    assert "nests deeper than 32 levels" in detail
