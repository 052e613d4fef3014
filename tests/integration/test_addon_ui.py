"""The add-on in Blender 3.4 with its UI (under Xvfb), as a person uses it.

test_addon.py runs Blender in background mode, where the submit operator waits for its
thread. Here Blender has a window and an event loop: the operator must return at once
while the CLI runs in a thread, and the CLI's events must reach the panel through the
`bpy.app.timers` callback (`ui._drain`) on Blender's main thread. A script started with
`--python` drives Blender from a timer, as clicks would: it opens the panel, presses
Submit (then Refresh, or Cancel), records what the add-on's state went through, takes a
screenshot of the window, prints one JSON line and quits Blender. After Refresh it
presses nothing more: with the manager unreachable for a while and then the job
canceled through the API, the add-on's own refresh (every `AUTO_SECONDS` here) must show
the error, keep asking, show the job canceled, and then stop running `farmhand job`
(each run counted by wrapping the add-on's `runner.job_status`).

Screenshots land in `test-artifacts/screenshots/` (gitignored) for people to look at.
One such Blender runs at a time, whatever the xdist workers do (a lock file): two
`xvfb-run -a` started at once can pick the same display number, and one then fails. The
`blender-ui` xdist group also asks `--dist loadgroup` to keep the module's tests (and
its one manager) on one worker; pytest 9.2 with pytest-xdist 3.8 ignores such groups
(pytest-dev/pytest-xdist#1386), hence the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from farmhand.addon import runner
from farmhand.localfarm import LocalFarm
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.test_addon import (
    RESULT,
    farm,  # noqa: F401 (a fixture)
    install_addon,
    only_job,
)

pytestmark = [pytest.mark.blender, pytest.mark.xdist_group("blender-ui")]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
XVFB_LOCK = Path(tempfile.gettempdir()) / "farmhand-tests-xvfb.lock"
BLENDER_TIMEOUT = 120
"""Seconds Blender may take to do it all and quit by itself (it takes about 15-30)."""
AUTO_SECONDS = 1.0
"""The add-on's auto-refresh interval here (10 s in use): `farmhand job` takes ~2 s."""

