"""Every file of a sequence that exists is uploaded and every missing one the job's
frames need is named: also when the missing one is the file the .blend names (the
first), and for `<UVTILE>` tiles as for `<UDIM>` ones.

Before, blender-asset-tracer's view decided: a sequence whose named (first) file was
gone was not uploaded at all and, for a sequence no node shows, only that file was
named; a `<UVTILE>` image was reported missing as `tex.<UVTILE>.png` and none of its
tiles were uploaded. The scenes are built by Blender at test time (5.0 as the bpy
module, and 3.4) and the submits run the real CLI against a real manager.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farmhand.client.packing import pack
from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import run_builder
from farmhand.worker.blender.discovery import BlenderInstall, find_blender
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


def plane(name, x, image=None, **user):
    """A plane, showing `image` through an Image Texture node with these image user settings."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    if image is not None:
        material = bpy.data.materials.new(name)
        material.use_nodes = True
        node = material.node_tree.nodes.new("ShaderNodeTexImage")
        node.name = "tex"
        node.image = image
        for key, value in user.items():
            setattr(node.image_user, key, value)
        bsdf = material.node_tree.nodes["Principled BSDF"]
        material.node_tree.links.new(node.outputs[0], bsdf.inputs[0])
        mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = (x, 0, 0)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def sequence(folder, prefix, count):
    for frame in range(1, count + 1):
        painted(os.path.join(root, folder, f"{prefix}_{frame:04d}.png"), (frame / count, 0, 0, 1))
    image = bpy.data.images.load(os.path.join(root, folder, f"{prefix}_0001.png"))
    image.source = "SEQUENCE"
    return image


bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 10
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))

# An image sequence a node shows over frames 1-10, and one no node shows.
plane("seq", 0, sequence("seq", "tex", 10), frame_duration=10, frame_start=1,
      use_auto_refresh=True)
sequence("loose", "l", 6).use_fake_user = True

# Tiles named by Blender's other token: tex.u1_v1.png (1001), u2_v1 (1002), u1_v2 (1011).
for u, v in ((1, 1), (2, 1), (1, 2)):
    painted(os.path.join(root, "uv", f"tex.u{u}_v{v}.png"), (0, u / 2, v / 2, 1))
tiled = bpy.data.images.load(os.path.join(root, "uv", "tex.u1_v1.png"))
tiled.source = "TILED"
tiled.filepath = os.path.join(root, "uv", "tex.<UVTILE>.png")
for number in (1002, 1011):
    if number not in [tile.number for tile in tiled.tiles]:
        tiled.tiles.new(tile_number=number)
plane("uv", 2, tiled)

bpy.ops.file.make_paths_relative()
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))
'''

LOADED_SCRIPT = r"""
import json, sys
import bpy
args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
if bpy.data.filepath != args[0]:
    bpy.ops.wm.open_mainfile(filepath=args[0])
tiles = {}
if "uv" in bpy.data.materials:
    node = bpy.data.materials["uv"].node_tree.nodes["tex"]
    for tile in node.image.tiles:
        node.image_user.tile = tile.number
        loads = node.image.filepath_from_user(image_user=node.image_user)
        tiles[tile.number] = bpy.path.abspath(loads)
print("LOADED=" + json.dumps({"tiles": tiles}))
"""


@pytest.fixture(scope="module", params=["bpy", "3.4"])
def install(request: pytest.FixtureRequest) -> BlenderInstall:
    if request.param == "bpy":
        return find_blender("bpy")
    blender: BlenderInstall = request.getfixturevalue("blender_executable")
    return blender


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
    copy = tmp_path / "proj"
    shutil.copytree(built, copy)
    return copy


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("farm")) as farm:
        farm.start_manager()
        yield farm


def refused_for(farm: LocalFarm, project: Path, frames: str) -> set[str]:
    """The files a submit of these frames names as missing (relative to the project)."""
    refused = cli(farm, "submit", str(project / "scene.blend"), "--frames", frames)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1, said
    listed = {line.strip() for line in said.splitlines() if line.startswith("  /")}
    assert f"{len(listed)} file(s) the scene uses do not exist" in said, said
    return {Path(path).relative_to(project).as_posix() for path in listed}


def submitted_anyway(farm: LocalFarm, project: Path, frames: str) -> tuple[list[str], set[str]]:
    """(missing_files, the job's input files) of a submit with --allow-missing."""
    scene = str(project / "scene.blend")
    submitted = cli(farm, "submit", scene, "--frames", frames, "--allow-missing")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = int(submitted.stdout.split("job ")[1].split()[0])
    detail = json.loads(cli(farm, "job", str(job_id), "--json").stdout)
    with farm.client() as client:
        inputs = {f.path for f in client.list_files(job_id) if f.kind == "input"}
    return detail["missing_files"], inputs


def test_a_sequence_missing_its_first_file_is_uploaded_and_each_gap_named(
    farm: LocalFarm, project: Path
) -> None:
    for name in ("seq/tex_0001.png", "seq/tex_0005.png", "loose/l_0001.png", "loose/l_0004.png"):
        (project / name).unlink()
    gone = {"seq/tex_0001.png", "seq/tex_0005.png", "loose/l_0001.png", "loose/l_0004.png"}

    assert refused_for(farm, project, "1-10") == gone

    missing, inputs = submitted_anyway(farm, project, "1-10")
    assert sorted(missing) == sorted(gone)
    kept = {f"seq/tex_{n:04d}.png" for n in (2, 3, 4, 6, 7, 8, 9, 10)}
    kept |= {f"loose/l_{n:04d}.png" for n in (2, 3, 5, 6)}
    assert kept <= inputs, f"the files that exist are uploaded: {sorted(kept - inputs)}"


def test_uvtile_tiles_are_uploaded_and_a_missing_one_named(farm: LocalFarm, project: Path) -> None:
    tiles = {"uv/tex.u1_v1.png", "uv/tex.u2_v1.png", "uv/tex.u1_v2.png"}
    missing, inputs = submitted_anyway(farm, project, "1")
    assert missing == [], "a complete <UVTILE> image is not missing"
    assert tiles <= inputs

    (project / "uv" / "tex.u2_v1.png").unlink()
    assert refused_for(farm, project, "1") == {"uv/tex.u2_v1.png"}


def blender_loads(
    install: BlenderInstall, scene: Path, first: int, last: int
) -> dict[str, dict[str, Any]]:
    """The tiles' files Blender itself loads."""
    if install.kind == "module":
        command = [install.python, "-c", LOADED_SCRIPT, str(scene), str(first), str(last)]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", str(scene), "--python-expr",
                   LOADED_SCRIPT, "--", str(scene), str(first), str(last)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in result.stdout.splitlines() if x.startswith("LOADED=")), None)
    assert line is not None, result.stdout[-2000:] + result.stderr[-2000:]
    loaded: dict[str, dict[str, Any]] = json.loads(line.removeprefix("LOADED="))
    return loaded


def test_the_tiles_called_missing_are_those_blender_loads(
    install: BlenderInstall, project: Path
) -> None:
    """With every tile gone, the files missing are those Blender loads for each tile."""
    scene = project / "scene.blend"
    loaded = blender_loads(install, scene, 1, 1)
    for file in (project / "uv").iterdir():
        file.unlink()

    with pack(scene, frames=[1]) as packed:
        tiles = {path for path in packed.missing if path.parent.name == "uv"}
    assert tiles == {Path(path) for path in loaded["tiles"].values()}
    assert len(tiles) == 3
