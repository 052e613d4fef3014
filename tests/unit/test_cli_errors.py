"""What `farmhand` says when the folder it would write cannot be used, and when Ctrl-C
stops a command that waits for the farm: one `error:` line and a meaningful exit code,
never a traceback, and nothing sent that is bound to fail. (The helpers here serve the
other `test_cli_*` files about refusals: tokens, ports, data dirs.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from farmhand.cli import jobs_cmd, worker_cmd
from farmhand.cli.app import app
from farmhand.client import FarmhandClient, submission
from farmhand.client.packing import PackedProject

runner = CliRunner()
Handler = Callable[[httpx.Request], httpx.Response]


def one_error_line(result: Result) -> str:
    """The only thing a refused command prints: `error: …` on one line, exit 1."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _manager(monkeypatch: pytest.MonkeyPatch, handler: Handler) -> list[str]:
    """Every request the CLI makes goes to `handler`; the returned list names them. But
    `GET /healthz`, a submit's first question (whether the manager answers at all), is
    answered "ok" here and not listed."""
    asked: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "0", "database": "x"})
        asked.append(f"{request.method} {request.url.path}")
        return handler(request)

    transport = httpx.MockTransport(record)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )
    return asked


def _no_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json={"detail": "not expected in this test"})


def _must_not_start(*args: object, **kwargs: object) -> int:
    raise AssertionError("started despite a refused option")


def _worker_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_cmd, "run_worker", _must_not_start)
    # Its logging would keep writing to the runner's stdout, closed after the test.
    monkeypatch.setattr(worker_cmd, "configure_logging", lambda *_, **__: None)


# -- 1. an output folder that cannot be written


def _unusable_folders(tmp_path: Path) -> dict[str, str]:
    """Output folders no download can use -> what the error line must say of each."""
    a_file = tmp_path / "frame.png"
    a_file.write_bytes(b"png")
    return {
        "/dev/null": "/dev/null: it is not a folder",
        "/dev/null/x": "/dev/null is not a folder",
        str(a_file): f"{a_file}: it is not a folder",
        str(a_file / "sub"): f"{a_file} is not a folder",
        "/proc/nope": "/proc/nope",  # no folder can be made in /proc, root or not
    }


@pytest.mark.parametrize(
    "mode", [[], ["--zip"], ["--frame", "1"], ["--video"], ["--inputs"]], ids=repr
)
def test_download_into_an_unusable_folder_is_one_line_before_asking_the_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: list[str]
) -> None:
    asked = _manager(monkeypatch, _no_answer)
    for folder, said in _unusable_folders(tmp_path).items():
        line = one_error_line(runner.invoke(app, ["download", "1", *mode, "-o", folder]))
        assert said in line, line
    assert asked == [], "nothing is downloaded that cannot be written"


def test_a_file_that_cannot_be_written_during_a_download_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is fine, but the frame's name (the job's template) runs into a file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "shot").write_text("a file where the template wants a folder")

    def frame(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"png", headers={"x-output-name": "shot/0001.png"})

    _manager(monkeypatch, frame)
    line = one_error_line(runner.invoke(app, ["download", "1", "--frame", "1", "-o", str(out)]))
    assert line.startswith(f"error: cannot write to the folder {out}"), line


def _pack_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A .blend that packs into just itself (packing real files is tested elsewhere)."""
    blend = tmp_path / "tiny.blend"
    blend.write_bytes(b"blend")

    def alone(blend: Path, project: Path | None = None, frames: object = None) -> PackedProject:
        return PackedProject(blend.name, {blend.name: blend}, [], blend.parent, tmp_path / "w")

    monkeypatch.setattr(submission, "pack", alone)
    return blend


def test_submit_wait_refuses_an_unusable_output_folder_before_submitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = _pack_alone(monkeypatch, tmp_path)
    asked = _manager(monkeypatch, _no_answer)
    for folder, said in _unusable_folders(tmp_path).items():
        args = ["submit", str(blend), "--frames", "1-3", "--wait", "--output", folder]
        line = one_error_line(runner.invoke(app, args))
        assert said in line, line
    assert asked == [], "no job is rendered whose frames cannot be downloaded"


def test_submit_wait_checks_the_default_output_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = _pack_alone(monkeypatch, tmp_path)
    asked = _manager(monkeypatch, _no_answer)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "farmhand-output").write_text("a file, not the folder")
    line = one_error_line(runner.invoke(app, ["submit", str(blend), "--wait"]))
    assert "farmhand-output: it is not a folder" in line, line
    assert asked == []


def test_checking_an_output_folder_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit refused after the check (here: the manager says no) made no folders."""
    blend = _pack_alone(monkeypatch, tmp_path)
    _manager(monkeypatch, lambda r: httpx.Response(403, json={"detail": "not yours"}))
    out = tmp_path / "renders" / "shot"
    result = runner.invoke(app, ["submit", str(blend), "--wait", "--output", str(out)])
    assert result.exit_code == 1 and "not yours" in result.output, result.output
    assert not (tmp_path / "renders").exists()


# -- 5. Ctrl-C while waiting for the farm


def test_ctrl_c_while_submit_waits_says_the_job_keeps_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blend = _pack_alone(monkeypatch, tmp_path)

    def farm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        if request.method == "POST":
            json.loads(request.content)
            return httpx.Response(
                202, json={"id": 12, "status": "queued", "location": "/api/jobs/12"}
            )
        raise KeyboardInterrupt  # the person presses Ctrl-C while it waits

    _manager(monkeypatch, farm)
    result = runner.invoke(app, ["submit", str(blend), "--wait", "-o", str(tmp_path / "out")])
    assert result.exit_code == 130, result.output
    assert (
        "job 12 keeps rendering on the farm: farmhand job 12 to follow it, farmhand "
        f"download 12 -o {tmp_path / 'out'} to fetch its outputs once it completes, "
        "farmhand cancel 12 to stop it"
    ) in result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output


@pytest.mark.parametrize("json_events", [False, True], ids=["people", "json-events"])
def test_ctrl_c_while_uploading_says_running_it_again_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_events: bool
) -> None:
    """It printed nothing but `^C`; a program reading `--json-events` got no last event."""
    blend = _pack_alone(monkeypatch, tmp_path)

    def farm(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt  # pressed while asking which files the farm lacks

    _manager(monkeypatch, farm)
    options = ["--json-events"] if json_events else []
    result = runner.invoke(app, ["submit", str(blend), *options])
    assert result.exit_code == 130, result.output
    said = (  # nothing was uploaded yet: nothing to discard, nothing to resume
        "stopped: the job was not submitted. Run the same command again to submit it: files "
        "already on the farm are not sent again"
    )
    assert said in result.stderr
    if json_events:
        last = json.loads(result.stdout.splitlines()[-1])
        assert last == {"event": "error", "message": said}
    assert "Traceback" not in result.output and "Aborted" not in result.output
