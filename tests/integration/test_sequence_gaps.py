"""Every file of a sequence that exists is uploaded and every missing one the job's
frames need is named, also when the missing one is the file the .blend names (the
first).

Before, blender-asset-tracer's view decided: a sequence whose named (first) file was
gone was not uploaded at all and, for a sequence no node shows, only that file was
named. The scenes are built by Blender at test time (5.0 as the bpy module, and 3.4)
and the submits run the real CLI against a real manager.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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

bpy.ops.file.make_paths_relative()
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))
'''


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
