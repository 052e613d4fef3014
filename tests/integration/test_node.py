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
        pid = answer.json()["pid"]
        assert isinstance(pid, int) and answer.json() == {"pid": pid}
        assert answer.headers["Location"] == f"/job/{pid}"
        assert answer.headers["Retry-After"] == "0"
        final = orchestrate(client, 4, 5)
    assert (final.status_code, final.text) == (200, "Job completed")
    for frame in (1, 2, 3, 4, 5):
        verify_image(tmp_path / "out" / f"blender-render_{frame:04d}.png", 64, 48)


DRIVER_LIKE_BLENDER = r'''
"""A fake Blender writing what the driver writes for a frame: the frame, a File Output
node's pass under `passes/`, and (unless the command says `"previews": false`, as the
driver) a JPEG preview under `previews/`."""
import json, os, sys
from PIL import Image

def emit(event, **fields):
    fields["event"] = event
    print("@@farmhand@@ " + json.dumps(fields), flush=True)

emit("ready", version="0.0-fake")
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if command["cmd"] == "open":
        emit("opened", scene="Scene")
        continue
    out = command["output_dir"]
    for frame in command["frames"]:
        emit("frame_started", frame=frame)
        name = "%s%04d" % (command["file_stem"], frame)
        Image.new("RGB", (64, 48), (frame * 9, 40, 90)).save(os.path.join(out, name + ".png"))
        passes = os.path.join(out, "passes", "00-File_Output")
        os.makedirs(passes, exist_ok=True)
        extra = os.path.join(passes, "depth_%04d.png" % frame)
        Image.new("L", (64, 48), 7).save(extra)
        preview = None
        if command.get("previews", True):
            os.makedirs(os.path.join(out, "previews"), exist_ok=True)
            preview = os.path.join(out, "previews", name + ".jpg")
            Image.new("RGB", (32, 24)).save(preview)
        emit("frame_saved", frame=frame, path=os.path.join(out, name + ".png"), seconds=0.01,
             width=64, height=48, preview=preview, extras=[extra])
    emit("render_done", frames=len(command["frames"]))
emit("bye")
'''


def test_the_node_writes_frames_and_passes_but_no_previews(tmp_path: Path) -> None:
    """Several nodes may share one --output: only frames (and File Output passes) go
    there, no `previews/` of JPEGs, and nothing of a job's own is left behind."""
    fake = tmp_path / "driver-like-blender"
    fake.write_text(f"#!{sys.executable}\n{DRIVER_LIKE_BLENDER}")
    fake.chmod(0o755)
    with node_client(tmp_path, BlenderInstall("executable", str(fake), "0.0-fake")) as client:
        final = orchestrate(client, 1, 2)
    assert (final.status_code, final.text) == (200, "Job completed")
    out = tmp_path / "out"
    written = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] != ".farmhand-logs"
    )
    assert written == [
        "blender-render_0001.png",
        "blender-render_0002.png",
        "passes/00-File_Output/depth_0001.png",
        "passes/00-File_Output/depth_0002.png",
    ]
    assert not (out / "previews").exists()
    assert not any((out / ".farmhand-rendering").iterdir()), "the job's folder is gone"
    for frame in (1, 2):
        verify_image(out / f"blender-render_{frame:04d}.png", 64, 48)


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
        assert sum(jobs_by_status(scrape_metrics(client)).values()) == 0, "no job was created"
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


def submit(client: TestClient, frame: int = 1) -> int:
    """POST a one-frame job; its id."""
    answer = client.post("/job", json={"from": frame, "to": frame})
    assert answer.status_code == 202, answer.text
    return int(answer.json()["pid"])


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
        first = submit(client)
        wait_until(lambda: gate.running == [first])
        ids = [first, submit(client), submit(client)]
        busy = client.post("/job", json={"from": 1, "to": 1})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "7"
        queued = client.get(f"/job/{ids[2]}")
        assert (queued.status_code, queued.text) == (202, "Job still running")
        assert queued.headers["Location"] == f"/job/{ids[2]}"
        assert gate.running == [first], "only one render at a time"
        gate.release.set()
        wait_until(lambda: client.get(f"/job/{ids[2]}").status_code == 200)
        assert gate.running == ids, "jobs run in the order they came"
        assert ids == sorted(set(ids)), "ids grow"
        assert client.post("/job", json={"from": 1, "to": 1}).status_code == 202


def test_max_concurrent_two_runs_two_at_once(tmp_path: Path, fake_blender: BlenderInstall) -> None:
    gate = Gate()
    with node_client(tmp_path, fake_blender, run=gate, max_concurrent=2, queue_limit=0) as client:
        ids = [submit(client), submit(client)]
        wait_until(lambda: sorted(gate.running) == ids)
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
        return "no camera" if job.frames == [2] else gate(job)

    with node_client(tmp_path, fake_blender, run=run, max_concurrent=1, queue_limit=2) as client:
        idle = scrape_metrics(client)
        assert (
            idle[f'farmhand_node_info{{blender="{fake_blender.version}",version="{__version__}"}}']
            == 1
        )
        assert jobs_by_status(idle) == {
            "queued": 0,
            "rendering": 0,
            "completed": 0,
            "failed": 0,
            "canceled": 0,
        }
        assert (idle["farmhand_node_queue_length"], idle["farmhand_node_queue_limit"]) == (0, 2)
        assert idle["farmhand_node_renders_running"] == 0
        assert idle["farmhand_node_max_concurrent"] == 1

        ids = [submit(client, frame) for frame in (1, 2, 3)]
        wait_until(lambda: gate.running == ids[:1])
        busy = scrape_metrics(client)
        assert jobs_by_status(busy) == {
            "queued": 2,
            "rendering": 1,
            "completed": 0,
            "failed": 0,
            "canceled": 0,
        }
        assert (busy["farmhand_node_queue_length"], busy["farmhand_node_renders_running"]) == (2, 1)

        gate.release.set()
        wait_until(lambda: client.get(f"/job/{ids[2]}").status_code == 200)
        done = scrape_metrics(client)
        assert jobs_by_status(done) == {
            "queued": 0,
            "rendering": 0,
            "completed": 2,
            "failed": 1,
            "canceled": 0,
        }
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


@contextmanager
def node_process(
    tmp_path: Path, blend: Path
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """The command itself as a process, rendering `blend` with Blender 5 (bpy) into
    `tmp_path/out`, once it listens: the process and a client of it. Its output goes
    to `tmp_path/node.log`; it is stopped at the end."""
    port = free_port()
    args = ["--port", str(port), "--host", "127.0.0.1", "--blend", str(blend),
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
            yield process, client
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.mark.blender
def test_real_node_process_renders_with_blender(
    tmp_path: Path, blender_module: BlenderInstall, animated_blend: Path
) -> None:
    """The command itself, as a process, with Blender 5 (bpy): the tutorial's happy path."""
    with node_process(tmp_path, animated_blend) as (_, client):
        final = orchestrate(client, 1, 3)
    assert (final.status_code, final.text) == (200, "Job completed")
    for frame in (1, 2, 3):
        path = tmp_path / "out" / f"blender-render_{frame:04d}.png"
        assert verify_image(path, *SCENE_SIZE).format == "PNG"
    visible = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name[0] != ".")
    assert visible == [f"blender-render_{frame:04d}.png" for frame in (1, 2, 3)], "no previews"
