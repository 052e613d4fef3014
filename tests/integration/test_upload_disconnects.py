"""An upload the client cuts off is a network drop, logged as one INFO line, not a bug.

A real manager, and raw sockets that announce a body, send part of it and close: a
user's blob and multipart job, and a runner's frame, preview and video. Each must leave
one `upload interrupted` line at INFO naming the route, who sent it (the user, or the
runner and its task) and the bytes that arrived, no ERROR line or traceback (operators
alert on those), and nothing stored. The multipart routes whose form FastAPI parses
before the route runs (a project zip, a runner's tile, extra file and video as
multipart) log the same line, without the sender (not known before the form is), and
answer the same `499`; blend-info and an input added to a job read their form
themselves, after the sender is known, and name them.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import Message

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes, submit_stand_in

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
"""The first box of an mp4: enough for the manager, which checks only the container."""
INTERRUPTED = "upload interrupted: the client went away"


@dataclass
class Setup:
    farm: LocalFarm
    api: httpx.Client
    admin: dict[str, str]
    runner: dict[str, str]
    job_id: int
    task_id: int
    frame: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A job of two frames and a video, and a runner holding its first render task."""
    with local_farm(tmp_path_factory.mktemp("disconnects")) as farm:
        farm.start_manager()
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        with httpx.Client(base_url=farm.url, timeout=30) as api:
            sha = hashlib.sha256(FAKE_BLEND).hexdigest()
            assert api.put(f"/api/blobs/{sha}", headers=admin, content=FAKE_BLEND).is_success
            created = api.post(
                "/api/jobs",
                headers=admin,
                json={"frame_start": 1, "frame_end": 2, "main_file": "a.blend",
                      "files": {"a.blend": sha}, "video": {"codec": "h264", "container": "mp4"}},
            )  # fmt: skip
            assert created.status_code == 202, created.text
            registered = api.post(
                "/api/runner/register", json={"token": farm.runner_token, "name": "w1"}
            )
            runner = {"Authorization": f"Bearer {registered.json()['secret']}"}
            api.post(
                "/api/runner/heartbeat",
                headers=runner,
                json={
                    "capabilities": {"task_types": ["render", "video"], "protocol": WORKER_PROTOCOL}
                },
            )
            task = api.get("/api/runner/tasks?wait=0", headers=runner).json()
            yield Setup(
                farm, api, admin, runner, created.json()["id"], task["task_id"], task["frames"][0]
            )


def cut_off(farm: LocalFarm, method: str, path: str, headers: dict[str, str], sent: bytes,
            declared: int) -> None:  # fmt: skip
    """Announce `declared` bytes of body, send `sent`, and close the connection."""
    head = [f"{method} {path} HTTP/1.1", "Host: farm", f"Content-Length: {declared}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((farm.host, farm.port), timeout=30) as sock:
        sock.sendall("\r\n".join([*head, "", ""]).encode() + sent)
        time.sleep(0.3)  # the bytes reach the manager before the close


def manager_log(farm: LocalFarm) -> str:
    assert farm.manager is not None
    return farm.manager.log_path.read_text(encoding="utf-8", errors="replace")


def interruption(farm: LocalFarm, since: int, path: str) -> tuple[str, str]:
    """The INFO line logged for the interrupted upload of `path` after offset `since` of
    the manager's log, and everything logged from there to it."""
    deadline = time.monotonic() + 30
    while True:
        logged = manager_log(farm)[since:]
        lines = [line for line in logged.splitlines() if INTERRUPTED in line and path in line]
        if lines:
            (line,) = lines
            return line, logged[: logged.index(line) + len(line)]
        assert time.monotonic() < deadline, f"no '{INTERRUPTED}' line for {path}:\n{logged}"
        time.sleep(0.1)


def fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def assert_logged_as_a_drop(
    setup: Setup, since: int, method: str, path: str, received: int, declared: int,
    **sender: object,
) -> None:  # fmt: skip
    line, logged = interruption(setup.farm, since, path)
    assert "[info" in line
    assert fields(line) == {
        "declared": str(declared),
        "method": method,
        "path": path,
        "process": "manager",
        "read": str(received),
        **{name: str(value) for name, value in sender.items()},
    }
    for alarm in ("Traceback", "[error", "ERROR", "unhandled error", "ClientDisconnect"):
        assert alarm not in logged, logged


def test_a_blob_cut_off_is_logged_once_and_not_stored(setup: Setup) -> None:
    sent = b"x" * 2000
    sha = hashlib.sha256(sent + b"y" * 3000).hexdigest()
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "PUT", f"/api/blobs/{sha}", setup.admin, sent, 5000)
    assert_logged_as_a_drop(setup, since, "PUT", f"/api/blobs/{sha}", 2000, 5000, user="admin")
    missing = setup.api.post("/api/blobs/missing", headers=setup.admin, json={"hashes": [sha]})
    assert missing.json() == {"missing": [sha]}