UI_SCRIPT = r"""
import json, os, sys, threading, time, traceback, urllib.request
import bpy

ui = sys.modules["farmhand_addon.ui"]
plan = json.loads(os.environ["TEST_PLAN"])
result = {"background": bpy.app.background, "applied": [], "sampled": [], "drawn": [],
          "ticks_while_busy": 0, "job_calls": [], "max_concurrent_calls": 0}
ui.AUTO_REFRESH_SECONDS = plan["auto_seconds"]
prefs = bpy.context.preferences.addons["farmhand_addon"].preferences
prefs.manager_url = os.environ["TEST_URL"]
prefs.api_token = os.environ["TEST_TOKEN"]
bpy.context.preferences.view.use_save_prompt = False  # quit_blender never asks

# The panel is closed until a person opens it; the screenshot wants it open.
bpy.utils.unregister_class(ui.FARMHAND_PT_render)
ui.FARMHAND_PT_render.bl_options = set()
bpy.utils.register_class(ui.FARMHAND_PT_render)

# Every event the UI applies: which, the phase it left, and on which thread.
apply = ui._apply
started = [0.0]


def spy(event):
    apply(event)
    result["applied"].append({
        "event": event.get("event"),
        "phase": ui.STATE.phase,
        "percent": ui.STATE.percent,
        "main_thread": threading.current_thread() is threading.main_thread(),
        "at": round(time.monotonic() - started[0], 2),
    })


ui._apply = spy

# Every `farmhand job ID --json` the add-on runs (Refresh's and its own): [start, end].
addon_runner = sys.modules["farmhand_addon.runner"]
job_status = addon_runner.job_status
calls_lock = threading.Lock()
running_calls = [0]


def counted(*args):
    with calls_lock:
        call = [round(time.monotonic() - started[0], 2), None]
        result["job_calls"].append(call)
        running_calls[0] += 1
        result["max_concurrent_calls"] = max(result["max_concurrent_calls"], running_calls[0])
    try:
        return job_status(*args)
    finally:
        with calls_lock:
            running_calls[0] -= 1
            call[1] = round(time.monotonic() - started[0], 2)


addon_runner.job_status = counted

# What the panel showed each time Blender drew it (a change of it, once).
draw_state = ui.FARMHAND_PT_render.draw_state


def drawn(panel, layout):
    draw_state(panel, layout)
    shown = [ui.STATE.busy, ui.STATE.phase, ui.STATE.job_id, ui.STATE.job_status, ui.STATE.message]
    if not result["drawn"] or result["drawn"][-1] != shown:
        result["drawn"].append(shown)


ui.FARMHAND_PT_render.draw_state = drawn


def properties():
    # The biggest area (the 3D view) becomes the Properties editor on its Render tab.
    window = bpy.context.window_manager.windows[0]
    area = max(window.screen.areas, key=lambda a: a.width * a.height)
    region = next(r for r in area.regions if r.type == "WINDOW")
    return window, area, region


def click(operator):
    # As a button press: the operator runs in the window, over the Properties editor.
    window, area, region = properties()
    with bpy.context.temp_override(window=window, area=area, region=region):
        return sorted(operator())


def sample():
    # Called from the timer every 0.05 s: while a CLI runs, Blender's event loop runs.
    if ui.STATE.busy:
        result["ticks_while_busy"] += 1
    state = [ui.STATE.busy, ui.STATE.phase]
    if not result["sampled"] or result["sampled"][-1] != state:
        result["sampled"].append(state)


def wait(until, seconds, strict=True):
    deadline = time.monotonic() + seconds
    while not until():
        sample()
        if time.monotonic() > deadline:
            if not strict:  # the test says what did not happen
                return
            raise TimeoutError(f"waited {seconds} s")
        yield 0.05
    sample()


def screenshot(name):
    window, area, region = properties()
    with bpy.context.temp_override(window=window, area=area, region=region):
        # The add-on's panel comes last: scrolled to the end, as a person would.
        for _page in range(10):
            bpy.ops.view2d.scroll_down(page=True)
    region.tag_redraw()
    yield 0.1  # drawn scrolled
    path = os.path.join(plan["screenshots"], name)
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.screen.screenshot(filepath=path)
    result[name] = path


def steps():
    yield 1.0  # the window has drawn
    window, area, region = properties()
    area.type = "PROPERTIES"
    yield 0.2
    window, area, region = properties()
    area.spaces.active.context = "RENDER"
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 2, 3
    scene.farmhand.job_name = plan["name"]
    scene.farmhand.chunk_size = 1
    if plan.get("big_file"):
        # A texture the scene uses: big enough that its upload lasts a while.
        image = bpy.data.images.new("big", 8, 8)
        image.source = "FILE"
        image.filepath = plan["big_file"]
        image.use_fake_user = True
    if plan["mode"] == "panel":  # only how the panel looks, in each of the plan's states
        for name, values in plan["panels"]:
            for key, value in values.items():
                setattr(scene.farmhand, key, value)
            yield 0.3
            yield from screenshot(name)
        return
    # Saved as a person would (Ctrl+S): a script's changes do not mark the file dirty
    # (is_dirty stays False), so the submit would not save them itself.
    result["dirty"] = bpy.data.is_dirty
    click(bpy.ops.wm.save_mainfile)
    yield 0.5  # drawn with the panel open
    started[0] = time.monotonic()
    result["submit"] = click(bpy.ops.farmhand.submit)
    result["returned_busy"] = ui.STATE.busy
    result["returned_job_id"] = ui.STATE.job_id
    result["returned_in"] = round(time.monotonic() - started[0], 2)
    result["drain_registered"] = bpy.app.timers.is_registered(ui._drain)

    if plan["mode"] == "cancel":
        yield from wait(lambda: ui.STATE.phase == "uploading" or not ui.STATE.busy, 60)
        yield 0.5  # the panel shows the upload's percent
        yield from screenshot("addon-ui-uploading.png")
        result["phase_at_cancel"] = ui.STATE.phase
        result["percent_at_cancel"] = ui.STATE.percent
        result["cancel"] = click(bpy.ops.farmhand.cancel)
        yield from wait(lambda: not ui.STATE.busy, 30)
        result["message"] = ui.STATE.message
        result["error"] = ui.STATE.error
        result["job_id"] = ui.STATE.job_id
        yield 0.3  # the panel shows the outcome
        yield from screenshot("addon-ui-canceled.png")
        return

    yield from wait(lambda: ui.STATE.job_id or ui.STATE.error, 60)
    result["job_id"] = ui.STATE.job_id
    result["error"] = ui.STATE.error
    result["submitted_status"] = ui.STATE.job_status
    if not ui.STATE.job_id:
        return
    yield 0.3
    yield from wait(lambda: not ui.STATE.busy, 30)  # an auto-refresh may be running
    result["manual_call"] = len(result["job_calls"])
    result["refresh"] = click(bpy.ops.farmhand.refresh)
    result["refresh_returned_busy"] = ui.STATE.busy
    yield from wait(lambda: not ui.STATE.busy, 60)
    result["status"] = ui.STATE.job_status
    result["error"] = ui.STATE.error
    result["applied_by_refresh"] = len(result["applied"])
    yield 0.3  # the panel shows the job
    yield from screenshot("addon-ui-job.png")
    yield from follow()


def follow():
    # Nobody presses Refresh any more: the add-on asks the manager by itself.
    calls = result["job_calls"]
    good_url = prefs.manager_url
    prefs.manager_url = plan["dead_url"]  # the manager is unreachable for a while
    yield from wait(lambda: ui.STATE.error, 20, strict=False)
    result["auto_error"] = ui.STATE.error
    result["status_at_error"] = ui.STATE.job_status
    tried = len(calls)
    yield from wait(lambda: len(calls) > tried and not ui.STATE.busy, 20, strict=False)
    result["tries_after_error"] = len(calls) - tried
    result["error_after_retry"] = ui.STATE.error
    yield from screenshot("addon-ui-auto-error.png")
    # The job moves on the manager, through its API; the manager is reachable again.
    request = urllib.request.Request(
        f"{good_url}/api/jobs/{ui.STATE.job_id}", method="DELETE",
        headers={"Authorization": "Bearer " + prefs.api_token},
    )
    urllib.request.urlopen(request, timeout=30).close()
    prefs.manager_url = good_url
    yield from wait(lambda: ui.STATE.job_status.startswith("canceled"), 20, strict=False)
    result["auto_status"] = ui.STATE.job_status
    result["error_after_cancel"] = ui.STATE.error
    result["calls_at_finish"] = len(calls)
    yield 2 * plan["auto_seconds"] + 0.5  # time enough for it to ask again, had it not stopped
    result["calls_after_finish"] = len(calls)
    result["auto_timer_left"] = bpy.app.timers.is_registered(ui._auto_refresh)
    yield from screenshot("addon-ui-auto-canceled.png")


def finish():
    print(plan["marker"] + json.dumps(result), flush=True)
    bpy.ops.wm.quit_blender()


running = steps()


def tick():
    try:
        return next(running)
    except StopIteration:
        pass
    except Exception:
        result["script_error"] = traceback.format_exc()
    finish()
    return None


bpy.app.timers.register(tick, first_interval=0.5)
"""


