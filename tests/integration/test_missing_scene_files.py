"""Files a scene needs but that do not exist are listed before anything is uploaded: a
UDIM tile the image names and a frame of an image sequence the job's frames show, not
only single files. A job submitted without them anyway (`--allow-missing`) says so.

BAT expands a sequence or a UDIM image by globbing the files that exist, so a gap in the
tiles or frames was never seen: the submit went ahead and the farm rendered magenta.
The scenes are built by Blender at test time (5.0 as the bpy module, and 3.4), the
submits run the real CLI against a real manager.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from farmhand.client.packing import pack
from farmhand.localfarm import LocalFarm
from farmhand.scenes import run_builder
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import farm_fixture
from tests.integration.farmhand_cli import cli

pytestmark = [pytest.mark.blender, pytest.mark.slow]

BUILDER = r'''
import os, sys
import bpy

root = sys.argv[sys.argv.index("--") + 1]
os.makedirs(root, exist_ok=True)


def painted(path, colour):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = bpy.data.images.new(os.path.basename(path), width=4, height=4)
    image.pixels[:] = list(colour) * 16
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def textured(name, image, x, **user):
    """A plane showing `image` through an Image Texture node with these image user settings."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.name = "tex"
    node.image = image
    for key, value in user.items():
        setattr(node.image_user, key, value)
    bsdf = material.node_tree.nodes["Principled BSDF"]
    material.node_tree.links.new(node.outputs[0], bsdf.inputs[0])
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    mesh.materials.append(material)
    plane = bpy.data.objects.new(name, mesh)
    plane.location = (x, 0, 0)
    bpy.context.scene.collection.objects.link(plane)


def sequence(folder, prefix, count):
    for frame in range(1, count + 1):
        painted(os.path.join(root, folder, f"{prefix}.{frame:04d}.png"), (frame / count, 0, 0, 1))
    image = bpy.data.images.load(os.path.join(root, folder, f"{prefix}.0001.png"))
    image.source = "SEQUENCE"
    return image


bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 10
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))

painted(os.path.join(root, "textures", "wood.png"), (0.5, 0.3, 0.1, 1))
textured("wood", bpy.data.images.load(os.path.join(root, "textures", "wood.png")), 0)

for tile in (1001, 1002):
    painted(os.path.join(root, "udim", f"tex.{tile}.png"), (0, tile - 1000, 1, 1))
tiled = bpy.data.images.load(os.path.join(root, "udim", "tex.1001.png"))
tiled.source = "TILED"
tiled.filepath = os.path.join(root, "udim", "tex.<UDIM>.png")
if len(tiled.tiles) < 2:
    tiled.tiles.new(tile_number=1002)
textured("udim", tiled, 2)

# A sequence shown over the scene's frames 1-10, one file a frame.
textured("seq", sequence("seq", "f", 10), 4, frame_duration=10, frame_start=1,
         use_auto_refresh=True)
# Frames left at Blender's default (100) though it has 10 files: the scene's frames 1-10
# show only those 10, so nothing is missing for them.
textured("plate", sequence("plate", "p", 10), 6, use_auto_refresh=True)
# Image users that move the frames: an offset and a later start; a cyclic loop.
textured("shift", sequence("shift", "s", 30), 8, frame_duration=6, frame_start=5,
         frame_offset=3, use_auto_refresh=True)
textured("loop", sequence("loop", "l", 4), 10, frame_duration=4, frame_start=2,
         use_cyclic=True, use_auto_refresh=True)

