"""The add-on's zip and its bpy-free half (runner.py), without Blender.

Blender's Python has no farmhand and no third-party packages, and is 3.10 in Blender
3.4: the zip is checked for both. The runner is driven with a stand-in `farmhand`
script, for the outcomes a real manager rarely gives on cue (a crash, a cancel).
"""

from __future__ import annotations

import ast
import http.server
import os
import socket
import stat
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmhand.addon import runner
from farmhand.cli.app import app
from farmhand.client import submission
from farmhand.shared.images import KEPT_FORMATS, rendered_format
from farmhand.shared.schemas import VIDEO_CONTAINERS, VideoSettings

NEW_IN_311 = {"tomllib"}
"""Standard modules Blender 3.4's Python 3.10 does not have."""
ADDON_FILES = {"farmhand_addon/__init__.py", "farmhand_addon/runner.py", "farmhand_addon/ui.py"}


def test_addon_zip_holds_the_addon_and_nothing_else(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["addon", "zip", "-o", str(tmp_path / "out" / "a.zip")])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "out" / "a.zip") as archive:
        assert set(archive.namelist()) == ADDON_FILES
        sources = {name: archive.read(name).decode() for name in archive.namelist()}
    init = ast.parse(sources["farmhand_addon/__init__.py"])
    bl_info = next(
        ast.literal_eval(node.value)
        for node in init.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "bl_info"
    )
    assert bl_info["name"] == "farmhand" and bl_info["blender"] == (3, 4, 0), bl_info
    assert bl_info["category"] == "Render"
    for name, source in sources.items():
        # Blender 3.4 runs Python 3.10: nothing newer may be in the add-on.
        tree = ast.parse(source, name, feature_version=(3, 10))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                in_310 = top in sys.stdlib_module_names and top not in NEW_IN_311
                assert in_310 or top == "bpy", f"{name} imports {module}"


def fake_cli(tmp_path: Path, body: str) -> str:
    """A `farmhand` that is a Python script doing `body`."""
    path = tmp_path / "farmhand"
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def kinds(submit: runner.Submit) -> list[dict[str, object]]:
    return list(submit.events())


def test_events_pass_through_and_stop_at_the_outcome(tmp_path: Path) -> None:
    cli = fake_cli(
        tmp_path,
        "print('a library talking'); print(json.dumps({'event': 'upload', 'done': 5, "
        "'total': 10})); print(json.dumps({'event': 'submitted', 'job_id': 3}))",
    )
    events = kinds(runner.Submit([cli], dict(os.environ)))
    assert events == [
        {"event": "upload", "done": 5, "total": 10},
        {"event": "submitted", "job_id": 3},
    ]
    assert runner.percent(events[0]) == 50.0


def test_a_cli_that_dies_without_an_outcome_is_one_error_line(tmp_path: Path) -> None:
    cli = fake_cli(
        tmp_path,
        "print('Traceback (most recent call last):', file=sys.stderr)\n"
        "print('error: cannot reach the manager at http://x:1', file=sys.stderr)\n"
        "sys.exit(1)",
    )
    events = kinds(runner.Submit([cli], dict(os.environ)))
    assert events == [{"event": "error", "message": "cannot reach the manager at http://x:1"}]


def test_a_multi_line_error_event_becomes_one_line(tmp_path: Path) -> None:
    message = "2 file(s) the scene uses do not exist:\\n  /a.png\\n  /b.png"
    cli = fake_cli(tmp_path, f"print(json.dumps({{'event': 'error', 'message': '{message}'}}))")
    events = kinds(runner.Submit([cli], dict(os.environ)))
    assert events == [
        {"event": "error", "message": "2 file(s) the scene uses do not exist: /a.png /b.png"}
    ]


def test_cancel_stops_the_cli_and_says_canceled(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, "print(json.dumps({'event': 'packing'}), flush=True); time.sleep(60)")
    submit = runner.Submit([cli], dict(os.environ))
    events = submit.events()
    assert next(events) == {"event": "packing"}
    threading.Timer(0.1, submit.cancel).start()  # from another thread, as the UI does
    started = time.monotonic()
    assert list(events) == [{"event": "canceled"}]
    assert time.monotonic() - started < 10, "the CLI was stopped, not waited for"


def test_the_cli_is_found_or_named_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(runner.CliError, match="farmhand CLI not found"):
        runner.find_farmhand("")
    with pytest.raises(runner.CliError, match="not an executable"):
        runner.find_farmhand(str(tmp_path / "nope"))
    cli = fake_cli(tmp_path, "")
    assert runner.find_farmhand("") == cli, "found beside Blender's Python"
    assert runner.find_farmhand(cli) == cli