@pytest.fixture(scope="module")
def xvfb_run() -> str:
    found = shutil.which("xvfb-run")
    if found is None:
        pytest.skip("no xvfb-run (apt-get install xvfb xauth)")
    return found


def run_ui(
    xvfb_run: str,
    blender: BlenderInstall,
    env: dict[str, str],
    blend: Path,
    plan: Mapping[str, object],
) -> dict[str, Any]:
    """Blender with its window, driven by UI_SCRIPT, to its own end: its JSON result."""
    assert blender.path is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    script = blend.parent / "drive_ui.py"
    script.write_text(UI_SCRIPT)
    plan = {"marker": RESULT, "screenshots": str(SCREENSHOTS), "auto_seconds": AUTO_SECONDS, **plan}
    with XVFB_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        # Its own session: xvfb-run, Xvfb and Blender all go if it must be killed.
        process = subprocess.Popen(
            [xvfb_run, "-a", "-s", "-screen 0 1280x800x24", blender.path, str(blend),
             "--python", str(script)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env, "TEST_PLAN": json.dumps(plan)}, start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=BLENDER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"Blender did not quit by itself in {BLENDER_TIMEOUT} s:\n{stdout[-4000:]}")
    output = stdout + stderr
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    assert process.returncode == 0 and lines, output[-4000:]
    answer: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    assert not answer.get("script_error"), answer["script_error"]
    assert answer["background"] is False, "Blender ran with its UI"
    assert "Traceback" not in output, output[-4000:]
    return answer