def job_outputs(setup: Setup) -> list[Any]:
    files = setup.api.get(f"/api/jobs/{setup.job_id}/files", headers=setup.admin).json()
    return [entry for entry in files if entry["kind"] != "input"]


@pytest.mark.parametrize("route", ["frames/{frame}.png", "frames/{frame}/preview/p.jpg"])
def test_a_runner_upload_cut_off_is_logged_once_and_not_stored(setup: Setup, route: str) -> None:
    path = f"/api/runner/tasks/{setup.task_id}/" + route.format(frame=setup.frame)
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "PUT", path, setup.runner, png_bytes()[:40], 1000)
    assert_logged_as_a_drop(setup, since, "PUT", path, 40, 1000, task=setup.task_id, worker=1)
    assert job_outputs(setup) == []


def test_a_multipart_job_cut_off_is_logged_once_and_creates_nothing(setup: Setup) -> None:
    part = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="file"; filename="s.blend"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    ) + FAKE_BLEND
    headers = {**setup.admin, "Content-Type": "multipart/form-data; boundary=b"}
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "POST", "/api/jobs", headers, part, 100_000)
    assert_logged_as_a_drop(setup, since, "POST", "/api/jobs", len(part), 100_000, user="admin")
    jobs = setup.api.get("/api/jobs", headers=setup.admin).json()
    assert [job["id"] for job in jobs] == [setup.job_id]


def test_a_video_cut_off_is_logged_once_and_not_stored(setup: Setup) -> None:
    """Last: it renders the job's frames so that the video task can be held."""
    api, runner = setup.api, setup.runner
    task: dict[str, Any] = {"task_id": setup.task_id, "frames": [setup.frame]}
    for _ in range(2):
        for frame in task["frames"]:
            stored = api.put(
                f"/api/runner/tasks/{task['task_id']}/frames/{frame}.png",
                headers=runner,
                content=png_bytes(),
            )
            assert stored.status_code == 201, stored.text
        done = api.post(
            f"/api/runner/tasks/{task['task_id']}/complete",
            headers=runner,
            json={"frames": task["frames"]},
        )
        assert done.status_code == 200, done.text
        claimed = api.get("/api/runner/tasks?wait=0", headers=runner)
        assert claimed.status_code == 200, claimed.text
        task = claimed.json()
    video = task
    assert video["type"] == "video", video
    path = f"/api/runner/tasks/{video['task_id']}/video"
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "PUT", path, runner, MP4_HEAD, 10_000)
    assert_logged_as_a_drop(
        setup, since, "PUT", path, len(MP4_HEAD), 10_000,
        job=setup.job_id, task=video["task_id"], worker=1,
    )  # fmt: skip
    assert not [entry for entry in job_outputs(setup) if entry["kind"] == "video"]


FORM_ROUTES = [
    "/api/projects",
    "/api/runner/files/{job}/tile",
    "/api/runner/files/{job}/extra",
    "/api/runner/files/{job}/video",
]
"""The multipart routes FastAPI parses the form of (`UploadFile`, `Form`)."""


def form_part(name: str = "s.blend") -> bytes:
    """The head of a multipart form's file part, and the first bytes of the file."""
    return (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" % name.encode()
    ) + FAKE_BLEND


@pytest.mark.parametrize("route", FORM_ROUTES)
def test_a_form_parsed_by_fastapi_cut_off_is_logged_once(setup: Setup, route: str) -> None:
    path = route.format(job=setup.job_id)
    headers = {**setup.admin, "Content-Type": "multipart/form-data; boundary=b"}
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "POST", path, headers, form_part(), 100_000)
    assert_logged_as_a_drop(setup, since, "POST", path, len(form_part()), 100_000)
    assert [entry["path"] for entry in inputs_of(setup)] == ["a.blend"]


