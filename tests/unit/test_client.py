"""The HTTP client against a fake manager (`httpx.MockTransport`)."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from farmhand.client import (
    FarmhandClient,
    FarmhandError,
    ManagerUnreachable,
    RunnerClient,
    parse_retry_after,
    transfer,
)
from farmhand.client.client import attachment_name
from farmhand.shared.schemas import JobSettings, TaskProgress, WorkerCapabilities

BASE = "http://manager.test"


def _client(handler: httpx.MockTransport | None = None) -> FarmhandClient:
    return FarmhandClient(BASE, "tok", transport=handler)


def _job_detail(job_id: int = 7, status: str = "active") -> dict[str, object]:
    return {
        "id": job_id,
        "name": "scene",
        "owner": "alice",
        "status": status,
        "priority": 50,
        "progress": 50.0,
        "frames_done": 1,
        "frames_total": 2,
        "created_at": "2024-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "settings": {"frame_start": 1, "frame_end": 2},
        "main_file": "scene.blend",
        "tasks": [],
        "elapsed_seconds": None,
        "eta_seconds": None,
    }


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_error_status_becomes_farmhand_error_with_detail(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": "no such job"})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(FarmhandError) as info:
        client.get_job(3)
    assert info.value.status_code == status
    assert info.value.detail == "no such job"
    assert str(info.value) == f"no such job (HTTP {status})"


def test_validation_error_list_is_one_readable_line() -> None:
    body = {"detail": [{"loc": ["body", "frame_end"], "msg": "too small", "type": "x"}]}
    transport = httpx.MockTransport(lambda r: httpx.Response(422, json=body))
    with _client(transport) as client, pytest.raises(FarmhandError) as info:
        client.list_jobs()
    assert info.value.detail == "frame_end: too small"


def test_a_web_page_instead_of_the_api_is_one_line_naming_the_url() -> None:
    """Another server (or a proxy's error page) at the manager's URL: its HTML would fill
    the terminal, and the add-on's one-line report."""
    page = "<!DOCTYPE HTML>\n<html lang='en'>\n<head><title>Error 501</title></head>" + "x" * 900
    transport = httpx.MockTransport(
        lambda r: httpx.Response(501, text=page, headers={"content-type": "text/html"})
    )
    with _client(transport) as client, pytest.raises(FarmhandError) as info:
        client.list_jobs()
    assert "answered with a web page, not farmhand's API" in info.value.detail
    assert "<" not in info.value.detail and "\n" not in info.value.detail
    assert info.value.status_code == 501


def test_plain_text_errors_keep_their_first_line() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad gateway\nupstream x"))
    with _client(transport) as client, pytest.raises(FarmhandError) as info:
        client.list_jobs()
    assert info.value.detail == "Bad gateway"


def test_connection_error_is_manager_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(ManagerUnreachable):
        client.list_jobs()


def test_token_is_sent_as_bearer() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=[])

    with _client(httpx.MockTransport(handler)) as client:
        assert client.list_jobs() == []
    assert seen == ["Bearer tok"]


def test_poll_job_reads_retry_after() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, json=_job_detail(), headers={"Retry-After": "2"})
    )
    with _client(transport) as client:
        poll = client.poll_job(7)
    assert poll.job.id == 7
    assert poll.retry_after == 2.0


def test_parse_retry_after_handles_garbage_and_dates() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_submit_blend_uploads_only_missing_and_streams_file(tmp_path: Path) -> None:
    blend = tmp_path / "shot 1.blend"
    payload = b"BLENDER" + bytes(range(256)) * 9000  # > 2 chunks
    blend.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    uploaded: list[bytes] = []
    created: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/blobs/missing":
            assert json.loads(request.content) == {"hashes": [sha]}
            return httpx.Response(200, json={"missing": [sha]})
        if request.method == "PUT":
            assert request.url.path == f"/api/blobs/{sha}"
            assert request.headers["Content-Length"] == str(len(payload))
            uploaded.append(request.read())
            return httpx.Response(201, json={"sha256": sha, "size": len(payload)})
        if request.url.path == "/api/jobs":
            created.append(json.loads(request.content))
            return httpx.Response(
                202,
                json={"id": 9, "status": "queued", "location": "/api/jobs/9"},
                headers={"Location": "/api/jobs/9", "Retry-After": "1"},
            )
        return httpx.Response(404, json={"detail": "nope"})

    progress: list[tuple[int, int]] = []
    with _client(httpx.MockTransport(handler)) as client:
        accepted = client.submit_blend(
            blend,
            JobSettings(frame_start=1, frame_end=10, chunk_size=5),
            lambda d, t: progress.append((d, t)),
        )
    assert accepted.id == 9
    assert uploaded == [payload]
    assert created[0]["files"] == {"shot 1.blend": sha}
    assert created[0]["main_file"] == "shot 1.blend"
    assert created[0]["name"] == "shot 1"
    assert created[0]["chunk_size"] == 5
    assert progress[-1] == (len(payload), len(payload))
    assert len(progress) > 1


