"""`farmhand submit --json-events` and `farmhand job(s) --json`: what programs read.

The Blender add-on parses these lines; a stray Rich line, a missing outcome or a
half-written object would leave its panel waiting forever.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from farmhand.cli import jobs_cmd
from farmhand.cli.app import app
from farmhand.cli.json_events import JsonEvents
from farmhand.client import FarmhandClient, submission, transfer
from farmhand.client.packing import PackedProject

runner = CliRunner()
JOB = {
    "id": 7, "name": "shot", "owner": "ann", "status": "queued", "priority": 60,
    "progress": 0.0, "frames_done": 0, "frames_total": 3,
    "created_at": "2024-05-01T10:00:00Z", "started_at": None, "finished_at": None,
}  # fmt: skip


def use_manager(monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )


def pack_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Packing (real .blend files, tested with Blender elsewhere) yields just the file."""

    def alone(blend: Path, project: Path | None = None, frames: object = None) -> PackedProject:
        return PackedProject(blend.name, {blend.name: blend}, [], blend.parent, tmp_path / "w")

    monkeypatch.setattr(submission, "pack", alone)


def events_of(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line as a JSON object; fails on any line that is not one."""
    lines = stdout.splitlines()
    assert lines, "no events at all"
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) and "event" in event for event in parsed), stdout
    return parsed


HEALTH = {"status": "ok", "version": "0", "database": "sqlite"}


def a_manager(uploaded: list[str], created: list[dict[str, Any]]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json=HEALTH)
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": json.loads(request.content)["hashes"]})
        if request.method == "PUT" and request.url.path.startswith("/api/blobs/"):
            body = request.read()
            uploaded.append(hashlib.sha256(body).hexdigest())
            return httpx.Response(201, json={"sha256": uploaded[-1], "size": len(body)})
        created.append(json.loads(request.content))
        return httpx.Response(202, json={"id": 7, "status": "queued", "location": "/api/jobs/7"})

    return handler


def test_a_submit_is_json_lines_from_packing_to_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER" * 1000)
    pack_alone(monkeypatch, tmp_path)
    uploaded: list[str] = []
    created: list[dict[str, Any]] = []
    use_manager(monkeypatch, a_manager(uploaded, created))
    result = runner.invoke(
        app, ["submit", str(blend), "--json-events", "--frames", "1-3", "--priority", "60"]
    )
    assert result.exit_code == 0, result.output
    events = events_of(result.stdout)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "packing" and kinds[1] == "packed", kinds
    assert "hashing" in kinds and "upload" in kinds, kinds
    assert kinds[-1] == "submitted" and kinds.count("submitted") == 1, kinds
    last_upload = [event for event in events if event["event"] == "upload"][-1]
    assert last_upload["done"] == last_upload["total"] == 7000, last_upload
    assert last_upload["files_done"] == last_upload["files_total"] == 1, last_upload
    done = events[-1]
    assert done["job_id"] == 7 and done["status"] == "queued", done
    assert done["url"] == "http://m.test/api/jobs/7" and done["page"] == "http://m.test/jobs/7"
    assert done["files"] == 1 and done["uploaded_files"] == 1 and done["bytes_sent"] == 7000
    assert uploaded == [hashlib.sha256(blend.read_bytes()).hexdigest()]
    assert created[0]["priority"] == 60 and created[0]["frame_end"] == 3


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["--frames", "9-1"], 202, "--frames"),
        (["--wait"], 202, "does not combine with --wait"),
        ([], 401, "invalid API token"),
    ],
)
def test_a_refused_submit_ends_with_one_error_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], status: int, expected: str
) -> None:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER")
    pack_alone(monkeypatch, tmp_path)
    use_manager(monkeypatch, lambda r: httpx.Response(status, json={"detail": "invalid API token"}))
    result = runner.invoke(app, ["submit", str(blend), "--json-events", *args])
    assert result.exit_code == 1, result.output
    events = events_of(result.stdout)
    assert events[-1]["event"] == "error", events
    assert [event["event"] for event in events].count("error") == 1, events
    assert expected in events[-1]["message"], events[-1]
    assert "Traceback" not in result.output


def test_a_missing_blend_is_an_error_event_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["submit", str(tmp_path / "gone.blend"), "--json-events", "--token", "t"]
    )
    assert result.exit_code == 1
    assert events_of(result.stdout) == [
        {"event": "error", "message": f"{tmp_path / 'gone.blend'}: no such file"}
    ]


def test_progress_events_are_thinned_but_the_last_always_goes_out() -> None:
    out = io.StringIO()
    now = [0.0]
    events = JsonEvents(out, clock=lambda: now[0], interval=1.0)
    hooks = events.hooks()
    assert hooks.uploading is not None and hooks.advance is not None
    hooks.uploading(100, 2)
    for _ in range(8):
        hooks.advance(10, 0)  # all at the same instant: thinned away
    now[0] = 5.0
    hooks.advance(10, 0)  # a while later: goes out
    hooks.advance(10, 2)  # the end goes out at once, however soon after the last
    sent = events_of(out.getvalue())
    assert [(e["done"], e["total"]) for e in sent] == [(0, 100), (90, 100), (100, 100)], sent
    assert sent[-1]["files_done"] == 2


def test_job_and_jobs_print_the_managers_json(monkeypatch: pytest.MonkeyPatch) -> None:
    detail = {
        **JOB, "settings": {"name": "shot", "frame_end": 3}, "main_file": "shot.blend",
        "tasks": [], "elapsed_seconds": None, "eta_seconds": None,
    }  # fmt: skip
    use_manager(
        monkeypatch,
        lambda r: httpx.Response(200, json=[JOB] if r.url.path == "/api/jobs" else detail),
    )
    listed = runner.invoke(app, ["jobs", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [job["id"] for job in json.loads(listed.stdout)] == [7]
    one = runner.invoke(app, ["job", "7", "--json"])
    assert one.exit_code == 0, one.output
    shown = json.loads(one.stdout)
    assert shown["status"] == "queued" and shown["frames_total"] == 3, shown
    assert shown["settings"]["frame_end"] == 3 and shown["main_file"] == "shot.blend"


def test_a_retried_upload_keeps_stdout_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager answers 503 once: the client retries and logs it, on stderr, so the
    add-on, which parses every stdout line as an event, is not broken by a log line."""
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER" * 1000)
    pack_alone(monkeypatch, tmp_path)
    uploaded: list[str] = []
    created: list[dict[str, Any]] = []
    answer = a_manager(uploaded, created)
    refused: list[str] = []

    def busy_once(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and not refused:
            refused.append(request.url.path)
            return httpx.Response(503, json={"detail": "busy"})
        response: httpx.Response = answer(request)
        return response

    use_manager(monkeypatch, busy_once)
    result = runner.invoke(app, ["submit", str(blend), "--json-events", "--frames", "1-3"])
    assert result.exit_code == 0, result.output
    assert refused, "the first upload was refused and retried"
    events = events_of(result.stdout)  # every line is JSON
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "submitted", kinds
    # The file, read once for the refused request, is sent again whole: counted once.
    uploads = [(event["done"], event["total"]) for event in events if event["event"] == "upload"]
    assert all(done <= total for done, total in uploads) and uploads[-1] == (7000, 7000), uploads


def blend_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int = 7000) -> Path:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"B" * size)
    pack_alone(monkeypatch, tmp_path)
    return blend