def test_submit_arguments_keep_names_and_paths_as_values() -> None:
    args = runner.submit_args("fh", "/s/-x.blend", 1, 9, 2, chunk=3, priority=7, name="-v")
    assert args == [
        "fh", "submit", "--json-events", "--frames=1-9x2", "--chunk=3", "--priority=7",
        "--name=-v", "--", "/s/-x.blend",
    ]  # fmt: skip
    picky = runner.submit_args("fh", "/s.blend", 1, 1, device="OPTIX", tags=["gpu", "-x"])
    assert picky[-5:] == [
        "--device=OPTIX",
        "--require-tag=gpu",
        "--require-tag=-x",
        "--",
        "/s.blend",
    ]
    assert runner.tag_list(" gpu, studio-b,,gpu  highmem") == ["gpu", "studio-b", "highmem"]
    still = runner.submit_args("fh", "/s.blend", 7, 7, tiles="3x2")
    assert "--frames=7-7" in still and still[-3:] == ["--tiles=3x2", "--", "/s.blend"]
    env = runner.cli_env("http://m:1", "secret")
    assert env["FARMHAND_URL"] == "http://m:1" and env["FARMHAND_TOKEN"] == "secret"
    assert "secret" not in " ".join(args), "the token never goes on the command line"


def test_the_video_and_the_worker_cap_reach_the_cli() -> None:
    args = runner.submit_args(
        "fh", "/s.blend", 1, 9, video=True, codec="vp9", container="webm", max_workers=3
    )
    assert args[-6:] == [
        "--video", "--codec=vp9", "--container=webm", "--max-workers=3", "--", "/s.blend"
    ]  # fmt: skip
    no_video = runner.submit_args("fh", "/s.blend", 1, 9, codec="vp9", container="webm")
    assert not [a for a in no_video if a.startswith(("--codec", "--container", "--video"))], (
        "the codec is the panel's choice for a video; without one it is not sent (it would ask "
        "for a video)"
    )
    assert "--max-workers=0" not in runner.submit_args("fh", "/s.blend", 1, 9, max_workers=0)


def test_the_addons_containers_are_the_farms() -> None:
    """The add-on cannot import farmhand: its copy of the codec → containers table must
    be the farm's, and the farm's default container must be offered for every codec."""
    assert {c: set(names) for c, names in runner.VIDEO_CONTAINERS.items()} == {
        c: set(names) for c, names in VIDEO_CONTAINERS.items()
    }
    default = VideoSettings().container
    assert all(default in names for names in runner.VIDEO_CONTAINERS.values())


BLENDER_FORMATS = (
    *("BMP", "IRIS", "PNG", "JPEG", "JPEG2000", "TARGA", "TARGA_RAW", "CINEON", "DPX"),
    *("OPEN_EXR_MULTILAYER", "OPEN_EXR", "HDR", "TIFF", "WEBP", "FFMPEG"),
)
"""Blender's `image_settings.file_format` values."""


@pytest.mark.parametrize("scene_format", BLENDER_FORMATS)
def test_the_addon_warns_of_png_frames_exactly_when_the_farm_renders_png(
    scene_format: str,
) -> None:
    """The add-on cannot import farmhand: its copy of the kept formats must be the farm's,
    so it says 'PNG' for the scenes whose frames the farm renders as PNG, and only those."""
    assert runner.KEPT_FORMATS == KEPT_FORMATS
    note = runner.format_note(scene_format)
    assert bool(note) == (rendered_format(scene_format) != scene_format), note
    assert not note or "PNG" in note[0]


def test_auto_refresh_follows_an_unfinished_job_and_never_two_clis_at_once() -> None:
    step = runner.auto_refresh_step
    for status in ("queued", "active", "paused", ""):
        assert step(7, status, "") == "refresh", status
        assert step(7, status, "refreshing") == "wait", "never while a CLI runs"
        assert step(7, status, "submitting") == "wait"
    for status in ("completed", "failed", "canceled"):
        assert step(7, status, "") == "stop", status
        assert step(7, status, "refreshing") == "stop", status
    assert step(0, "", "") == "stop", "no job yet"