def test_an_input_upload_cut_off_is_logged_once_with_its_sender(setup: Setup) -> None:
    """`POST /api/jobs/{id}/upload` reads its form itself (to refuse an upload over the
    quota, or to a job whose inputs are fixed, before it is received): its line names
    the user, the job keeps its inputs, and nothing of the file stays in the blob
    store's temporary area. A job of its own, paused: setup's has a task handed out,
    which fixes its inputs (a 409 before the body is read)."""
    created = setup.api.post(
        "/api/jobs",
        headers=setup.admin,
        json={"main_file": "a.blend", "files": {"a.blend": hashlib.sha256(FAKE_BLEND).hexdigest()}},
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    paused = setup.api.post(
        f"/api/jobs/{job_id}/actions", headers=setup.admin, json={"action": "pause"}
    )
    assert paused.status_code == 200, paused.text
    path = f"/api/jobs/{job_id}/upload"
    headers = {**setup.admin, "Content-Type": "multipart/form-data; boundary=b"}
    body = PATH_PART + form_part()
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "POST", path, headers, body, 100_000)
    assert_logged_as_a_drop(setup, since, "POST", path, len(body), 100_000, user="admin")
    files = setup.api.get(f"/api/jobs/{job_id}/files", headers=setup.admin).json()
    assert [entry["path"] for entry in files if entry["kind"] == "input"] == ["a.blend"]
    assert not list(setup.farm.data_dir.glob("**/tmp/upload-*"))


PATH_PART = b'--b\r\nContent-Disposition: form-data; name="path"\r\n\r\nextra.blend\r\n'
"""The `path` field of an input's form, sent before its file as clients send it."""


def test_a_blend_info_upload_cut_off_is_logged_once_with_its_sender(setup: Setup) -> None:
    """`/api/blend-info` reads its form itself (to refuse an upload over the quota before
    it is received), so its line names the user too, and nothing of the file stays in
    the blob store's temporary area."""
    headers = {**setup.admin, "Content-Type": "multipart/form-data; boundary=b"}
    since = len(manager_log(setup.farm))
    cut_off(setup.farm, "POST", "/api/blend-info", headers, form_part(), 100_000)
    assert_logged_as_a_drop(
        setup, since, "POST", "/api/blend-info", len(form_part()), 100_000, user="admin"
    )
    assert not list(setup.farm.data_dir.glob("**/tmp/upload-*"))


def inputs_of(setup: Setup) -> list[Any]:
    files = setup.api.get(f"/api/jobs/{setup.job_id}/files", headers=setup.admin).json()
    return [entry for entry in files if entry["kind"] == "input"]


@pytest.mark.parametrize("route", ["/api/blobs/{sha}", "/api/jobs/{job}/upload", *FORM_ROUTES])
def test_every_upload_cut_off_is_answered_499(farm: Farm, route: str) -> None:
    """What the manager answers (to nobody) is what its records show: the same status
    for every interrupted upload, whoever parses it. Called in the app's own event loop,
    with a client that sends part of the body and is gone. (An input goes to a job that
    exists and takes it: else the 404 comes before the body is read.)"""
    sha = hashlib.sha256(b"never sent whole").hexdigest()
    job = submit_stand_in(farm.client, farm.admin) if route.startswith("/api/jobs/") else 1
    path = route.format(job=job, sha=sha)
    raw = "/api/blobs/" in route
    body = FAKE_BLEND if raw else form_part()
    kind = b"application/octet-stream" if raw else b"multipart/form-data; boundary=b"
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "PUT" if raw else "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"farm"), (b"content-type", kind), (b"content-length", b"100000"),
            (b"authorization", f"Bearer {farm.admin_token}".encode()),
        ],
    }  # fmt: skip
    sent: list[Message] = []

    async def call() -> None:
        parts = [body]

        async def receive() -> Message:
            if parts:
                return {"type": "http.request", "body": parts.pop(), "more_body": True}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        await farm.client.app(scope, receive, send)

    assert farm.client.portal is not None
    farm.client.portal.call(call)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 499, sent


def test_nothing_was_logged_as_an_error(setup: Setup) -> None:
    """Over the whole run, cut-offs included (module order: this runs last)."""
    logged = manager_log(setup.farm)
    assert "Traceback" not in logged and "[error" not in logged, logged
