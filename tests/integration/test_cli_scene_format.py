"""`farmhand submit` says when a scene's own output format comes out as PNG frames.

The farm renders a scene saved as Targa (JPEG 2000, DPX, ...) or as a movie as PNG frames
(`images.rendered_format`); the web form and the add-on say so, and the CLI, which never
runs Blender at submit, reads the format from the .blend with blender-asset-tracer.
Scenes are saved at test time by bpy 5.0 and Debian's Blender 3.4; the CLI runs as its
own process against a real manager.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from farmhand.client.scene_format import saved_format
from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_scene, run_builder
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import farm_fixture
from tests.integration.test_cli_submit_options import PYTHON_WARNING, farmhand

pytestmark = pytest.mark.blender

BLENDERS = ["blender_module", "blender_executable"]
HERE = Path(__file__).parent
TWEAK = HERE / "scene_tweak.py"
ALL_FORMATS = HERE / "scene_formats_builder.py"


# A manager and no worker: the jobs only need to be queued.
farm = farm_fixture()


def scene_writing(install: BlenderInstall, folder: Path, file_format: str) -> Path:
    """The animated test scene saved by `install` with its output set to `file_format`."""
    base = folder / "base.blend"
    if not base.exists():
        make_scene(base, "animated", install=install, width=32, height=18, frames="1-2",
                   samples=1)  # fmt: skip
    media = "VIDEO" if file_format == "FFMPEG" else "IMAGE"
    if file_format == "OPEN_EXR_MULTILAYER":
        media = "MULTI_LAYER_IMAGE"
    settings: list[tuple[str, Any]] = [
        ("render.image_settings.media_type", media),  # Blender 5; skipped by 3.4
        ("render.image_settings.file_format", file_format),
    ]
    out = folder / f"{file_format.lower()}.blend"
    run_builder(install, TWEAK, [str(base), str(out), json.dumps(settings)], out, out.name)
    return out


def warnings_in(stderr: str) -> list[str]:
    lines = PYTHON_WARNING.sub("", stderr).splitlines()
    return [line for line in lines if line.startswith("warning:")]


@pytest.fixture(scope="module", params=BLENDERS)
def scenes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A scene per format, saved by bpy 5.0 and by Blender 3.4 in turn."""
    install: BlenderInstall = request.getfixturevalue(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    formats = ["TARGA", "FFMPEG", "PNG", "TIFF", "OPEN_EXR", "OPEN_EXR_MULTILAYER"]
    return {name: scene_writing(install, folder, name) for name in formats}


def test_a_targa_scene_is_said_to_render_png_frames(
    farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    result = farmhand(farm, "submit", str(scenes["TARGA"]), "--frames", "1-2")
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == [
        "warning: the scene writes TARGA; the farm renders its frames as PNG "
        "(--format PNG, JPEG, OPEN_EXR, OPEN_EXR_MULTILAYER to choose)"
    ], result.stderr
    assert "job " in result.stdout, "the warning does not stop the submit"
    chosen = farmhand(farm, "submit", str(scenes["TARGA"]), "--format", "jpeg")
    assert chosen.returncode == 0, chosen.stderr
    assert warnings_in(chosen.stderr) == [], "with --format the job says what it gets"


def test_a_movie_scene_is_said_to_give_png_frames_and_no_movie_unless_video(
    farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    result = farmhand(farm, "submit", str(scenes["FFMPEG"]), "--frames", "1-2")
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == [
        "warning: the scene writes FFMPEG; its frames come as PNG and no movie unless --video"
    ], result.stderr
    video = farmhand(farm, "submit", str(scenes["FFMPEG"]), "--frames", "1-2", "--video")
    assert video.returncode == 0, video.stderr
    assert warnings_in(video.stderr) == [
        "warning: the scene writes FFMPEG; its frames come as PNG"
    ], video.stderr


@pytest.mark.parametrize("kept", ["PNG", "TIFF", "OPEN_EXR", "OPEN_EXR_MULTILAYER"])
def test_a_scene_in_a_format_the_farm_keeps_gets_no_warning(
    farm: LocalFarm, scenes: dict[str, Path], kept: str
) -> None:
    assert saved_format(scenes[kept]) == kept
    result = farmhand(farm, "submit", str(scenes[kept]), "--frames", "1-2")
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == [], result.stderr


@pytest.mark.parametrize("fixture", BLENDERS)
def test_every_format_blender_saves_is_read_back_by_its_name(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The R_IMF_IMTYPE_* numbers in the file against the names Blender's Python gives
    them, for every output format each Blender offers."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    listing = tmp_path / "formats.json"
    run_builder(install, ALL_FORMATS, [str(tmp_path)], listing, "a scene per format")
    saved: dict[str, str] = json.loads(listing.read_text())
    assert {"PNG", "TARGA", "FFMPEG", "OPEN_EXR", "TIFF", "JPEG"} <= set(saved.values())
    read = {name: saved_format(Path(path)) for path, name in saved.items()}
    assert read == {name: name for name in saved.values()}


def test_a_file_that_cannot_be_read_has_no_format(tmp_path: Path) -> None:
    """Never a reason to fail a submit: the warning is only left out."""
    junk = tmp_path / "junk.blend"
    junk.write_bytes(b"BLENDER-v304REND" + bytes(40))
    assert saved_format(junk) is None
    assert saved_format(tmp_path / "absent.blend") is None


@pytest.mark.parametrize("fixture", BLENDERS)
def test_the_format_is_the_active_scenes_not_the_first_ones(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A file with a PNG scene first and the Targa scene active renders Targa's settings
    (`blender -b` renders the active scene), so that is the format said."""
    install: BlenderInstall = request.getfixturevalue(fixture)
    blend = tmp_path / "two.blend"
    run_builder(install, HERE / "two_scenes_builder.py", [str(blend)], blend, "two scenes")
    assert saved_format(blend) == "TARGA"