def test_a_status_call_gives_json_or_one_clear_line() -> None:
    """`run_json` (Refresh, and the panel's own refreshes): the JSON, or a CliError the
    panel shows as it is: the CLI's `error:` line, a non-JSON answer, or no answer."""
    env = dict(os.environ)

    def python(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    assert runner.run_json(python('print(\'{"status": "active"}\')'), env) == {"status": "active"}
    with pytest.raises(runner.CliError, match=r"^job 9 does not exist$"):
        runner.run_json(
            python("import sys; sys.stderr.write('error: job 9 does not exist\\n'); sys.exit(1)"),
            env,
        )
    with pytest.raises(runner.CliError, match="answered no JSON"):
        runner.run_json(python("print('hello')"), env)
    started = time.monotonic()
    with pytest.raises(runner.CliError, match="no answer in 1 s"):
        runner.run_json(python("import time; time.sleep(60)"), env, timeout=1)
    assert time.monotonic() - started < 30, "the stuck CLI was killed, not waited for"


def test_a_missing_token_points_to_the_add_ons_preferences() -> None:
    """The CLI says `pass --token`; in Blender the token is an add-on preference."""
    said = 'error: no API token: pass --token, set FARMHAND_TOKEN, or put token = "…" in x\n'
    message = runner.last_error(said, 1)
    assert "Preferences > Add-ons > farmhand" in message and "--token" not in message
    assert runner.last_error("error: job 3 failed: boom\n", 1) == "job 3 failed: boom"


FARMHAND = str(Path(sys.executable).with_name("farmhand"))
"""The real CLI, as the add-on runs it."""


class Events:
    """The events of a real `farmhand submit`, read in a thread as the add-on does."""

    def __init__(self, submit: runner.Submit) -> None:
        self.submit = submit
        self.seen: list[dict[str, object]] = []
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for event in self.submit.events():
            with self._arrived:
                self.seen.append(event)
                self._arrived.notify_all()

    def until(self, kind: str, seconds: float = 60) -> list[dict[str, object]]:
        """The events so far once one of `kind` (or the outcome) came; the test fails if
        none comes within `seconds` (the manager retried for two minutes, say)."""

        def came() -> bool:
            return any(event["event"] in (kind, *runner.TERMINAL) for event in self.seen)

        with self._arrived:
            arrived = self._arrived.wait_for(came, seconds)
        if not arrived:
            self.submit.cancel()
        assert arrived, f"no {kind!r} event in {seconds} s: {self.seen}"
        return list(self.seen)


def events_until(submit: runner.Submit, kind: str) -> list[dict[str, object]]:
    """The events up to the first `kind`; then the CLI is canceled."""
    events = Events(submit).until(kind)
    submit.cancel()
    return events


def submit_to(url: str, tmp_path: Path) -> runner.Submit:
    blend = tmp_path / "shot.blend"
    blend.write_bytes(b"BLENDER")  # never packed: the manager is asked first
    env = runner.cli_env(url, "fh_api_token")
    env["FARMHAND_CONFIG"] = str(tmp_path / "none.toml")
    return runner.Submit(runner.submit_args(FARMHAND, str(blend), 1, 1), env)


def a_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Healthy(http.server.BaseHTTPRequestHandler):
    """A manager that answers `GET /healthz` (and nothing else)."""

    def do_GET(self) -> None:
        body = b'{"status": "ok", "version": "0", "database": "sqlite"}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_unreachable_manager_is_said_at_once_before_packing_until_it_answers(
    tmp_path: Path,
) -> None:
    """It was "uploading 0%" with Cancel for two minutes, after packing and hashing."""
    port = a_free_port()
    url = f"http://127.0.0.1:{port}"  # nothing listens there, yet
    events = Events(submit_to(url, tmp_path))
    said = events.until("retrying")
    assert [event["event"] for event in said] == ["retrying"], said
    line = runner.outage_line(said[0])
    assert line == f"the manager at {url} does not answer; retrying — Cancel to stop", line
    server = http.server.HTTPServer(("127.0.0.1", port), Healthy)  # the manager is back
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kinds = [event["event"] for event in events.until("packing")]
    finally:
        events.submit.cancel()
        server.shutdown()
        server.server_close()
    # Then packing, which this stand-in .blend ends at once (an error may follow).
    assert kinds[:3] == ["retrying", "reconnected", "packing"], kinds


def test_https_to_a_plain_http_manager_is_an_error_at_once(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        events = events_until(submit_to(url, tmp_path), "error")
    finally:
        server.shutdown()
        server.server_close()
    plain = url.replace("https://", "http://")
    assert events == [
        {"event": "error", "message": f"the manager at {url} does not speak https (try {plain})"}
    ], events


def test_a_manager_url_without_http_names_the_add_ons_setting(tmp_path: Path) -> None:
    events = events_until(submit_to("127.0.0.1:8080", tmp_path), "error")
    assert [event["event"] for event in events] == ["error"], events
    message = str(events[0]["message"])
    assert message.startswith(
        "the manager URL '127.0.0.1:8080' (Manager URL in Preferences > Add-ons > farmhand) "
        "cannot be used: it must start with http:// or https://"
    ), message


def test_missing_files_point_to_blenders_own_tools_not_a_cli_option(tmp_path: Path) -> None:
    """The CLI says `submit with --allow-missing`, which the add-on has no way to do."""
    said = str(submission.MissingFiles([tmp_path / "lib.blend"]))
    assert said.endswith(runner.CLI_MISSING_FILES), "the add-on's copy is the CLI's words"
    message = runner.in_artists_words(said)
    assert "--allow-missing" not in message and "\n" not in message, message
    assert message == (
        f"1 file(s) the scene uses do not exist: {tmp_path / 'lib.blend'} · In Blender: File > "
        "External Data > Report Missing Files lists them, Find Missing Files looks for them "
        "in a folder; fix or remove them, then submit again"
    ), message
