"""`farmhand node` against the tutorial's contract, driven the way its orchestrator drives it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand import __version__
from farmhand.node import NodeJob, NodeSettings, create_node_app
from farmhand.shared.frames import MAX_FRAME, MAX_FRAMES_PER_JOB
from farmhand.shared.images import verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from tests.conftest import SCENE_SIZE
from tests.integration.conftest import scrape_metrics


def orchestrate(
    client: httpx.Client, first: int, last: int, timeout: float = 120
) -> httpx.Response:
    """What the tutorial's orchestrator does: POST, then poll Location honouring Retry-After."""
    answer = client.post("/job", json={"from": first, "to": last})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"pid": int(answer.headers["Location"].rsplit("/", 1)[1])}
    location = answer.headers["Location"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(float(answer.headers.get("Retry-After", "1")))
        answer = client.get(location)
        if answer.status_code != 202:
            return answer
        assert answer.text == "Job still running"
        assert answer.headers["Location"] == location
    raise AssertionError("the job never finished")


@contextmanager
def node_client(
    tmp_path: Path,
    install: BlenderInstall,
    blend: Path | None = None,
    run: object = None,
    **options: object,
) -> Iterator[TestClient]:
    settings = NodeSettings(
        blend=blend or tmp_path / "scene.blend",
        output=tmp_path / "out",
        install=install,
        retry_after=options.pop("retry_after", 0),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    with TestClient(create_node_app(settings, run)) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture
def counted_fake(
    fake_blender: BlenderInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The fake Blender, logging one line per start to the returned file."""
    count = tmp_path / "blender-starts"
    monkeypatch.setenv("FAKE_COUNT_FILE", str(count))
    monkeypatch.setenv("FAKE_MODE", "ok")
    return count


def test_tutorial_sequence_with_a_fake_blender(
    tmp_path: Path, fake_blender: BlenderInstall, counted_fake: Path
) -> None:
    with node_client(tmp_path, fake_blender) as client:
        answer = client.post("/job", json={"from": 1, "to": 3})
        assert answer.status_code == 202
        assert answer.headers["Location"] == "/job/1"
        assert answer.headers["Retry-After"] == "0"
        assert answer.json() == {"pid": 1}
        final = orchestrate(client, 4, 5)
    assert (final.status_code, final.text) == (200, "Job completed")
    for frame in (1, 2, 3, 4, 5):
        verify_image(tmp_path / "out" / f"blender-render_{frame:04d}.png", 64, 48)


@pytest.mark.parametrize(
    "body",
    [
        {"from": "1; touch X", "to": 5},
        {"from": 1, "to": "5 && touch X"},
        {"from": 5, "to": 1},
        {"from": 1.0, "to": 5},
        {"from": 1.5, "to": 5},
        {"from": True, "to": 5},
        {"from": 1, "to": None},
        {"from": 1},
        {"to": 5},
        {},
        [1, 5],
        {"from": 1, "to": MAX_FRAME + 1},
        {"from": -MAX_FRAME - 1, "to": 1},
        {"from": 1, "to": MAX_FRAMES_PER_JOB + 1},
    ],
)
def test_bad_input_is_400_and_starts_nothing(
    tmp_path: Path, fake_blender: BlenderInstall, counted_fake: Path, body: object
) -> None:
    marker = tmp_path / "X"
    if isinstance(body, dict):
        body = {
            k: v.replace("X", str(marker)) if isinstance(v, str) else v for k, v in body.items()
        }
    with node_client(tmp_path, fake_blender) as client:
        answer = client.post("/job", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text.startswith("Invalid input")
        assert client.get("/job/1").status_code == 400, "no job was created"
        time.sleep(0.2)
    assert not marker.exists()
    assert not counted_fake.exists(), "a Blender was started for a bad request"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"from=1&to=5"])
def test_malformed_json_is_400(tmp_path: Path, fake_blender: BlenderInstall, raw: bytes) -> None:
    with node_client(tmp_path, fake_blender) as client:
        answer = client.post("/job", content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text


def test_json_without_json_content_type_is_400_with_a_hint(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    """As the tutorial's express.json(): only application/json bodies are read."""
    with node_client(tmp_path, fake_blender) as client:
        answer = client.post("/job", content=b'{"from": 1, "to": 2}')
        assert answer.status_code == 400
        assert "Content-Type: application/json" in answer.text


def test_range_errors_say_what_is_wrong(tmp_path: Path, fake_blender: BlenderInstall) -> None:
    with node_client(tmp_path, fake_blender) as client:
        assert "before start frame" in client.post("/job", json={"from": 5, "to": 1}).text
        assert "outside" in client.post("/job", json={"from": 1, "to": MAX_FRAME + 1}).text


@pytest.mark.parametrize("job_id", ["99", "abc", "-1", "1e3", "9" * 40])
def test_unknown_job_is_400_job_not_found(
    tmp_path: Path, fake_blender: BlenderInstall, job_id: str
) -> None:
    with node_client(tmp_path, fake_blender) as client:
        answer = client.get(f"/job/{job_id}")
        assert (answer.status_code, answer.text) == (400, "Job not found")


def test_failed_render_is_500_with_the_reason(
    tmp_path: Path, fake_blender: BlenderInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "exit0_no_frames")
    with node_client(tmp_path, fake_blender) as client:
        final = orchestrate(client, 1, 2)
    assert final.status_code == 500
    assert final.text.startswith("Job failed: ") and "frame 1" in final.text


class Gate:
    """A renderer that holds every job until released: makes queueing deterministic."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running: list[int] = []

    def __call__(self, job: NodeJob) -> str | None:
        self.running.append(job.id)
        assert self.release.wait(30)
        return None


def wait_until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_one_render_at_a_time_others_wait_then_503(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    gate = Gate()
    with node_client(
        tmp_path, fake_blender, run=gate, max_concurrent=1, queue_limit=2, retry_after=7
    ) as client:
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202
        wait_until(lambda: gate.running == [1])
        for _ in range(2):
            assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202
        busy = client.post("/job", json={"from": 1, "to": 1})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "7"
        queued = client.get("/job/3")
        assert (queued.status_code, queued.text) == (202, "Job still running")
        assert queued.headers["Location"] == "/job/3"
        assert gate.running == [1], "only one render at a time"
        gate.release.set()
        wait_until(lambda: client.get("/job/3").status_code == 200)
        assert gate.running == [1, 2, 3], "jobs run in the order they came"
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202


def test_max_concurrent_two_runs_two_at_once(tmp_path: Path, fake_blender: BlenderInstall) -> None:
    gate = Gate()
    with node_client(tmp_path, fake_blender, run=gate, max_concurrent=2, queue_limit=0) as client:
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202
        wait_until(lambda: sorted(gate.running) == [1, 2])
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 503
        gate.release.set()


def test_openapi_documents_the_routes(tmp_path: Path, fake_blender: BlenderInstall) -> None:
    with node_client(tmp_path, fake_blender) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/job", "/job/{job_id}", "/metrics"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def jobs_by_status(metrics: dict[str, float]) -> dict[str, float]:
    prefix = 'farmhand_node_jobs{status="'
    return {k.removeprefix(prefix)[:-2]: v for k, v in metrics.items() if k.startswith(prefix)}


def test_metrics_follow_jobs_through_the_queue(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    gate = Gate()

    def run(job: NodeJob) -> str | None:
        return "no camera" if job.id == 2 else gate(job)

    with node_client(tmp_path, fake_blender, run=run, max_concurrent=1, queue_limit=2) as client:
        idle = scrape_metrics(client)
        assert (
            idle[f'farmhand_node_info{{blender="{fake_blender.version}",version="{__version__}"}}']
            == 1
        )
        assert jobs_by_status(idle) == {"queued": 0, "rendering": 0, "completed": 0, "failed": 0}
        assert (idle["farmhand_node_queue_length"], idle["farmhand_node_queue_limit"]) == (0, 2)
        assert idle["farmhand_node_renders_running"] == 0
        assert idle["farmhand_node_max_concurrent"] == 1

        for _ in range(3):
            assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202
        wait_until(lambda: gate.running == [1])
        busy = scrape_metrics(client)
        assert jobs_by_status(busy) == {"queued": 2, "rendering": 1, "completed": 0, "failed": 0}
        assert (busy["farmhand_node_queue_length"], busy["farmhand_node_renders_running"]) == (2, 1)

        gate.release.set()
        wait_until(lambda: client.get("/job/3").status_code == 200)
        done = scrape_metrics(client)
        assert jobs_by_status(done) == {"queued": 0, "rendering": 0, "completed": 2, "failed": 1}
        assert (done["farmhand_node_queue_length"], done["farmhand_node_renders_running"]) == (0, 0)


@pytest.mark.blender
def test_no_camera_scene_is_job_failed_with_blenders_message(
    tmp_path: Path, blender_module: BlenderInstall, no_camera_blend: Path
) -> None:
    with node_client(tmp_path, blender_module, blend=no_camera_blend) as client:
        final = orchestrate(client, 1, 2)
    assert final.status_code == 500
    assert final.text.startswith("Job failed: ") and "camera" in final.text.lower()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NODE_MAIN = """
import sys, typer
from farmhand.cli.node_cmd import node
app = typer.Typer()
app.command()(node)
app(sys.argv[1:])
"""


@pytest.mark.blender
def test_real_node_process_renders_with_blender(
    tmp_path: Path, blender_module: BlenderInstall, animated_blend: Path
) -> None:
    """The command itself, as a process, with Blender 5 (bpy): the tutorial's happy path."""
    port = free_port()
    args = ["--port", str(port), "--host", "127.0.0.1", "--blend", str(animated_blend),
            "--output", str(tmp_path / "out"), "--blender", "bpy",
            "--retry-after", "1"]  # fmt: skip
    log = (tmp_path / "node.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", NODE_MAIN, *args], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/job/1")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, (tmp_path / "node.log").read_text()
                    assert time.monotonic() < deadline, "the node never started listening"
                    time.sleep(0.2)
            final = orchestrate(client, 1, 3)
        assert (final.status_code, final.text) == (200, "Job completed")
        for frame in (1, 2, 3):
            path = tmp_path / "out" / f"blender-render_{frame:04d}.png"
            assert verify_image(path, *SCENE_SIZE).format == "PNG"
    finally:
        process.terminate()
        process.wait(20)
        log.close()
