"""The Blender add-on, in real Blenders, submitting to a real manager.

Blender 3.4 (Debian's executable) gets the add-on the way a person does, with
`farmhand addon install`; the bpy 5.0 module installs the zip with Blender's own
operator. Each Blender runs with its user config, scripts and HOME in a temporary
folder (the real user's Blender is never touched) and without farmhand's venv on its
PATH, as a Blender started from a desktop menu. The add-on's settings come from its
preferences, not FARMHAND_URL / FARMHAND_TOKEN (removed from the environment).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.shared.schemas import JobDetail, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.test_farm_end_to_end import finished
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.blender
FARMHAND = str(Path(sys.executable).with_name("farmhand"))
RESULT = "addon-test-result "


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("farm")) as farm:
        farm.start_manager()
        yield farm


def blender_env(root: Path, farm: LocalFarm, token: str | None = None) -> dict[str, str]:
    """A Blender's environment: its own config folders, the farm in TEST_* variables only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FARMHAND_", "BLENDER_"))}
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(venv_bin)]
    assert shutil.which("farmhand", path=os.pathsep.join(path)) is None, "no farmhand on PATH"
    env.update(
        PATH=os.pathsep.join(path),
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "home" / ".config"),
        BLENDER_USER_CONFIG=str(root / "config"),
        BLENDER_USER_SCRIPTS=str(root / "scripts"),
        FARMHAND_CONFIG=str(root / "no-farmhand-config.toml"),
        TEST_URL=farm.url,
        TEST_TOKEN=token or farm.admin_token,
    )
    return env