def test_a_manager_that_does_not_answer_is_said_before_packing_and_its_return_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The add-on read the CLI's retry notice on stderr only after the CLI exited: an
    unreachable manager was "uploading 0%" for two minutes, after hashing the scene."""
    blend = blend_file(tmp_path, monkeypatch)
    answer = a_manager([], [])
    refused: list[str] = []

    def down_twice(request: httpx.Request) -> httpx.Response:
        if len(refused) < 2:
            refused.append(request.url.path)
            raise httpx.ConnectError("[Errno 111] Connection refused")
        response: httpx.Response = answer(request)
        return response

    use_manager(monkeypatch, down_twice)
    result = runner.invoke(app, ["submit", str(blend), "--json-events"])
    assert result.exit_code == 0, result.output
    events = events_of(result.stdout)
    kinds = [event["event"] for event in events]
    assert refused == ["/healthz", "/healthz"], "asked before anything was packed"
    assert kinds[:3] == ["retrying", "reconnected", "packing"], kinds
    assert events[0]["message"] == "the manager at http://m.test does not answer; retrying"
    assert "Connection refused" in events[0]["error"], events[0]
    assert kinds.count("retrying") == 1 and kinds[-1] == "submitted", kinds


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
            "the manager at http://m.test does not speak https (try http://m.test)",
        ),
        (
            "Request URL has an unsupported protocol 'ftp://'.",
            "the manager URL http://m.test cannot be used",
        ),
    ],
    ids=["https-to-http", "bad-url"],
)
def test_a_url_that_can_never_work_is_refused_at_once_before_packing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str, said: str
) -> None:
    """https:// to a plain-HTTP manager was retried for two minutes."""
    blend = blend_file(tmp_path, monkeypatch)
    asked: list[str] = []

    def never(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        raise httpx.ConnectError(failure)

    use_manager(monkeypatch, never)
    result = runner.invoke(app, ["submit", str(blend), "--json-events"])
    assert result.exit_code == 1, result.output
    events = events_of(result.stdout)
    assert asked == ["/healthz"], "asked once, not retried"
    assert [event["event"] for event in events] == ["error"], events
    assert events[0]["message"] == said, events[0]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:8080", "must start with http:// or https://"),
        ("render-manager:8080", "must start with http:// or https://"),
        ("ftp://m:1", "must start with http:// or https://"),
        ("https:///jobs", "names no host"),
    ],
)
def test_a_manager_url_without_http_is_refused_naming_the_setting(
    tmp_path: Path, url: str, problem: str
) -> None:
    """`127.0.0.1:8080` was retried for two minutes, as if the manager were down."""
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER")
    result = runner.invoke(
        app, ["submit", str(blend), "--json-events", "--url", url, "--token", "t"]
    )
    assert result.exit_code == 1, result.output
    events = events_of(result.stdout)
    assert [event["event"] for event in events] == ["error"], events
    message = events[0]["message"]
    assert f"the manager URL {url!r} (--url, FARMHAND_URL or url in the config file)" in message
    assert problem in message, message


