"""`farmhand submit/jobs/cancel` as a person sees them: messages and exit codes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from farmhand.cli import control_cmd, jobs_cmd
from farmhand.cli.app import app
from farmhand.cli.config import ConfigError, resolve
from farmhand.client import FarmhandClient, submission
from farmhand.client.packing import PackedProject
from farmhand.client.retry import RetryPolicy
from farmhand.shared.schemas import JobDetail

runner = CliRunner()


HEALTH = {"status": "ok", "version": "0", "database": "sqlite"}


def _use_manager(monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
    """Every request goes to `handler`, but `GET /healthz` (a submit's first question,
    whether the manager answers at all): answered "ok"."""

    def up(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json=HEALTH)
        response: httpx.Response = handler(request)
        return response

    transport = httpx.MockTransport(up)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )


def test_submit_refuses_missing_file_and_non_blend(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", str(tmp_path / "nope.blend"), "--token", "t"])
    assert result.exit_code == 1
    assert "no such file" in result.output
    other = tmp_path / "scene.txt"
    other.write_text("x")
    result = runner.invoke(app, ["submit", str(other), "--token", "t"])
    assert result.exit_code == 1 and "not a .blend" in result.output


def test_submit_refuses_bad_frame_range_before_uploading(tmp_path: Path) -> None:
    blend = tmp_path / "a.blend"
    blend.write_bytes(b"x")
    result = runner.invoke(app, ["submit", str(blend), "--frames", "10-1", "--token", "t"])
    assert result.exit_code == 1
    assert "--frames" in result.output


def _pack_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Packing (real .blend files, tested with Blender elsewhere) yields just the file."""

    def alone(blend: Path, project: Path | None = None, frames: object = None) -> PackedProject:
        return PackedProject(blend.name, {blend.name: blend}, [], blend.parent, tmp_path / "w")

    monkeypatch.setattr(submission, "pack", alone)


def test_submit_refuses_a_file_that_is_not_really_a_blend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = tmp_path / "fake.blend"
    blend.write_bytes(b"not a blend at all")
    _use_manager(monkeypatch, lambda r: pytest.fail(f"asked {r.url.path}: nothing is sent"))
    result = runner.invoke(app, ["submit", str(blend), "--token", "t"])
    assert result.exit_code == 1
    assert "cannot read" in result.output and "Traceback" not in result.output


def test_submit_prints_job_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"blend")
    _pack_alone(monkeypatch, tmp_path)
    created: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        created.append(json.loads(request.content))
        return httpx.Response(202, json={"id": 42, "status": "queued", "location": "/api/jobs/42"})

    _use_manager(monkeypatch, handler)
    result = runner.invoke(
        app, ["submit", str(blend), "--frames", "1-20x3", "--chunk", "5", "--format", "png"]
    )
    assert result.exit_code == 0, result.output
    assert "job 42 queued" in result.output
    assert created[0]["frame_end"] == 20 and created[0]["output_format"] == "PNG"
    assert created[0]["frame_step"] == 3, "every third frame, as asked"


def test_manager_error_is_one_red_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_manager(monkeypatch, lambda r: httpx.Response(404, json={"detail": "job 9 not found"}))
    result = runner.invoke(app, ["cancel", "9"])
    assert result.exit_code == 1
    assert "job 9 not found" in result.output
    assert "Traceback" not in result.output


def test_jobs_table_lists_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    job = {
        "id": 3, "name": "shot", "owner": "ann", "status": "active", "priority": 50,
        "progress": 25.0, "frames_done": 1, "frames_total": 4,
        "created_at": "2024-05-01T10:00:00Z", "started_at": None, "finished_at": None,
    }  # fmt: skip
    _use_manager(monkeypatch, lambda r: httpx.Response(200, json=[job]))
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 0, result.output
    assert "shot" in result.output and "1/4" in result.output


def test_config_order_flag_env_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('url = "http://file:1"\ntoken = "filetok"\n')
    env = {"FARMHAND_CONFIG": str(cfg)}
    assert resolve(None, None, env).token == "filetok"
    assert resolve(None, None, env).url == "http://file:1"
    env["FARMHAND_TOKEN"] = "envtok"
    assert resolve(None, None, env).token == "envtok"
    assert resolve("http://flag:2/", "flagtok", env).url == "http://flag:2"
    with pytest.raises(ConfigError, match="no API token"):
        resolve(None, None, {"FARMHAND_CONFIG": str(tmp_path / "none.toml")})
    assert (
        resolve(None, "t", {"FARMHAND_CONFIG": str(tmp_path / "x")}).url == "http://localhost:8080"
    )