def test_submit_blend_skips_upload_when_manager_has_blob(tmp_path: Path) -> None:
    blend = tmp_path / "a.blend"
    blend.write_bytes(b"x")
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        return httpx.Response(202, json={"id": 1, "status": "queued", "location": "/api/jobs/1"})

    with _client(httpx.MockTransport(handler)) as client:
        client.submit_blend(blend, JobSettings())
    assert "PUT" not in methods


def test_download_outputs_writes_frames_and_refuses_escaping_paths(tmp_path: Path) -> None:
    files = [
        {"id": 1, "kind": "input", "path": "a.blend", "size": 1, "sha256": "0" * 64},
        {
            "id": 2,
            "kind": "output",
            "path": "frames/0001.png",
            "size": 3,
            "sha256": hashlib.sha256(b"F2!").hexdigest(),
        },
        {
            "id": 3,
            "kind": "output",
            "path": "frames/0002.png",
            "size": 3,
            "sha256": hashlib.sha256(b"F3!").hexdigest(),
        },
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/4/files":
            return httpx.Response(200, json=files)
        file_id = request.url.path.split("/")[-2]
        return httpx.Response(200, content=f"F{file_id}!".encode())

    with _client(httpx.MockTransport(handler)) as client:
        written = client.download_outputs(4, tmp_path / "out")
    assert sorted(p.name for p in written) == ["0001.png", "0002.png"]
    assert (tmp_path / "out/frames/0001.png").read_bytes() == b"F2!"
    assert not list((tmp_path / "out").rglob("*.part"))
    assert not (tmp_path / "out/a.blend").exists()

    files.append({"id": 5, "kind": "output", "path": "../evil", "size": 1, "sha256": "3" * 64})
    with _client(httpx.MockTransport(handler)) as client, pytest.raises(FarmhandError):
        client.download_outputs(4, tmp_path / "out2")
    assert not (tmp_path / "evil").exists()


def test_failed_download_leaves_no_file(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, json={"detail": "gone"}))
    with _client(transport) as client, pytest.raises(FarmhandError, match="gone"):
        client.download_file(1, 2, tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- runner API


def test_register_installs_secret_for_later_calls() -> None:
    auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("Authorization"))
        if request.url.path == "/api/runner/register":
            body = json.loads(request.content)
            assert body["token"] == "regtok"
            assert body["name"] == "w1"
            return httpx.Response(201, json={"worker_id": 3, "name": "w1", "secret": "s3cr3t"})
        return httpx.Response(200, json={"status": "idle", "abort_task_ids": []})

    with RunnerClient(BASE, transport=httpx.MockTransport(handler)) as runner:
        registered = runner.register("regtok", "w1", WorkerCapabilities(cores=4))
        reply = runner.heartbeat(current_task_id=None)
    assert registered.worker_id == 3
    assert reply.status == "idle"
    assert auth == [None, "Bearer s3cr3t"]


def test_claim_204_is_none_and_timeout_exceeds_wait() -> None:
    timeouts: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["wait"] == "25.0"
        timeouts.append(request.extensions["timeout"]["read"])
        return httpx.Response(204)

    with RunnerClient(BASE, "s", transport=httpx.MockTransport(handler)) as runner:
        assert runner.claim(wait=25.0) is None
    assert isinstance(timeouts[0], float) and timeouts[0] > 25.0


def test_claim_parses_assignment() -> None:
    assignment = {
        "task_id": 5,
        "job_id": 2,
        "job_name": "j",
        "type": "render",
        "frames": [1, 2],
        "main_file": "a.blend",
        "files": [{"path": "a.blend", "sha256": "a" * 64, "size": 10}],
        "output_format": "PNG",
        "resolution_percentage": None,
        "samples": 4,
        "attempt": 1,
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=assignment))
    with RunnerClient(BASE, "s", transport=transport) as runner:
        task = runner.claim(1)
    assert task is not None and task.frames == [1, 2] and task.files[0].path == "a.blend"


