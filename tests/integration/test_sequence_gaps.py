"""Every sequence a scene reads is checked for the files its frames need, by one rule
(`client.sequences`): an image sequence whose first file is gone, `<UVTILE>` tiles, a
point cache baked to disk and an OpenVDB volume sequence.

Before, blender-asset-tracer's view decided: a sequence whose named (first) file was
gone was not uploaded at all and only that file was named; a `<UVTILE>` image was
reported missing as `tex.<UVTILE>.png` and none of its tiles were uploaded; a gap in a
point cache or a VDB sequence went unseen. The scenes are built by Blender at test
time (5.0 as the bpy module, and 3.4) and the submits run the real CLI against a real
manager.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def cloth(name, x, first, last, disk=True):
    modifier = plane(name, x).modifiers.new("Cloth", "CLOTH")
    cache = modifier.point_cache
    cache.use_disk_cache = disk
    cache.name = name
    cache.frame_start, cache.frame_end = first, last


def volume(name, files, **settings):
    """An OpenVDB sequence; the files are stand-ins (packing reads no grid)."""
    for frame in range(1, files + 1):
        os.makedirs(os.path.join(root, "vdb"), exist_ok=True)
        with open(os.path.join(root, "vdb", f"{name}_{frame:04d}.vdb"), "wb") as handle:
            handle.write(b"stand-in for an OpenVDB grid")
    data = bpy.data.volumes.new(name)
    data.filepath = os.path.join(root, "vdb", f"{name}_0001.vdb")
    data.is_sequence = True
    for key, value in settings.items():
        setattr(data, key, value)
    bpy.context.scene.collection.objects.link(bpy.data.objects.new(name, data))


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

# Point caches: baked to disk for frames 1-8 (the scene's last frames hold frame 8),
# to disk beyond the scene's frames, and in the .blend (nothing on disk to check).
cloth("cloth", 4, 1, 8)
cloth("long", 6, 1, 30)
cloth("memory", 8, 1, 8, disk=False)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))
bpy.ops.ptcache.bake_all(bake=True)

# Volume sequences in each way of following the scene's frames.
volume("vol", 6, frame_duration=6, frame_start=3, sequence_mode="REPEAT")
volume("pong", 5, frame_duration=4, frame_start=2, frame_offset=1, sequence_mode="PING_PONG")
volume("clip", 3, frame_duration=3, frame_start=4, sequence_mode="CLIP")
volume("ext", 3, frame_duration=3, frame_start=2, sequence_mode="EXTEND")

bpy.ops.file.make_paths_relative()
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "scene.blend"))
'''

LOADED_SCRIPT = r"""
import json, sys
import bpy
args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
if bpy.data.filepath != args[0]:
    bpy.ops.wm.open_mainfile(filepath=args[0])
scene = bpy.context.scene
tiles = {}
if "uv" in bpy.data.materials:
    node = bpy.data.materials["uv"].node_tree.nodes["tex"]
    for tile in node.image.tiles:
        node.image_user.tile = tile.number
        loads = node.image.filepath_from_user(image_user=node.image_user)
        tiles[tile.number] = bpy.path.abspath(loads)
frames = {}
for frame in range(int(args[1]), int(args[2]) + 1):
    scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    # The evaluated copy: the frame is worked out there, not in the saved data.
    frames[frame] = {volume.name: volume.evaluated_get(depsgraph).grids.frame
                     for volume in bpy.data.volumes}
print("LOADED=" + json.dumps({"tiles": tiles, "frames": frames}))
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
    copy = tmp_path / "proj"
    shutil.copytree(built, copy)
    return copy


farm = farm_fixture()


def cache_file(name: str, frame: int) -> str:
    """A frame of a point cache on disk, as Blender names it next to scene.blend."""
    return f"blendcache_scene/{name}_{frame:06d}_00.bphys"


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


def test_a_missing_cache_or_volume_frame_stops_the_submit_for_frames_that_read_it(
    farm: LocalFarm, project: Path
) -> None:
    for name in (cache_file("cloth", 4), cache_file("long", 25), "vdb/vol_0003.vdb"):
        (project / name).unlink()

    # Frames 1-10 read cloth frame 4 and, at frame 5, vol_0003; not long's frame 25.
    assert refused_for(farm, project, "1-10") == {cache_file("cloth", 4), "vdb/vol_0003.vdb"}
    # Frame 25 reads long's frame 25; the cloth holds its frame 8 there, vol shows 5.
    assert refused_for(farm, project, "25") == {cache_file("long", 25)}
    # Frames 1-3 read none of the missing files: the submit goes ahead.
    missing, inputs = submitted_anyway(farm, project, "1-3")
    assert missing == []
    assert {"vdb/vol_0001.vdb", "vdb/vol_0004.vdb", "vdb/pong_0005.vdb"} <= inputs
    assert {cache_file("cloth", 8), cache_file("long", 30)} <= inputs


def blender_loads(
    install: BlenderInstall, scene: Path, first: int, last: int
) -> dict[str, dict[str, Any]]:
    """The tiles' files and the volumes' frame numbers Blender itself loads."""
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


def test_the_volume_frames_called_missing_are_those_blender_loads(
    install: BlenderInstall, project: Path
) -> None:
    """Repeat, ping-pong (with an offset), clip and extend read from the .blend as
    Blender reads them: with every VDB file gone, the files missing for one job frame
    are those Blender loads at that frame (clip: none outside its frames)."""
    scene = project / "scene.blend"
    loaded = blender_loads(install, scene, -3, 16)
    for file in (project / "vdb").iterdir():
        file.unlink()

    for frame, numbers in loaded["frames"].items():
        assert set(numbers) == {"vol", "pong", "clip", "ext"}
        with pack(scene, frames=[int(frame)]) as packed:
            missing = {path.name for path in packed.missing if path.parent.name == "vdb"}
        # Blender's VOLUME_FRAME_NONE (INT_MAX) is a frame that loads no file.
        expected = {f"{name}_{n:04d}.vdb" for name, n in numbers.items() if n != 2**31 - 1}
        assert missing == expected, f"frame {frame}"