def test_an_unknown_host_is_said_at_once_and_retried_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DNS failure may pass (a resolver's hiccup), a mistyped host name never does."""
    blend = blend_file(tmp_path, monkeypatch)
    monkeypatch.setattr(jobs_cmd, "DNS_RETRY_FOR", 1.0)
    asked: list[str] = []

    def unknown(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    use_manager(monkeypatch, unknown)
    result = runner.invoke(app, ["submit", str(blend), "--json-events"])
    assert result.exit_code == 1, result.output
    events = events_of(result.stdout)
    assert [event["event"] for event in events] == ["retrying", "error"], events
    assert events[0]["message"] == "the manager's host name m.test is not known (DNS); retrying"
    assert events[1]["message"] == "the manager's host name m.test is not known (DNS)"
    assert set(asked) == {"/healthz"} and len(asked) < 5, asked


def test_a_resumed_upload_counts_each_byte_once_and_says_the_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager is cut off mid-upload after all the file was read for sending, and
    keeps half: the upload resumes from there. Its progress went past 100% (the bytes
    re-sent counted twice) and the add-on's panel sat on one percentage meanwhile."""
    size = transfer.RESUMABLE_FROM + 1_000_000
    blend = blend_file(tmp_path, monkeypatch, size)
    sha = hashlib.sha256(blend.read_bytes()).hexdigest()
    kept = [0]
    created: list[dict[str, Any]] = []

    def status() -> dict[str, Any]:
        complete = kept[0] == size
        upload_id = "" if complete else "u1"
        return {
            "id": upload_id,
            "sha256": sha,
            "size": size,
            "offset": kept[0],
            "complete": complete,
        }

    def cut_off_once(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/healthz":
            return httpx.Response(200, json=HEALTH)
        if path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": [sha]})
        if path == "/api/uploads":
            return httpx.Response(201, json=status())
        if request.method == "PATCH":
            offset = int(request.headers["Upload-Offset"])
            if offset == 0:  # all of it was read; the manager stored half, then was gone
                kept[0] = size // 2
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            kept[0] = offset + len(request.content)
            return httpx.Response(200, json=status())
        created.append(json.loads(request.content))
        return httpx.Response(202, json={"id": 7, "status": "queued", "location": "/api/jobs/7"})

    use_manager(monkeypatch, cut_off_once)
    result = runner.invoke(app, ["submit", str(blend), "--json-events"])
    assert result.exit_code == 0, result.output
    events = events_of(result.stdout)
    uploads = [(event["done"], event["total"]) for event in events if event["event"] == "upload"]
    assert all(done <= total == size for done, total in uploads), uploads
    assert uploads[-1] == (size, size), uploads
    kinds = [event["event"] for event in events]
    assert "retrying" in kinds and "reconnected" in kinds, kinds
    assert kinds.index("upload") < kinds.index("retrying") < kinds.index("reconnected"), kinds
    assert kinds[-1] == "submitted" and events[-1]["bytes_sent"] == size + size // 2
    assert created and kept[0] == size