def test_progress_complete_fail_release_bodies() -> None:
    bodies: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        action = request.url.path.rsplit("/", 1)[-1]
        bodies[action] = json.loads(request.content)
        if action == "progress":
            return httpx.Response(200, json={"keep_going": False})
        return httpx.Response(200, json={"task_status": "queued", "job_status": "active"})

    with RunnerClient(BASE, "s", transport=httpx.MockTransport(handler)) as runner:
        reply = runner.progress(5, TaskProgress(frames_done=1, frame=2, log_lines=["x"]))
        runner.complete(5, [1, 2])
        runner.fail(5, "Blender crashed", ["tail"])
        runner.release(5)
    assert reply.keep_going is False
    assert bodies["complete"] == {"frames": [1, 2], "log_lines": []}
    assert bodies["fail"] == {"reason": "Blender crashed", "log_lines": ["tail"]}
    assert bodies["release"] == {"reason": "worker shutting down"}


def test_upload_output_puts_the_frame_as_the_raw_body(tmp_path: Path) -> None:
    frame = tmp_path / "0001.PNG"
    frame.write_bytes(b"\x89PNG fake image")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(201, json={"id": 1, "frame": -1, "sha256": "b" * 64, "size": 15})

    with RunnerClient(BASE, "s", transport=httpx.MockTransport(handler)) as runner:
        stored = runner.upload_output(2, 5, -1, frame)
    assert stored.frame == -1
    (request,) = seen
    assert (request.method, request.url.path) == ("PUT", "/api/runner/tasks/5/frames/-1.png")
    assert request.content == b"\x89PNG fake image"
    assert request.headers["content-length"] == "15"


def test_download_input_quotes_path(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path == b"/api/runner/files/2/tex/my%20wood.png"
        return httpx.Response(200, content=b"img")

    with RunnerClient(BASE, "s", transport=httpx.MockTransport(handler)) as runner:
        dest = runner.download_input(2, "tex/my wood.png", tmp_path / "x")
    assert dest.read_bytes() == b"img"


def test_sign_off_accepts_204() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(204))
    with RunnerClient(BASE, "s", transport=transport) as runner:
        runner.sign_off()


class CtrlC(Exception):
    """Stands for KeyboardInterrupt, raised by a real SIGINT sent to the main thread."""


def test_ctrl_c_stops_an_upload_blocked_on_a_manager_that_stopped_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manager that stops reading (`kill -STOP`, a dead link) leaves the upload thread
    blocked in a write with a 300 s timeout; Ctrl-C then waited for it (the QA's 30 s
    until the manager was continued). Now the interrupt ends `upload` at once, and the
    blocked thread fails and ends too (a process waits for it before exiting)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (64 * 1024 * 1024))
    entries = transfer.hash_files({"big.bin": big})
    monkeypatch.setattr(transfer, "missing", lambda client, hashes: set(hashes))
    sent: list[int] = []
    pressed: list[float] = []

    def ctrl_c(signum: int, frame: object) -> None:
        raise CtrlC

    def press_ctrl_c_once_stalled() -> None:
        while True:  # bytes stop moving: the thread is blocked writing
            before = sum(sent)
            time.sleep(0.3)
            if 0 < before == sum(sent):
                break
        pressed.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, ctrl_c)
    port = server.getsockname()[1]
    client = FarmhandClient(f"http://127.0.0.1:{port}", "tok")
    uploader = transfer.Uploader(
        client,
        threads=1,
        advance=lambda size, files: sent.append(size),
        resumable_from=1 << 40,  # one PUT, whose body the server stops reading
    )
    presser = threading.Thread(target=press_ctrl_c_once_stalled, daemon=True)
    try:
        presser.start()
        with pytest.raises(CtrlC):
            uploader.upload(entries)
        assert time.monotonic() - pressed[0] < 2, "upload() waited for the blocked thread"
        while any(t.name.startswith("upload") for t in threading.enumerate()):
            assert time.monotonic() - pressed[0] < 5, "the blocked upload thread lives on"
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
        client.close()
        server.close()
        for conn in accepted:
            conn.close()
    assert 0 < sum(sent) < big.stat().st_size


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ("attachment; filename=\"job-10-vid _.zip\"; filename*=UTF-8''job-10-vid%20%E3%82%B8"
         "%E3%83%A7%E3%83%96.zip", "job-10-vid ジョブ.zip"),
        ("attachment; filename*=utf-8'ja'%E6%97%A5.zip; filename=\"x.zip\"", "日.zip"),
        ("attachment; filename*=ISO-8859-1''caf%E9.zip", "café.zip"),
        ('attachment; filename="a \\"quoted\\" name; with a semicolon.zip"',
         'a "quoted" name; with a semicolon.zip'),
        ("attachment; filename=plain.zip", "plain.zip"),
        ("attachment; filename*=UTF-8''%FF.zip; filename=\"fallback.zip\"", "fallback.zip"),
        ("attachment; FILENAME*=UTF-8''upper.zip", "upper.zip"),
        ("attachment", None),
        ("", None),
    ],
)  # fmt: skip
def test_the_name_a_download_is_saved_under_is_read_as_rfc_6266_says(
    disposition: str, name: str | None
) -> None:
    assert attachment_name(disposition) == name


