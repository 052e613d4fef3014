"""Real renders through the driver, with Blender 5 (bpy module) and an installed Blender (3.4).

Each scene is 64x48 px, Cycles, 2 samples on the CPU: a frame takes a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from farmhand.scenes import BUILDER, make_scene, run_builder
from farmhand.shared.images import verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameSaved, FrameStarted, Opened, Progress
from farmhand.worker.blender.process import RenderRequest, RenderResult, render
from tests.conftest import SCENE_OPTIONS, SCENE_SIZE

pytestmark = pytest.mark.blender
WIDTH, HEIGHT = SCENE_SIZE


def do_render(
    install: BlenderInstall,
    blend: Path,
    out: Path,
    frames: list[int] | None = None,
    **extra: object,
) -> tuple[RenderResult, list[Event]]:
    events: list[Event] = []
    request = RenderRequest(blend, frames or [1, 2, 3], out, **extra)  # type: ignore[arg-type]
    result = render(install, request, log_path=out / "blender.log", on_event=events.append)
    return result, events


def test_module_renders_three_valid_frames(
    blender_module: BlenderInstall, animated_blend: Path, tmp_path: Path
) -> None:
    result, events = do_render(blender_module, animated_blend, tmp_path)
    assert result.ok, result.error
    assert sorted(result.frames) == [1, 2, 3]
    for frame, path in result.frames.items():
        assert path == tmp_path / f"frame_{frame:04d}.png"
        assert verify_image(path, WIDTH, HEIGHT).format == "PNG"
    # the frames differ: the cube moves
    assert result.frames[1].read_bytes() != result.frames[3].read_bytes()
    opened = next(e for e in events if isinstance(e, Opened))
    assert opened.facts["resolution_x"] == WIDTH and opened.facts["engine"] == "CYCLES"
    # Cycles' sample progress within each frame (the driver prints the status lines the
    # module does not), in order: a frame's samples before the next frame's.
    progress = [e for e in events if isinstance(e, Progress)]
    assert Progress(1, 2, 2) in progress and Progress(3, 2, 2) in progress
    assert [e.frame for e in progress] == sorted(e.frame for e in progress)


def test_executable_34_renders_three_valid_frames(
    blender_executable: BlenderInstall, animated_blend_34: Path, tmp_path: Path
) -> None:
    result, events = do_render(blender_executable, animated_blend_34, tmp_path, threads=1)
    assert result.ok, result.error
    # Cycles' sample progress, read from Blender's own status lines
    assert Progress(3, 2, 2) in events
    assert result.exit_code == 0
    for path in result.frames.values():
        verify_image(path, WIDTH, HEIGHT)
    assert sorted(result.frames) == [1, 2, 3]


@pytest.mark.parametrize(
    ("fmt", "ext", "pillow"), [("JPEG", "jpg", "JPEG"), ("OPEN_EXR", "exr", "OPEN_EXR")]
)
def test_output_format_override(
    blender_module: BlenderInstall,
    animated_blend: Path,
    tmp_path: Path,
    fmt: str,
    ext: str,
    pillow: str,
) -> None:
    result, _ = do_render(blender_module, animated_blend, tmp_path, [2], output_format=fmt)
    assert result.ok, result.error
    assert result.frames[2] == tmp_path / f"frame_0002.{ext}"
    assert verify_image(result.frames[2], WIDTH, HEIGHT).format == pillow


def test_exr_from_blender_34(
    blender_executable: BlenderInstall, animated_blend_34: Path, tmp_path: Path
) -> None:
    result, _ = do_render(
        blender_executable, animated_blend_34, tmp_path, [1], output_format="OPEN_EXR"
    )
    assert result.ok, result.error
    assert verify_image(result.frames[1], WIDTH, HEIGHT).format == "OPEN_EXR"


def test_resolution_percentage_and_samples_overrides(
    blender_module: BlenderInstall, animated_blend: Path, tmp_path: Path
) -> None:
    result, events = do_render(
        blender_module, animated_blend, tmp_path, [1], resolution_percentage=50, samples=1
    )
    assert result.ok, result.error
    saved = next(e for e in events if isinstance(e, FrameSaved))
    assert (saved.width, saved.height) == (WIDTH // 2, HEIGHT // 2)
    verify_image(result.frames[1], WIDTH // 2, HEIGHT // 2)


def test_missing_camera_fails_with_blenders_message(
    blender_module: BlenderInstall, no_camera_blend: Path, tmp_path: Path
) -> None:
    result, _ = do_render(blender_module, no_camera_blend, tmp_path)
    assert not result.ok
    assert result.error is not None and "camera" in result.error.lower()
    assert result.frames == {}


def test_missing_camera_fails_on_34_too(blender_executable: BlenderInstall, tmp_path: Path) -> None:
    blend = make_scene(
        tmp_path / "nocam.blend",
        "no-camera",
        install=blender_executable,
        **SCENE_OPTIONS,  # type: ignore[arg-type]
    )
    result, _ = do_render(blender_executable, blend, tmp_path / "out", [1])
    assert not result.ok
    assert result.error is not None and "camera" in result.error.lower()


def test_missing_blend_file_is_a_failure_with_a_reason(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    result, _ = do_render(blender_module, tmp_path / "nope.blend", tmp_path / "out", [1])
    assert not result.ok
    assert result.error and "nope.blend" in result.error
    # and it did not go on to render Blender's default scene instead (minutes per frame)
    assert not list((tmp_path / "out").glob("frame_*"))


def test_scene_python_never_runs_when_rendering(
    blender_module: BlenderInstall, autoexec_blend: Path, autoexec_marker: Path, tmp_path: Path
) -> None:
    driver_marker = Path(f"{autoexec_marker}-driver")
    result, _ = do_render(blender_module, autoexec_blend, tmp_path, [1, 2])
    assert result.ok, result.error
    assert not autoexec_marker.exists(), "the .blend's registered text block ran"
    assert not driver_marker.exists(), "the .blend's driver expression ran"

    # And the test can fail: the same file opened *with* scripts trusted runs both.
    trusting = (
        "import bpy, sys; "
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=True); "
        "bpy.context.scene.frame_set(2)"
    )
    subprocess.run([sys.executable, "-c", trusting, str(autoexec_blend)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    assert autoexec_marker.exists() and driver_marker.exists()
    autoexec_marker.unlink()
    driver_marker.unlink()


def test_scene_python_never_runs_in_blender_34(
    blender_executable: BlenderInstall, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    driver_marker = Path(f"{marker}-driver")
    blend = make_scene(
        tmp_path / "evil.blend", "autoexec", install=blender_executable, marker=marker,
        **SCENE_OPTIONS,  # type: ignore[arg-type]
    )  # fmt: skip
    result, _ = do_render(blender_executable, blend, tmp_path / "out", [1, 2])
    assert result.ok, result.error
    assert not marker.exists() and not driver_marker.exists()
    assert blender_executable.path
    # -y (trust scripts) on the same file runs them: the scene really is hostile.
    subprocess.run([blender_executable.path, "-b", "-y", str(blend), "--python-expr",
                    "import bpy; bpy.context.scene.frame_set(2)"], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    assert marker.exists() and driver_marker.exists()


def test_cancel_stops_a_real_render_quickly(blender_module: BlenderInstall, tmp_path: Path) -> None:
    """A canceled task must free the machine: Blender (and its group) gone in seconds."""
    import os
    import threading
    import time

    from farmhand.worker.blender.events import FrameStarted

    blend = make_scene(
        tmp_path / "slow.blend", "slow", install=blender_module, width=640, height=480,
        frames="1-2", samples=64,
    )  # fmt: skip
    started = threading.Event()
    cancel = threading.Event()
    pids: list[int] = []
    box: list[RenderResult] = []

    def on_event(event: Event) -> None:
        if isinstance(event, FrameStarted):
            started.set()

    def on_log(_line: str) -> None:
        if not pids:
            pids.extend(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_driver(p))

    thread = threading.Thread(
        target=lambda: box.append(
            render(
                blender_module,
                RenderRequest(blend, [1, 2], tmp_path / "out"),
                log_path=tmp_path / "log",
                on_event=on_event,
                on_log=on_log,
                cancel=cancel,
            )
        )
    )
    thread.start()
    assert started.wait(60)
    time.sleep(0.5)
    began = time.monotonic()
    cancel.set()
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - began < 5
    assert box[0].error == "canceled" and not box[0].ok
    assert not list((tmp_path / "out").glob("frame_0002*"))
    assert pids, "found the Blender process"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_driver(pid: str) -> bool:
    """A driver started by this test process (not another test's, running alongside)."""
    import os

    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return parent == os.getpid() and "driver.py" in Path(f"/proc/{pid}/cmdline").read_text()
    except (OSError, ValueError, IndexError):
        return False


def _driver_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_driver(p.name)]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_a_scene_set_to_write_video_renders_png_frames(
    request: pytest.FixtureRequest, tmp_path: Path, fixture: str
) -> None:
    """FFMPEG output would fail the task; frames are what a farm collects (Blender 5 needs
    the media type switched before the format can be)."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = make_scene(
        tmp_path / "video.blend", "animated", install=install, output_format="FFMPEG",
        **SCENE_OPTIONS,  # type: ignore[arg-type]
    )  # fmt: skip
    result, events = do_render(install, blend, tmp_path / "out", [1])
    opened = next(e for e in events if isinstance(e, Opened))
    assert opened.facts["output_format"] == "FFMPEG"
    assert result.ok, result.error
    assert verify_image(result.frames[1], WIDTH, HEIGHT).format == "PNG"
    # and an explicit override from video to EXR works as well
    result, _ = do_render(install, blend, tmp_path / "exr", [1], output_format="OPEN_EXR")
    assert result.ok, result.error
    assert verify_image(result.frames[1], WIDTH, HEIGHT).format == "OPEN_EXR"


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_one_blender_serves_many_commands_without_leaking_overrides(
    request: pytest.FixtureRequest, tmp_path: Path, fixture: str
) -> None:
    """The driver protocol allows a persistent session: open once, render twice."""
    import json

    from farmhand.worker.blender.events import Bye, parse_event_line
    from farmhand.worker.blender.process import blender_command

    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = make_scene(tmp_path / "s.blend", "animated", install=install, **SCENE_OPTIONS)  # type: ignore[arg-type]
    out = str(tmp_path / "out")
    commands = [
        {"cmd": "open", "blend": str(blend)},
        {"cmd": "render", "frames": [1], "output_dir": out, "file_stem": "a_",
         "output_format": "OPEN_EXR", "resolution_percentage": 50},
        {"cmd": "render", "frames": [2], "output_dir": out, "file_stem": "b_"},
        {"cmd": "quit"},
    ]  # fmt: skip
    finished = subprocess.run(
        blender_command(install),
        input="".join(json.dumps(c) + "\n" for c in commands),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-2000:]
    events = [e for e in map(parse_event_line, finished.stdout.splitlines()) if e is not None]
    saved = [e for e in events if isinstance(e, FrameSaved)]
    assert [(e.path.name, e.width, e.height) for e in saved] == [
        ("a_0001.exr", WIDTH // 2, HEIGHT // 2),
        ("b_0002.png", WIDTH, HEIGHT),
    ]
    verify_image(saved[0].path, WIDTH // 2, HEIGHT // 2)
    verify_image(saved[1].path, WIDTH, HEIGHT)
    assert isinstance(events[-1], Bye)


@pytest.mark.parametrize(
    ("fixture", "scene"),
    [("blender_module", "animated_blend"), ("blender_executable", "animated_blend_34")],
)
def test_workbench_renders_in_both_blenders(
    fixture: str, scene: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The engine override: the Cycles scene rendered by Workbench (no GPU needed)."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend: Path = request.getfixturevalue(scene)
    result, events = do_render(install, blend, tmp_path, [1], engine="BLENDER_WORKBENCH")
    assert result.ok, result.error
    verify_image(result.frames[1], WIDTH, HEIGHT)
    assert not any(isinstance(event, Progress) for event in events), "Workbench has no samples"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "scene"),
    [("blender_module", "animated_blend"), ("blender_executable", "animated_blend_34")],
)
def test_eevee_renders_headless_here(
    fixture: str, scene: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """This machine has no GPU, but both Blenders render EEVEE through Mesa's software
    EGL/OpenGL (slowly: 15-100 s for 64x48). Where EEVEE cannot, the failure says why
    (tests/unit/test_blender_failures.py)."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend: Path = request.getfixturevalue(scene)
    result, events = do_render(install, blend, tmp_path, [1], engine="BLENDER_EEVEE", samples=4)
    assert result.ok, result.error
    verify_image(result.frames[1], WIDTH, HEIGHT)
    assert any(isinstance(e, Progress) and e.samples == 4 for e in events)


