"""Shared fixtures: Blenders, small scenes built by them, and a fake Blender for fast tests.

Scenes are built once per session (each build starts a Blender, about a second). A scene
rendered by Blender 3.4 must be built by 3.4: files saved by 5.0 do not open in 3.4.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from farmhand.scenes import make_scene
from farmhand.worker.blender.discovery import BlenderInstall, BlenderNotFound, find_blender

SCENE_SIZE = (64, 48)
"""Width and height of every test scene: small enough that a frame takes well under a second."""
SCENE_OPTIONS: dict[str, object] = {
    "width": SCENE_SIZE[0],
    "height": SCENE_SIZE[1],
    "frames": "1-3",
    "samples": 2,
}
BLENDER_34 = "/usr/bin/blender"


@pytest.fixture(scope="session")
def blender_module() -> BlenderInstall:
    """Blender 5 as the `bpy` module, run under this interpreter."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("the bpy module is not installed (pip install 'farmhand[blender]')")
    return find_blender("bpy")


@pytest.fixture(scope="session")
def blender_executable() -> BlenderInstall:
    """An installed Blender executable (Debian's 3.4 here); skipped where there is none."""
    path = os.environ.get("FARMHAND_TEST_BLENDER") or shutil.which(BLENDER_34)
    if path is None:
        pytest.skip("no Blender executable installed")
    try:
        return find_blender(path)
    except BlenderNotFound as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module", params=["bpy", "3.4"])
def install(request: pytest.FixtureRequest) -> BlenderInstall:
    """Each Blender in turn, Blender 5 (`bpy`) and then 3.4, for a test that must hold for
    files both save (each module's scenes built by the Blender that renders them)."""
    name = "blender_module" if request.param == "bpy" else "blender_executable"
    blender: BlenderInstall = request.getfixturevalue(name)
    return blender


@pytest.fixture(scope="session")
def animated_blend(
    tmp_path_factory: pytest.TempPathFactory, blender_module: BlenderInstall
) -> Path:
    """Frames 1-3 of a moving cube, 64x48, Cycles 2 samples; saved by the bpy module."""
    out = tmp_path_factory.mktemp("scenes") / "animated.blend"
    return make_scene(out, "animated", install=blender_module, **SCENE_OPTIONS)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def animated_blend_34(
    tmp_path_factory: pytest.TempPathFactory, blender_executable: BlenderInstall
) -> Path:
    """The animated scene saved by the Blender executable, so that Blender can open it."""
    out = tmp_path_factory.mktemp("scenes34") / "animated.blend"
    return make_scene(out, "animated", install=blender_executable, **SCENE_OPTIONS)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def no_camera_blend(
    tmp_path_factory: pytest.TempPathFactory, blender_module: BlenderInstall
) -> Path:
    """A scene without a camera: Blender refuses to render it (and may still exit 0)."""
    out = tmp_path_factory.mktemp("scenes") / "no-camera.blend"
    return make_scene(out, "no-camera", install=blender_module, **SCENE_OPTIONS)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def autoexec_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the autoexec scene's embedded script writes if it ever runs."""
    return tmp_path_factory.mktemp("autoexec") / "scene-python-ran"


@pytest.fixture(scope="session")
def autoexec_blend(
    tmp_path_factory: pytest.TempPathFactory, blender_module: BlenderInstall, autoexec_marker: Path
) -> Path:
    """A scene whose registered text block writes `autoexec_marker` when scripts are trusted."""
    out = tmp_path_factory.mktemp("scenes") / "autoexec.blend"
    return make_scene(
        out,
        "autoexec",
        install=blender_module,
        marker=autoexec_marker,
        **SCENE_OPTIONS,  # type: ignore[arg-type]
    )


FAKE_BLENDER = r'''
"""A stand-in for Blender that speaks the driver's protocol; FAKE_MODE picks its behaviour.

ok: writes each frame as a real PNG; exit0_no_frames: reports frames but writes none;
error: answers render with an error event; hang: ignores SIGTERM and never finishes;
oom: SIGKILLs itself mid-render; hang_open: never finishes opening;
truncated: writes cut-off PNGs; slow: 0.3 s per frame; die_after: exits with 3 after
answering a render (a session's Blender that dies between tasks).
FAKE_MODE_FROM=N: this process behaves as `ok` for its first N-1 render commands and as
FAKE_MODE from the Nth on (a session that goes wrong mid-way).
"""
import json, os, signal, sys, time
from PIL import Image

MARK = "@@farmhand@@ "
bad_mode = os.environ.get("FAKE_MODE", "ok")
bad_from = int(os.environ.get("FAKE_MODE_FROM", "1"))
renders = 0
mode = bad_mode if bad_from <= 1 else "ok"
count_file = os.environ.get("FAKE_COUNT_FILE")
if count_file:
    with open(count_file, "a") as handle:
        handle.write(str(os.getpid()) + "\n")

def emit(event, **fields):
    fields["event"] = event
    print(MARK + json.dumps(fields), flush=True)

emit("ready", version="0.0-fake")
print("Blender's own chatter, which is not an event", flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if command["cmd"] == "open":
        if mode == "hang_open":
            time.sleep(3600)
        emit("opened", scene="Scene")
        continue
    renders += 1
    mode = bad_mode if renders >= bad_from else "ok"
    if mode == "error":
        print("Error: Cannot render, no camera", file=sys.stderr, flush=True)
        emit("error", message="Error: Cannot render, no camera", traceback="")
        continue
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit("frame_started", frame=command["frames"][0])
        while True:
            time.sleep(1)
    ext = {"JPEG": ".jpg", None: ".png", "PNG": ".png"}[command.get("output_format")]
    for frame in command["frames"]:
        emit("frame_started", frame=frame)
        if mode == "oom":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "slow":
            time.sleep(0.3)
        print("Fra:%d Mem:9.68M (Peak 9.82M) | Time:00:00.13 | Scene, ViewLayer | Sample 2/2"
              % frame, flush=True)
        path = os.path.join(command["output_dir"], "%s%04d%s" % (command["file_stem"], frame, ext))
        if mode != "exit0_no_frames":
            Image.new("RGB", (64, 48), (frame * 20 % 255, 40, 90)).save(path)
        if mode == "truncated":
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
        emit("frame_saved", frame=frame, path=path, seconds=0.01, width=64, height=48)
    emit("render_done", frames=len(command["frames"]))
    if mode == "die_after":
        os._exit(3)
emit("bye")
'''


@pytest.fixture(scope="session")
def fake_blender(tmp_path_factory: pytest.TempPathFactory) -> BlenderInstall:
    """An 'executable' Blender that is a Python script: behaviour set by FAKE_MODE in env."""
    path = tmp_path_factory.mktemp("fake-blender") / "blender"
    path.write_text(f"#!{sys.executable}\n{FAKE_BLENDER}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return BlenderInstall("executable", str(path), "0.0-fake")