def _zip_manager(disposition: str | None) -> httpx.MockTransport:
    headers = {"Content-Disposition": disposition} if disposition else {}
    return httpx.MockTransport(lambda r: httpx.Response(200, content=b"PK", headers=headers))


def test_a_zip_is_saved_under_the_managers_name_for_it(tmp_path: Path) -> None:
    """It was saved as `job-10.zip` whatever the manager said (docs: `job-10-<name>.zip`)."""
    disposition = "attachment; filename=\"job-10-_.zip\"; filename*=UTF-8''job-10-%E3%82%B8.zip"
    with _client(_zip_manager(disposition)) as client:
        path = client.download_outputs_zip(10, tmp_path / "new", into=True)
        assert path == tmp_path / "new" / "job-10-ジ.zip" and path.read_bytes() == b"PK"
        given = client.download_outputs_zip(10, tmp_path / "mine.zip")
        assert given == tmp_path / "mine.zip", "a path given is kept"
    with _client(_zip_manager(None)) as client:
        assert client.download_inputs_zip(10, tmp_path, into=True).name == "job-10-inputs.zip"


@pytest.mark.parametrize(
    "evil",
    ["../../etc/x.zip", "a/b.zip", "..", "CON.zip", "c:x.zip", "a\\\\b.zip", "x%0A.zip"],
)
def test_a_zip_name_that_could_land_elsewhere_is_refused(tmp_path: Path, evil: str) -> None:
    with (
        _client(_zip_manager(f"attachment; filename*=UTF-8''{evil}")) as client,
        pytest.raises(FarmhandError, match="unsafe file name"),
    ):
        client.download_outputs_zip(10, tmp_path / "out", into=True)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_downloading_again_fetches_only_what_is_missing_or_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It fetched every file again and overwrote a file that differed without a word."""
    from farmhand.client import client as client_module

    content = {2: b"frame one", 3: b"frame two", 4: b"frame three"}
    files = [
        {"id": n, "kind": "output", "path": f"frames/000{n - 1}.png", "size": len(data),
         "sha256": hashlib.sha256(data).hexdigest(), "frame": n - 1}
        for n, data in content.items()
    ]  # fmt: skip
    fetched: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/4/files":
            return httpx.Response(200, json=files)
        file_id = int(request.url.path.split("/")[-2])
        fetched.append(file_id)
        return httpx.Response(200, content=content[file_id])

    out = tmp_path / "out"
    with _client(httpx.MockTransport(handler)) as client:
        first = client.fetch_outputs(4, out)
        assert (sorted(fetched), first.skipped, first.replaced) == ([2, 3, 4], [], [])
        frame1, frame2, frame3 = first.paths
        frame1.write_bytes(b"precious")  # another size
        frame2.write_bytes(b"frame owt")  # the same size, other bytes
        frame3.unlink()
        untouched = frame1.stat().st_mtime_ns
        hashed: list[Path] = []

        def sha256_file(path: Path) -> str:
            hashed.append(path)
            return hashlib.sha256(path.read_bytes()).hexdigest()

        monkeypatch.setattr(client_module, "sha256_file", sha256_file)
        fetched.clear()
        again = client.fetch_outputs(4, out)
        assert sorted(fetched) == [2, 3, 4]
        assert again.replaced == [frame1, frame2] and again.skipped == []
        assert hashed == [frame2], "a size that differs needs no hash"
        assert [p.read_bytes() for p in again.paths] == list(content.values())
        assert frame1.stat().st_mtime_ns != untouched

        fetched.clear()
        progress: list[tuple[int, int]] = []
        third = client.download_outputs(4, out, lambda d, t: progress.append((d, t)))
        assert fetched == [], "all there with the same bytes: nothing fetched"
        assert third == again.paths
        assert progress[-1] == (29, 29), "skipped files count as done"