def build(install: BlenderInstall, out: Path, *options: str) -> Path:
    """The animated test scene with extra builder options (File Output node, view)."""
    base = ["--out", str(out), "--frames", "1-2", "--samples", "2", "--width", "64"]
    run_builder(install, BUILDER, [*base, "--height", "48", *options], out, "a test scene")
    return out


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_exr_frames_get_previews_and_file_output_files_are_collected(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A File Output node aimed at the artist's folder writes into the task's outputs
    instead, one file per frame; every EXR frame has a JPEG preview made by Blender."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    artist = tmp_path / "home" / "anna" / "passes"
    blend = build(install, tmp_path / "passes.blend", "--file-output", f"{artist}/")
    result, events = do_render(install, blend, tmp_path / "out", [1, 2], output_format="OPEN_EXR")
    assert result.ok, result.error
    saved = {e.frame: e for e in events if isinstance(e, FrameSaved)}
    assert sorted(saved) == [1, 2]
    for frame, event in saved.items():
        assert verify_image(event.path, WIDTH, HEIGHT).format == "OPEN_EXR"
        assert event.preview is not None
        assert verify_image(event.preview, WIDTH, HEIGHT).format == "JPEG"
        assert len(event.extras) == 1
        extra = event.extras[0]
        assert extra.is_relative_to(tmp_path / "out" / "passes")
        assert f"{frame:04d}" in extra.name
        assert verify_image(extra, WIDTH, HEIGHT).format == "PNG"
    assert not artist.exists(), "nothing is written where the .blend's node pointed"


ESCAPING_SLOT = """
import sys
import bpy
slot, out = sys.argv[sys.argv.index("--") + 1 :]
scene = bpy.context.scene
tree = getattr(scene, "compositing_node_group", None) or scene.node_tree
node = next(node for node in tree.nodes if node.type == "OUTPUT_FILE")
if hasattr(node, "file_output_items"):  # Blender 5: the file name before each item's
    node.file_name = slot
else:
    node.file_slots[0].path = slot
bpy.ops.wm.save_as_mainfile(filepath=out)
"""


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_a_file_output_path_with_dotdot_stays_in_the_passes_folder(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A File Output slot path that climbs out (`../../../<outside>/pwn_`) writes nothing
    outside the task's passes folder: the pass arrives under the path without its `..`,
    and the task's log says what the path was changed to."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    plain = build(install, tmp_path / "plain.blend", "--file-output", "/home/anna/passes/")
    outside = tmp_path / "outside"
    slot = "../" * 30 + f"{str(outside).lstrip('/')}/pwn_"
    script = tmp_path / "escape.py"
    script.write_text(ESCAPING_SLOT)
    blend = tmp_path / "escape.blend"
    if install.kind == "module":
        opening = f"import bpy; bpy.ops.wm.open_mainfile(filepath={str(plain)!r})"
        run = f"{opening}; exec(open({str(script)!r}).read())"
        command = [install.python, "-c", run, "--", slot, str(blend)]
    else:
        assert install.path is not None
        command = [install.path, "-b", str(plain), "--python-exit-code", "1",
                   "--python", str(script), "--", slot, str(blend)]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=300, check=True)
    out = tmp_path / "out"
    result, events = do_render(install, blend, out, [1, 2])
    assert result.ok, result.error
    assert not outside.exists(), "a File Output file was written outside the task's folder"
    inside = out / "passes" / "00-File_Output" / str(outside).lstrip("/")
    for event in (e for e in events if isinstance(e, FrameSaved)):
        assert len(event.extras) == 1
        extra = event.extras[0]
        assert extra.parent == inside, extra
        assert extra.name.startswith("pwn_") and f"{event.frame:04d}" in extra.name
        verify_image(extra, WIDTH, HEIGHT)
    log = (out / "blender.log").read_text()
    assert f"{slot!r} is written as {str(outside).lstrip('/') + '/pwn_'!r}" in log


def mean_brightness(path: Path) -> float:
    with Image.open(path) as image:
        return float(ImageStat.Stat(image.convert("L")).mean[0])


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_the_preview_follows_the_scenes_colour_management(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Same light, same EXR data; the Filmic scene's preview is not the Standard one's."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    previews = {}
    for view in ("Standard", "Filmic"):
        blend = build(install, tmp_path / f"{view}.blend", "--view-transform", view)
        result, events = do_render(install, blend, tmp_path / view, [1], output_format="OPEN_EXR")
        assert result.ok, result.error
        preview = next(e.preview for e in events if isinstance(e, FrameSaved))
        assert preview is not None
        previews[view] = mean_brightness(preview)
    assert abs(previews["Standard"] - previews["Filmic"]) > 3, previews


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_multilayer_exr_renders_and_is_verified(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = build(install, tmp_path / "ml.blend")
    result, _ = do_render(
        install, blend, tmp_path / "out", [1], output_format="OPEN_EXR_MULTILAYER"
    )
    assert result.ok, result.error
    assert result.frames[1].name == "frame_0001.exr"
    assert verify_image(result.frames[1], WIDTH, HEIGHT).format == "OPEN_EXR"


@pytest.mark.parametrize(
    ("fixture", "scene"),
    [("blender_module", "animated_blend"), ("blender_executable", "animated_blend_34")],
)
def test_a_python_error_in_the_driver_is_the_failure_reason(
    fixture: str, scene: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An override Blender refuses raises inside the driver: its message is the reason."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend: Path = request.getfixturevalue(scene)
    result, _ = do_render(install, blend, tmp_path, [1], engine="NO_SUCH_ENGINE")
    assert not result.ok
    assert result.error is not None
    assert "NO_SUCH_ENGINE" in result.error and "not found" in result.error


@pytest.mark.parametrize(
    ("fixture", "scene"),
    [("blender_module", "animated_blend"), ("blender_executable", "animated_blend_34")],
)
def test_a_real_blender_killed_mid_frame_is_reported_as_out_of_memory(
    fixture: str, scene: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """What the kernel's OOM killer does: SIGKILL while a frame renders."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend: Path = request.getfixturevalue(scene)
    killed: list[int] = []

    def kill_at_frame_start(event: Event) -> None:
        if isinstance(event, FrameStarted) and not killed:
            killed.append(event.frame)
            for pid in _driver_pids():
                os.kill(pid, signal.SIGKILL)

    request_ = RenderRequest(blend, [1, 2, 3], tmp_path)
    result = render(install, request_, log_path=tmp_path / "log", on_event=kill_at_frame_start)
    assert killed, "a frame started"
    assert not result.ok
    assert result.exit_code == -9
    assert result.error is not None
    assert "killed by signal 9" in result.error and "out of memory?" in result.error
