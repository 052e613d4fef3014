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
from farmhand.client import FarmhandClient, submission
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


def a_manager(uploaded: list[str], created: list[dict[str, Any]]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
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
    kinds = [event["event"] for event in events_of(result.stdout)]  # every line is JSON
    assert kinds[-1] == "submitted", kinds