def shot(tmp_path: Path, animated_blend_34: Path, name: str) -> Path:
    blend = tmp_path / "shot" / f"{name}.blend"
    blend.parent.mkdir()
    shutil.copy(animated_blend_34, blend)
    return blend


def dead_url() -> str:
    """A URL where nothing listens: a manager that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_submit_returns_at_once_and_the_panel_gets_the_job_by_timer(
    xvfb_run: str,
    blender_executable: BlenderInstall,
    farm: LocalFarm,  # noqa: F811
    animated_blend_34: Path,
    tmp_path: Path,
) -> None:
    env = install_addon(blender_executable, tmp_path, farm)
    blend = shot(tmp_path, animated_blend_34, "turntable")
    plan = {"mode": "submit", "name": "ui submit", "dead_url": dead_url()}
    answer = run_ui(xvfb_run, blender_executable, env, blend, plan)
    summary = json.dumps(answer, indent=1)
    print(summary)
    assert answer["submit"] == ["FINISHED"], summary
    assert answer["returned_busy"] == "submitting", "the operator returned while the CLI ran"
    assert answer["returned_job_id"] == 0, summary
    ticks = answer["ticks_while_busy"]
    assert isinstance(ticks, int) and ticks >= 5, "Blender's event loop ran while it submitted"
    assert answer["drain_registered"] is True, summary
    applied = answer["applied"]
    assert isinstance(applied, list) and applied, summary
    assert all(step["main_thread"] for step in applied), "events applied on the main thread"
    kinds = [step["event"] for step in applied]
    by_refresh = kinds[: int(answer["applied_by_refresh"])]
    assert by_refresh[0] == "packing" and by_refresh[-1] == "status", kinds
    after = by_refresh[by_refresh.index("submitted") + 1 :]
    assert after and set(after) == {"status"}, kinds
    assert "upload" in kinds, kinds
    phases = [step["phase"] for step in applied]
    assert {"packing", "hashing", "uploading"} <= set(phases), phases
    busy_seen = [busy for busy, _phase in answer["sampled"]]
    assert "submitting" in busy_seen and busy_seen[-1] == "", answer["sampled"]

    job = only_job(farm, "ui submit")
    assert answer["job_id"] == job.id and not answer["error"], summary
    settings = job.settings
    assert (settings.frame_start, settings.frame_end, settings.chunk_size) == (2, 3, 1)
    assert job.main_file == blend.name and job.frames_total == 2, job

    assert answer["refresh"] == ["FINISHED"], summary
    assert answer["refresh_returned_busy"] == "refreshing", "Refresh did not block the UI"
    status = str(answer["status"])
    assert status.startswith("queued 0% (0/2 frames)"), status
    assert status != answer["submitted_status"], "the status line came from the refresh"
    drawn = answer["drawn"]
    assert isinstance(drawn, list), summary
    assert any(busy == "submitting" for busy, *_ in drawn), "the panel showed the submit"
    shown = [(busy, job_id, job_status) for busy, _phase, job_id, job_status, _msg in drawn]
    assert ("", job.id, status) in shown, "it showed the job, refreshed"
    assert Path(str(answer["addon-ui-job.png"])).stat().st_size > 10_000

    # Then, with nobody pressing Refresh, the add-on asked by itself every AUTO_SECONDS.
    assert "cannot reach the manager" in str(answer["auto_error"]), "it showed the error"
    assert str(answer["status_at_error"]).startswith("queued"), "and kept the last status"
    assert answer["tries_after_error"], "it kept trying after the error"
    assert answer["error_after_retry"] == answer["auto_error"], summary
    final = runner.status_line(job.model_dump(mode="json"))
    assert job.status == "canceled" and answer["auto_status"] == final, summary
    assert answer["error_after_cancel"] == "", "a good answer replaced the error"
    assert shown[-1] == ("", job.id, final), "the panel showed the job canceled, by itself"
    calls = answer["job_calls"]
    assert isinstance(calls, list), summary
    assert answer["max_concurrent_calls"] == 1, "one `farmhand job` at a time"
    manual = int(answer["manual_call"])
    for index in range(1, len(calls)):
        if index != manual:  # every auto-refresh starts an interval after an answer
            gap = calls[index][0] - calls[index - 1][1]
            assert gap >= 0.8 * AUTO_SECONDS, calls
    assert len(calls) - manual >= 4, "Refresh once, then itself: error, again, canceled"
    assert answer["calls_after_finish"] == answer["calls_at_finish"], "it stopped once finished"
    assert answer["auto_timer_left"] is False, summary


BIG_FILE_MB = 64
LINK_RATE = 8 * 1024 * 1024
"""Bytes a second the slow link carries to the manager: the upload lasts about 8 s."""


@contextlib.contextmanager
def slow_link(port: int, rate: int) -> Iterator[str]:
    """A TCP relay to the manager on `port` that carries requests at `rate` bytes a
    second: however fast the machine, an upload lasts long enough for a cancel to land
    in its middle. Its URL."""

    def pump(source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while chunk := source.recv(64 * 1024):
                sink.sendall(chunk)
                if slow:
                    time.sleep(len(chunk) / rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(("127.0.0.1", port)) as upstream:
                out = threading.Thread(target=pump, args=(self.request, upstream, True))
                out.start()
                pump(upstream, self.request, False)
                out.join()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cancel_stops_the_upload_and_no_job_is_made(
    xvfb_run: str,
    blender_executable: BlenderInstall,
    farm: LocalFarm,  # noqa: F811
    animated_blend_34: Path,
    tmp_path: Path,
) -> None:
    env = install_addon(blender_executable, tmp_path, farm)
    blend = shot(tmp_path, animated_blend_34, "heavy")
    big = blend.parent / "textures" / "big.exr"
    big.parent.mkdir()
    with big.open("wb") as out:
        for _ in range(BIG_FILE_MB):
            out.write(os.urandom(1024 * 1024))
    with farm.client() as client:
        before = [job.id for job in client.list_jobs()]
    plan = {"mode": "cancel", "name": "ui cancel", "big_file": "//textures/big.exr"}
    with slow_link(farm.port, LINK_RATE) as url:
        env["TEST_URL"] = url
        answer = run_ui(xvfb_run, blender_executable, env, blend, plan)
    summary = json.dumps(answer, indent=1)
    print(summary)
    assert answer["submit"] == ["FINISHED"] and answer["returned_busy"] == "submitting", summary
    assert answer["phase_at_cancel"] == "uploading", summary
    assert 0 < float(answer["percent_at_cancel"]) < 100, summary
    assert answer["cancel"] == ["FINISHED"], summary
    kinds = [step["event"] for step in answer["applied"]]
    assert kinds[-1] == "canceled" and "submitted" not in kinds, kinds
    assert answer["message"] == "submit canceled" and not answer["error"], summary
    assert answer["job_id"] == 0, summary
    drawn = answer["drawn"]
    assert isinstance(drawn, list), summary
    assert ["submitting", "uploading"] in [shown[:2] for shown in drawn], drawn
    busy, _phase, job_id, _status, message = drawn[-1]
    assert (busy, job_id, message) == ("", 0, "submit canceled"), "it showed the cancel"
    with farm.client() as client:
        assert [job.id for job in client.list_jobs()] == before, "no job was made"


def test_the_panel_shows_tiles_of_the_frame_on_screen_or_of_a_range(
    xvfb_run: str,
    blender_executable: BlenderInstall,
    farm: LocalFarm,  # noqa: F811
    animated_blend_34: Path,
    tmp_path: Path,
) -> None:
    env = install_addon(blender_executable, tmp_path, farm)
    blend = shot(tmp_path, animated_blend_34, "panel")
    panels = [
        ("addon-ui-tiles-still.png", {"use_tiles": True}),
        (
            "addon-ui-tiles-range.png",
            {
                "tile_current_frame": False,
                "make_video": True,
                "video_codec": "vp9",
                "video_container": "webm",  # offered only once the codec is vp9
                "max_workers": 4,
            },
        ),
    ]
    plan = {"mode": "panel", "name": "ui panel", "panels": panels}
    answer = run_ui(xvfb_run, blender_executable, env, blend, plan)  # no Traceback drawing it
    for name, _values in panels:
        assert Path(str(answer[name])).stat().st_size > 0, name
    with farm.client() as client:
        assert not [job for job in client.list_jobs() if job.name == "ui panel"], "none submitted"