def test_an_error_stays_on_one_line_however_long(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120) / "shot.blend"
    result = runner.invoke(app, ["submit", str(deep), "--token", "t"])
    assert result.exit_code == 1
    assert f"{deep}: no such file" in result.output.splitlines()[0]


def _job(status: str, done: int, reason: str | None = None) -> dict[str, object]:
    return {
        "id": 3,
        "name": "shot",
        "owner": "admin",
        "status": status,
        "priority": 50,
        "progress": 100.0 * done / 6,
        "frames_done": done,
        "frames_total": 6,
        "created_at": "2026-11-23T10:00:00Z",
        "started_at": None,
        "finished_at": None,
        "status_reason": reason,
        "settings": {"frame_start": 1, "frame_end": 6},
        "main_file": "shot.blend",
        "tasks": [],
        "elapsed_seconds": None,
        "eta_seconds": None,
    }


def test_following_a_job_without_a_terminal_writes_lines_a_log_can_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redirected to a file or a CI log, a progress bar shows nothing until the end: a
    job waiting all night for a worker that fits would look hung. Plain lines instead:
    one per change of status or reason, and frames at most every PLAIN_PROGRESS_EVERY s."""
    waiting = "waiting: the job needs Blender 5.0 or newer; the online workers have 3.4.1"
    states = [
        _job("queued", 0, waiting),
        _job("queued", 0, waiting),  # nothing new: no line
        _job("active", 1),
        _job("active", 2),  # 10 s later: too soon for a frames-only line
        _job("active", 3),  # 40 s after the last line: a line
        _job("completed", 6),
    ]
    polls = iter(states)
    now = iter([0.0, 5.0, 10.0, 20.0, 50.0, 60.0])
    monkeypatch.setattr(
        jobs_cmd, "err", Console(file=io.StringIO(), force_terminal=False, width=200)
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(polls))

    client = FarmhandClient("http://m.test", "t", transport=httpx.MockTransport(handler))
    job = jobs_cmd.follow(client, 3, sleep=lambda _: None, clock=lambda: next(now))
    assert job.status == "completed"
    lines = jobs_cmd.err.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert [line.split(" · ")[0] for line in lines] == [
        "job 3 queued 0/6 frames",
        "job 3 active 1/6 frames",
        "job 3 active 3/6 frames",
        "job 3 completed 6/6 frames",
    ]
    assert lines[0].endswith(waiting), "the reason it waits is said, whole"


def test_submit_wait_names_its_download_by_the_jobs_template(tmp_path: Path) -> None:
    """`submit --wait -o` downloads as `farmhand download` does: by the job's template."""
    done = {**_job("completed", 6), "settings": {"output_template": "{job}/f{frame:03d}.{ext}"}}
    files = [{"id": 7, "kind": "output", "path": "frames/0001.png", "size": 3,
              "sha256": hashlib.sha256(b"png").hexdigest(), "frame": 1}]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/3/files":
            return httpx.Response(200, json=files)
        if request.url.path == "/api/jobs/3":
            return httpx.Response(200, json=done)
        return httpx.Response(200, content=b"png")

    client = FarmhandClient("http://m.test", "t", transport=httpx.MockTransport(handler))
    jobs_cmd.finish(client, JobDetail.model_validate(done), tmp_path)
    assert (tmp_path / "shot" / "f001.png").read_bytes() == b"png"
    assert not (tmp_path / "frames").exists()