def install_addon(blender: BlenderInstall, root: Path, farm: LocalFarm) -> dict[str, str]:
    """`farmhand addon install` into that Blender's throw-away user folders under `root`;
    the environment to start that Blender with."""
    assert blender.path is not None
    env = blender_env(root, farm)
    installed = subprocess.run(
        [FARMHAND, "addon", "install", "--blender", blender.path],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (root / "scripts" / "addons" / "farmhand_addon" / "__init__.py").is_file()
    assert (root / "config" / "userpref.blend").is_file(), "enabled for the next start"
    return env


SUBMIT_AND_REPORT = """try:
    bpy.ops.farmhand.submit()
    outcome = {{"ok": True}}
except RuntimeError as error:
    outcome = {{"ok": False, "error": str(error)}}
print("{marker}" + json.dumps(outcome), flush=True)
"""
"""The end of a script that presses Submit: prints after `marker` whether it went
through, or the error Blender reported (to `.format` with the rest)."""


SUBMIT = (
    """
import json, os, sys
import bpy
prefs = bpy.context.preferences.addons["farmhand_addon"].preferences
prefs.manager_url = os.environ["TEST_URL"]
prefs.api_token = os.environ["TEST_TOKEN"]
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 2, 3  # an unsaved change: the add-on saves it first
scene.farmhand.job_name = "{name}"
scene.farmhand.chunk_size = 1
scene.farmhand.priority = 70
scene.farmhand.device = "CPU"
scene.farmhand.required_tags = "addon-test, shot-10"
"""
    + SUBMIT_AND_REPORT
)

INSTALL_ZIP = """
import bpy
bpy.ops.preferences.addon_install(filepath={zip!r}, overwrite=True)
bpy.ops.preferences.addon_enable(module="farmhand_addon")
"""


def outcome(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    answer: dict[str, object] = json.loads(lines[-1][len(RESULT) :])
    return answer


def only_job(farm: LocalFarm, name: str) -> JobDetail:
    with farm.client() as client:
        found = [job for job in client.list_jobs() if job.name == name]
        assert len(found) == 1, [job.name for job in client.list_jobs()]
        return client.get_job(found[0].id)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_submitted_as_set(farm: LocalFarm, name: str, blend: Path, before: str) -> JobDetail:
    """The job has the panel's settings, the scene's (changed) range, and the file as
    saved with that change (`before`: its hash as it was)."""
    job = only_job(farm, name)
    settings = job.settings
    assert (settings.frame_start, settings.frame_end, settings.frame_step) == (2, 3, 1)
    assert settings.chunk_size == 1 and job.priority == 70, settings
    assert settings.device == "CPU" and settings.required_tags == ["addon-test", "shot-10"]
    assert job.main_file == blend.name and job.frames_total == 2, job
    with farm.client() as client:
        inputs = [f for f in client.list_files(job.id) if f.kind == "input"]
    assert [f.path for f in inputs] == [blend.name], inputs
    assert sha256(blend) != before, "the add-on saved the change before submitting"
    assert inputs[0].sha256 == sha256(blend), "the farm got the .blend as saved"
    return job


def test_blender_34_installs_the_addon_and_submits(
    farm: LocalFarm, animated_blend_34: Path, blender_executable: BlenderInstall, tmp_path: Path
) -> None:
    env = install_addon(blender_executable, tmp_path, farm)
    blend = tmp_path / "shot" / "turntable.blend"
    blend.parent.mkdir()
    shutil.copy(animated_blend_34, blend)
    before = sha256(blend)
    script = SUBMIT.format(name="turntable 34", marker=RESULT)
    assert blender_executable.path is not None
    result = subprocess.run(
        [blender_executable.path, "-b", str(blend), "--python-exit-code", "1",
         "--python-expr", script],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert outcome(result) == {"ok": True}, result.stdout[-3000:]
    assert "turntable.blend was saved first" in result.stdout, result.stdout[-3000:]
    job = assert_submitted_as_set(farm, "turntable 34", blend, before)

    # The job asked for these tags: a worker with them renders it.
    worker = farm.start_worker(
        "w34", "--tag", "addon-test", "--tag", "shot-10", blender=blender_executable.path
    )
    try:
        done = wait_for(lambda: finished(farm, job.id), timeout=120, what="the job to finish")
    finally:
        worker.stop()
    assert done.status == JobStatus.COMPLETED and done.frames_done == 2, done


def bpy_run(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Python with the bpy module (Blender 5.0), as its own process."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
        check=False,
    )  # fmt: skip


@pytest.fixture
def addon_zip(tmp_path: Path) -> Path:
    made = subprocess.run(
        [FARMHAND, "addon", "zip", "-o", str(tmp_path / "addon.zip")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return tmp_path / "addon.zip"


def copy_of(blend: Path, dest: Path) -> Path:
    """A copy of a scene in a folder of its own (the add-on saves beside it)."""
    dest.parent.mkdir()
    shutil.copy(blend, dest)
    return dest


def opening(addon_zip: Path, blend: Path) -> str:
    """bpy code installing the add-on from its zip and opening `blend`."""
    return (
        INSTALL_ZIP.format(zip=str(addon_zip))
        + f"bpy.ops.wm.open_mainfile(filepath={str(blend)!r})\n"
    )


def test_bpy_5_submits_a_saved_file(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    blend = copy_of(animated_blend, tmp_path / "shot" / "orbit.blend")
    before = sha256(blend)
    code = opening(addon_zip, blend) + SUBMIT.format(name="orbit 5", marker=RESULT)
    result = bpy_run(blender_env(tmp_path, farm), code)
    assert outcome(result) == {"ok": True}, result.stdout[-3000:]
    assert_submitted_as_set(farm, "orbit 5", blend, before)


POINTED = """
import json, os
import bpy
prefs = bpy.context.preferences.addons["farmhand_addon"].preferences
prefs.manager_url = os.environ["TEST_URL"]
prefs.api_token = os.environ["TEST_TOKEN"]
scene = bpy.context.scene
"""
"""The start of a script driving the add-on: it points at the test's farm."""
SUBMITTED = """
bpy.ops.farmhand.submit()
print("{marker}" + json.dumps({{"ok": True}}), flush=True)
"""
"""The end: Submit pressed, and the script's outcome printed for `outcome`."""

STILL = """
scene.frame_current = 3
scene.farmhand.job_name = "poster"
scene.farmhand.use_tiles = True
scene.farmhand.tile_columns, scene.farmhand.tile_rows = 2, 1
scene.farmhand.make_video = True  # not for a still: left out
"""

TILED_RANGE = """
scene.frame_current = 7  # not what is sent: the range below is
scene.farmhand.job_name = "dome"
scene.farmhand.use_tiles = True
scene.farmhand.tile_columns, scene.farmhand.tile_rows = 2, 1
scene.farmhand.tile_current_frame = False
scene.farmhand.use_scene_frames = False
scene.farmhand.frame_start, scene.farmhand.frame_end = 2, 3
scene.farmhand.make_video = True
"""


def submitted_by_bpy(
    farm: LocalFarm, blend: Path, addon_zip: Path, tmp_path: Path, settings: str, name: str
) -> JobDetail:
    """The job the add-on in bpy makes of `blend` with the panel's `settings` (a script's
    lines on `scene`), named `name`."""
    code = opening(addon_zip, blend) + (POINTED + settings + SUBMITTED).format(marker=RESULT)
    result = bpy_run(blender_env(tmp_path, farm), code)
    assert outcome(result) == {"ok": True}, result.stdout[-3000:] + result.stderr[-3000:]
    return only_job(farm, name)


def test_bpy_5_submits_the_frame_on_screen_as_a_tiled_still(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    blend = copy_of(animated_blend, tmp_path / "still" / "poster.blend")
    job = submitted_by_bpy(farm, blend, addon_zip, tmp_path, STILL, "poster")
    settings = job.settings
    assert (settings.frame_start, settings.frame_end) == (3, 3)
    assert settings.tiles is not None and (settings.tiles.columns, settings.tiles.rows) == (2, 1)
    assert settings.video is None
    assert sorted(t.type for t in job.tasks) == ["merge", "render", "render"]


def test_bpy_5_submits_a_frame_range_in_tiles_with_a_video(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    blend = copy_of(animated_blend, tmp_path / "dome" / "dome.blend")
    job = submitted_by_bpy(farm, blend, addon_zip, tmp_path, TILED_RANGE, "dome")
    settings = job.settings
    assert (settings.frame_start, settings.frame_end) == (2, 3)
    assert settings.tiles is not None and (settings.tiles.columns, settings.tiles.rows) == (2, 1)
    assert settings.video is not None, "a tiled range may have its video"
    # Each frame: two tiles and their merge; then one video of the merged frames.
    assert sorted(t.type for t in job.tasks) == ["merge"] * 2 + ["render"] * 4 + ["video"]
    assert sorted({t.tile.frame for t in job.tasks if t.tile}) == [2, 3]


VIDEO_AND_CAP = """
scene.farmhand.job_name = "spot"
scene.farmhand.use_scene_frames = False
scene.farmhand.frame_start, scene.farmhand.frame_end = 1, 2
scene.farmhand.make_video = True
scene.farmhand.video_codec = "vp9"
scene.farmhand.video_container = "webm"
scene.farmhand.max_workers = 2
"""


def test_bpy_5_submits_a_vp9_video_and_a_worker_cap(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    blend = copy_of(animated_blend, tmp_path / "spot" / "spot.blend")
    job = submitted_by_bpy(farm, blend, addon_zip, tmp_path, VIDEO_AND_CAP, "spot")
    video = job.settings.video
    assert video is not None and (video.codec, video.container) == ("vp9", "webm")
    assert job.settings.max_workers == 2


def test_bpy_5_refuses_a_never_saved_file(
    farm: LocalFarm, blender_module: BlenderInstall, addon_zip: Path, tmp_path: Path
) -> None:
    with farm.client() as client:
        before = len(client.list_jobs())
    code = INSTALL_ZIP.format(zip=str(addon_zip)) + SUBMIT.format(name="unsaved", marker=RESULT)
    answer = outcome(bpy_run(blender_env(tmp_path, farm), code))
    assert answer["ok"] is False
    assert "save the .blend first" in str(answer["error"]), answer
    with farm.client() as client:
        assert len(client.list_jobs()) == before, "no job was created"


def test_bpy_5_says_a_bad_token_in_one_line(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    blend = tmp_path / "badtoken.blend"
    shutil.copy(animated_blend, blend)
    code = (
        INSTALL_ZIP.format(zip=str(addon_zip))
        + f"bpy.ops.wm.open_mainfile(filepath={str(blend)!r})\n"
        + SUBMIT.format(name="bad token", marker=RESULT)
    )
    answer = outcome(bpy_run(blender_env(tmp_path, farm, token="fh_api_not-a-token"), code))
    assert answer["ok"] is False
    error = str(answer["error"]).strip()
    assert "HTTP 401" in error and "\n" not in error and "Traceback" not in error, error
    with farm.client() as client:
        assert all(job.name != "bad token" for job in client.list_jobs())


def test_bpy_5_says_where_to_set_a_missing_token(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    """The CLI's words for it say `pass --token`, which an artist in Blender cannot: the
    submit said so (the auto-refresh already pointed to the preferences)."""
    blend = tmp_path / "notoken.blend"
    shutil.copy(animated_blend, blend)
    code = (
        INSTALL_ZIP.format(zip=str(addon_zip))
        + f"bpy.ops.wm.open_mainfile(filepath={str(blend)!r})\n"
        + SUBMIT.format(name="no token", marker=RESULT)
    )
    env = blender_env(tmp_path, farm)
    env["TEST_TOKEN"] = ""
    answer = outcome(bpy_run(env, code))
    assert answer["ok"] is False
    error = str(answer["error"]).strip()
    assert "Preferences > Add-ons > farmhand" in error and "--token" not in error, error


PANEL_LAYOUT = """
import json
import bpy
ui = __import__("sys").modules["farmhand_addon.ui"]


class Layout:
    def __init__(self, shown):
        self.shown = shown
        self.alert = self.enabled = True

    def row(self):
        return self

    def box(self):
        return self

    def label(self, text="", icon=""):
        self.shown.append(text)

    def operator(self, idname, text=None, icon=""):
        self.shown.append("[" + (idname if text is None else text) + "]")

    def progress(self, factor=0.0, text=""):
        self.shown.append(text)
"""
"""The start of a script that draws the add-on's panel into a `Layout` that notes
what it shows (no window needed); no braces, so it goes before `.format`ted text."""


PANEL = (
    PANEL_LAYOUT
    + """

# Job 15 was submitted and is followed; a second submit was then canceled while packing.
ui.STATE.job_id, ui.STATE.job_status = 15, "completed 100% (60/60 frames)"
ui.STATE.message = "job 15 queued"
followed = []
ui.FARMHAND_PT_render.draw_state(None, Layout(followed))
ui._apply({{"event": "canceled", "call": ui.STATE.call}})
canceled = []
ui.FARMHAND_PT_render.draw_state(None, Layout(canceled))
print("{marker}" + json.dumps({{"followed": followed, "canceled": canceled}}), flush=True)
"""
)


def test_a_canceled_submit_says_so_when_an_earlier_job_is_shown(
    farm: LocalFarm, blender_module: BlenderInstall, addon_zip: Path, tmp_path: Path
) -> None:
    """With an earlier job in the panel, a canceled submit showed only that job's line,
    which read as if it were the job just sent."""
    code = INSTALL_ZIP.format(zip=str(addon_zip)) + PANEL.format(marker=RESULT)
    answer = outcome(bpy_run(blender_env(tmp_path, farm), code))
    assert answer["followed"] == [
        "[Submit to farm]",
        "Job 15: completed 100% (60/60 frames)",
        "[farmhand.refresh]",
        "[farmhand.open_job]",
    ], answer
    canceled = answer["canceled"]
    assert isinstance(canceled, list), answer
    assert "submit canceled" in canceled, canceled
    assert "Job 15 (earlier): completed 100% (60/60 frames)" in canceled, canceled


FORMATS = """
ui = __import__("sys").modules["farmhand_addon.ui"]


class Layout:
    \"\"\"Whatever the panel asks of a layout, keeping the labels it shows.\"\"\"

    def __init__(self, shown):
        self.shown = shown

    def __getattr__(self, name):  # column, row, split, prop, operator...: more of it
        return lambda *args, **kwargs: self

    def label(self, text="", icon=""):
        self.shown.append(text)


class Panel:
    draw = ui.FARMHAND_PT_render.draw
    draw_frames = ui.FARMHAND_PT_render.draw_frames
    draw_state = ui.FARMHAND_PT_render.draw_state

    def __init__(self, shown):
        self.layout = Layout(shown)


def panel():
    shown = []
    Panel(shown).draw(bpy.context)
    return shown


scene.farmhand.job_name = "targa shot"
as_png = panel()
scene.render.image_settings.file_format = "TARGA"
as_targa = panel()
bpy.ops.farmhand.submit()
print("{marker}" + json.dumps({{"png": as_png, "targa": as_targa}}), flush=True)
"""


def test_bpy_5_says_a_targa_scene_renders_png_frames_before_submitting(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    """The farm renders a scene saved as Targa (or DPX, a movie...) as PNG: the panel says
    so under the frames, and the submit's report too, as a warning."""
    blend = copy_of(animated_blend, tmp_path / "targa" / "targa.blend")
    code = opening(addon_zip, blend) + (POINTED + FORMATS).format(marker=RESULT)
    result = bpy_run(blender_env(tmp_path, farm), code)
    answer = outcome(result)
    note = ["Frames come out as PNG:", "the farm does not collect TARGA"]
    png, targa = answer["png"], answer["targa"]
    assert isinstance(png, list) and not set(note) & set(png), png
    assert isinstance(targa, list) and targa[targa.index(note[0]) + 1] == note[1], targa
    warned = [line for line in result.stdout.splitlines() if line.startswith("Warning:")]
    assert any(
        "job" in line and line.endswith("Frames come out as PNG: the farm does not collect TARGA")
        for line in warned
    ), result.stdout[-3000:]
    assert only_job(farm, "targa shot").settings.output_format is None, "the scene's own"


OUTAGE = (
    PANEL_LAYOUT
    + """

def drawn(*events):
    for event in events:
        ui._apply({{**event, "call": ui.STATE.call}})
    shown = []
    ui.FARMHAND_PT_render.draw_state(None, Layout(shown))
    return shown


# A submit uploading when the manager stops answering, then answers again.
ui._begin("submitting")
retrying = {{"event": "retrying", "message": "the manager at http://m:1 does not answer; retrying"}}
answers = drawn({{"event": "upload", "done": 17, "total": 100}})
down = drawn(retrying)
resumed = {{"event": "upload", "done": 40, "total": 100}}
back = drawn({{"event": "reconnected", "after": 3}}, resumed)
gone = drawn(retrying, {{"event": "error", "message": "cannot reach the manager"}})
print("{marker}" + json.dumps({{"answers": answers, "down": down, "back": back, "gone": gone}}))
"""
)


def test_bpy_5_says_at_once_that_the_manager_does_not_answer_until_it_does(
    farm: LocalFarm, blender_module: BlenderInstall, addon_zip: Path, tmp_path: Path
) -> None:
    """The panel sat on "uploading 17%" with Cancel while the manager was down: nothing
    said why until the CLI gave up, two minutes later."""
    code = INSTALL_ZIP.format(zip=str(addon_zip)) + OUTAGE.format(marker=RESULT)
    answer = outcome(bpy_run(blender_env(tmp_path, farm), code))
    said = "the manager at http://m:1 does not answer; retrying — Cancel to stop"
    assert answer["answers"] == ["uploading 17%", "[]"], answer
    assert answer["down"] == ["uploading 17%", "[]", said], answer
    assert answer["back"] == ["uploading 40%", "[]"], "cleared once it answered"
    gone = answer["gone"]
    assert isinstance(gone, list) and said not in gone, "the error replaces it"
    assert "cannot reach the manager" in gone and "[Submit to farm]" in gone, gone


MISSING_LIBRARY = (
    """
image = bpy.data.images.new("gone", 8, 8)
image.source = "FILE"
image.filepath = "//textures/gone.png"
image.use_fake_user = True
scene.farmhand.job_name = "missing"
"""
    + SUBMIT_AND_REPORT
)


def test_bpy_5_says_what_to_do_in_blender_about_missing_files(
    farm: LocalFarm,
    animated_blend: Path,
    blender_module: BlenderInstall,
    addon_zip: Path,
    tmp_path: Path,
) -> None:
    """The CLI's words said "submit with --allow-missing", which the add-on cannot."""
    blend = copy_of(animated_blend, tmp_path / "missing" / "missing.blend")
    code = opening(addon_zip, blend) + (POINTED + MISSING_LIBRARY).format(marker=RESULT)
    answer = outcome(bpy_run(blender_env(tmp_path, farm), code))
    assert answer["ok"] is False, answer
    error = str(answer["error"])
    assert "gone.png" in error and "--allow-missing" not in error, error
    assert "File > External Data > Report Missing Files" in error, error
    with farm.client() as client:
        assert all(job.name != "missing" for job in client.list_jobs()), "nothing submitted"