bpy.ops.file.make_paths_relative()
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))
'''

SHOWN_SCRIPT = r"""
import json, sys
import bpy
args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
if bpy.data.filepath != args[0]:
    bpy.ops.wm.open_mainfile(filepath=args[0])
scene = bpy.context.scene
shown = {}
for frame in range(int(args[1]), int(args[2]) + 1):
    scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    shown[frame] = {}
    for name in ("shift", "loop"):
        # The evaluated copy: the frame is worked out there, not in the saved data.
        node = bpy.data.materials[name].evaluated_get(depsgraph).node_tree.nodes["tex"]
        shown[frame][name] = node.image.filepath_from_user(image_user=node.image_user)
print("SHOWN=" + json.dumps(shown))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, install: BlenderInstall) -> Path:
    """The project as Blender saved it; each test copies it (they delete files)."""
    root = tmp_path_factory.mktemp("built")
    script = root / "build.py"
    script.write_text(BUILDER)
    project = root / "project"
    run_builder(install, script, [str(project)], project / "scene.blend", "the scene")
    return project


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "proj ü"
    shutil.copytree(built, copy)
    return copy


farm = farm_fixture()


def job_count(farm: LocalFarm) -> int:
    with farm.client() as client:
        return len(client.list_jobs())


def test_a_missing_udim_tile_and_sequence_frame_stop_the_submit(
    farm: LocalFarm, project: Path
) -> None:
    scene = project / "scene.blend"
    (project / "udim" / "tex.1002.png").unlink()
    (project / "seq" / "f.0005.png").unlink()
    before = job_count(farm)

    refused = cli(farm, "submit", str(scene), "--frames", "5")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = refused.stdout + refused.stderr
    assert "2 file(s) the scene uses do not exist" in said, said
    assert str(project / "udim" / "tex.1002.png") in said, said
    assert str(project / "seq" / "f.0005.png") in said, said
    assert "plate" not in said and "shift" not in said and "loop" not in said, said

    # Frame 4 shows f.0004.png: only the tile is missing for it.
    refused = cli(farm, "submit", str(scene), "--frames", "4")
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "1 file(s) the scene uses do not exist" in said, said
    assert "tex.1002.png" in said and "f.0005.png" not in said, said
    assert job_count(farm) == before, "nothing was submitted"


def test_a_complete_scene_is_not_refused_for_frames_it_never_shows(
    farm: LocalFarm, project: Path
) -> None:
    """The plate's image user says 100 frames (Blender's default) but the scene's
    frames 1-10 show only its 10 files: p.0011-p.0100 are nobody's missing files."""
    submitted = cli(farm, "submit", str(project / "scene.blend"), "--frames", "1-10")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = int(submitted.stdout.split("job ")[1].split()[0])
    shown = cli(farm, "job", str(job_id), "--json")
    assert json.loads(shown.stdout)["missing_count"] == 0
    assert "submitted without" not in cli(farm, "job", str(job_id)).stdout


def test_a_job_submitted_without_files_says_which(farm: LocalFarm, project: Path) -> None:
    (project / "udim" / "tex.1002.png").unlink()
    (project / "seq" / "f.0005.png").unlink()
    (project / "textures" / "wood.png").unlink()
    scene = project / "scene.blend"

    submitted = cli(farm, "submit", str(scene), "--frames", "5", "--allow-missing")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = int(submitted.stdout.split("job ")[1].split()[0])

    detail = json.loads(cli(farm, "job", str(job_id), "--json").stdout)
    named = ["seq/f.0005.png", "textures/wood.png", "udim/tex.1002.png"]
    assert sorted(detail["missing_files"]) == named
    assert detail["missing_count"] == 3
    shown = cli(farm, "job", str(job_id)).stdout
    assert "submitted without 3 missing files:" in shown, shown
    assert all(f"  {path}\n" in shown for path in named), shown


def blender_shows(
    install: BlenderInstall, scene: Path, first: int, last: int
) -> dict[int, dict[str, str]]:
    """The file Blender itself loads for the shift and loop planes at each frame."""
    if install.kind == "module":
        command = [install.python, "-c", SHOWN_SCRIPT, str(scene), str(first), str(last)]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", str(scene), "--python-expr",
                   SHOWN_SCRIPT, "--", str(scene), str(first), str(last)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in result.stdout.splitlines() if x.startswith("SHOWN=")), None)
    assert line is not None, result.stdout[-2000:] + result.stderr[-2000:]
    return {int(k): v for k, v in json.loads(line.removeprefix("SHOWN=")).items()}


def test_the_frames_called_missing_are_those_blender_loads(
    install: BlenderInstall, project: Path
) -> None:
    """Offset, start frame and cyclic read from the .blend as Blender reads them: with
    every file but the first of two sequences gone, the files missing for one job frame
    are those Blender loads at that frame (before the start frame, number `offset`;
    after the end, the last frame held; a cyclic one wraps, before its start too)."""
    scene = project / "scene.blend"
    shown = blender_shows(install, scene, -3, 16)
    for name, prefix in (("shift", "s"), ("loop", "l")):
        for file in (project / name).glob(f"{prefix}.*.png"):
            if file.name != f"{prefix}.0001.png":
                file.unlink()
    for frame, files in shown.items():
        with pack(scene, frames=[frame]) as packed:
            missing = {path for path in packed.missing if path.parent.name in files}
        expected = {Path(path) for path in files.values() if not Path(path).exists()}
        assert missing == expected, f"frame {frame}"