def _refused(request: httpx.Request) -> httpx.Response:
    """What a manager that is down does: nothing listens on its port."""
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_following_a_job_rides_out_a_manager_that_stops_answering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One unanswered poll ended the wait (`error: cannot reach the manager`, exit 1)
    though the job rendered on. Now the bar says the manager is unreachable and being
    retried, and the wait goes on when it answers again."""
    answers = iter(
        [lambda r: httpx.Response(200, json=_job("active", 2))]
        + [_refused] * 3
        + [lambda r: httpx.Response(200, json=_job("completed", 6))]
    )
    screen = io.StringIO()
    monkeypatch.setattr(jobs_cmd, "err", Console(file=screen, force_terminal=True, width=200))
    pauses: list[float] = []
    client = FarmhandClient(
        "http://m.test", "t", transport=httpx.MockTransport(lambda r: next(answers)(r))
    )
    job = jobs_cmd.follow(client, 3, sleep=pauses.append, retry_for=600)
    assert job.status == "completed"
    shown = screen.getvalue()
    assert "job 3 active · manager unreachable for 0s, retrying for up to 10m00s" in shown
    assert pauses == [1.0, 0.5, 1.0, 2.0], "the usual poll, then backoff"


def test_a_wait_gives_up_after_retry_for_and_says_the_job_may_still_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"blend")
    _pack_alone(monkeypatch, tmp_path)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        if request.method == "POST":
            return httpx.Response(202, json={"id": 3, "status": "queued", "location": "/x"})
        return _refused(request)

    _use_manager(monkeypatch, handler)
    out = tmp_path / "my out"
    result = runner.invoke(
        app, ["submit", str(blend), "--wait", "-o", str(out), "--retry-for", "1"]
    )
    assert result.exit_code == 1, result.output
    assert (
        "error: gave up waiting for job 3 after 1s of retries: cannot reach the manager at "
        "http://m.test: [Errno 111] Connection refused"
    ) in result.output
    assert (
        "job 3 may still be rendering on the farm: farmhand job 3 to follow it, farmhand "
        f"download 3 -o '{out}' to fetch its outputs once it completes, farmhand cancel 3 "
        "to stop it"
    ) in result.output
    assert "Traceback" not in result.output


def test_the_download_after_a_wait_rides_out_a_manager_restart_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _job("completed", 6)
    files = [{"id": 7, "kind": "output", "path": "frames/0001.png", "size": 3,
              "sha256": hashlib.sha256(b"png").hexdigest(), "frame": 1}]  # fmt: skip
    down = iter([True, True])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/3/files":
            if next(down, False):
                return _refused(request)
            return httpx.Response(200, json=files)
        return httpx.Response(200, content=b"png")

    monkeypatch.setattr(jobs_cmd, "retry_policy", lambda s: RetryPolicy(s, first_delay=0.01))
    monkeypatch.setattr(jobs_cmd, "err", Console(file=io.StringIO(), width=200))
    client = FarmhandClient("http://m.test", "t", transport=httpx.MockTransport(handler))
    jobs_cmd.finish(client, JobDetail.model_validate(done), tmp_path, retry_for=600)
    assert (tmp_path / "frames" / "0001.png").read_bytes() == b"png"
    said = jobs_cmd.err.file.getvalue()  # type: ignore[attr-defined]
    assert said.count("retrying for up to 10m00s") == 1, said


def test_a_failed_job_without_a_reason_of_its_own_is_said_with_its_tasks_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job stored before jobs kept a reason: `follow` polled it without its tasks, so
    the end asks for the tasks that did not complete, not 'no reason given'."""
    failed = {**_job("failed", 2), "task_counts": {"completed": 2, "failed": 1, "canceled": 3}}
    task = {"id": 9, "index": 2, "type": "render", "status": "failed", "frames": [3],
            "frames_done": 0, "attempts": 3, "worker": "w1", "started_at": None,
            "finished_at": None, "last_error": "Blender crashed (signal 11)"}  # fmt: skip
    asked: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, json=[task], headers={"X-Total-Count": "1"})

    monkeypatch.setattr(jobs_cmd, "err", Console(file=io.StringIO(), width=200))
    client = FarmhandClient("http://m.test", "t", transport=httpx.MockTransport(handler))
    with pytest.raises(jobs_cmd.Failed):
        jobs_cmd.finish(client, JobDetail.model_validate(failed), Path("out"))
    said = jobs_cmd.err.file.getvalue()  # type: ignore[attr-defined]
    assert "error: job 3 failed: Blender crashed (signal 11)" in said, said
    assert [url.path for url in asked] == ["/api/jobs/3/tasks"]
    assert asked[0].params.get_list("status") == ["failed", "canceled"]


def test_submit_help_says_which_format_frames_come_in_without_format() -> None:
    """It said 'as saved', while a scene saved as Targa or a movie renders PNG frames."""
    result = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "(default: as saved when the farm keeps that format, else PNG)" in " ".join(
        result.output.split()
    )


def test_requeue_against_a_manager_that_does_not_count_says_the_job_not_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A manager from before `requeued` answers the job alone: the CLI says the job's
    state, as it did then, not "nothing to requeue" for a requeue that happened."""
    summary = {
        "id": 7, "name": "shot010", "owner": "admin", "status": "queued", "priority": 50,
        "progress": 0.0, "frames_done": 0, "frames_total": 3,
        "created_at": "2026-11-25T10:00:00Z", "started_at": None, "finished_at": None,
    }  # fmt: skip
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=summary))
    monkeypatch.setattr(
        control_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )
    result = runner.invoke(app, ["requeue", "7", "--failed-only", "--token", "t"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "job 7 'shot010': queued", result.output
