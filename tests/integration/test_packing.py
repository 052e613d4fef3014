"""A project of several files, packed by `farmhand submit`, renders on a worker that has
never seen the artist's folders — identical to a local render of the original.

The project (`farmhand.scenes.make_project`) is built by Blender at test time: a scene
with an external texture and an object linked from another .blend, all referenced by
ABSOLUTE paths. After the submit the project folder is renamed, so a worker that
followed any original path would render a pink texture or no linked object at all.
Both Blenders: 5.0 (the bpy module; zstd-compressed files with the new header) and 3.4.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from farmhand.client.packing import pack
from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_project
from farmhand.shared.schemas import JobDetail, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.farmhand_cli import cli
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.blender, pytest.mark.slow]

RENDER_SCRIPT = """
import sys
import bpy
args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
bpy.ops.wm.open_mainfile(filepath=args[0])
bpy.context.scene.render.filepath = args[1]
bpy.ops.render.render(write_still=True)
"""


def render_locally(install: BlenderInstall, scene: Path, out: Path) -> npt.NDArray[np.int16]:
    """Frame 1 of `scene`, rendered by `install` straight from the artist's folder."""
    if install.kind == "module":
        command = [install.python, "-c", RENDER_SCRIPT, str(scene), str(out)]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", "--python-exit-code", "1",
                   "--python-expr", RENDER_SCRIPT, "--", str(scene), str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and out.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGBA"), dtype=np.int16)


def finished(farm: LocalFarm, job_id: int) -> JobDetail | None:
    with farm.client() as client:
        job = client.get_job(job_id)
    done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
    return job if job.status in done else None


def test_packed_project_renders_on_a_worker_without_the_original_folders(
    tmp_path: Path, install: BlenderInstall
) -> None:
    studio = tmp_path / "studio"
    scene = make_project(studio / "proj", install=install)
    expected = render_locally(install, scene, tmp_path / "local.png")

    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        submitted = cli(farm, "submit", str(scene), "--frames", "1", "--chunk", "1")
        assert submitted.returncode == 0, submitted.stderr
        assert "3 files, 3 uploaded" in submitted.stdout
        job_id = int(submitted.stdout.split("job ")[1].split()[0])

        # The artist's folder is gone (renamed) before any worker runs.
        studio.rename(tmp_path / "elsewhere")
        farm.start_worker("w1", blender=install.spec)
        job = wait_for(lambda: finished(farm, job_id), 300, "the job to finish")
        assert job.status is JobStatus.COMPLETED, job.status_reason or farm.logs()
        with farm.client() as client:
            inputs = {f.path for f in client.list_files(job_id) if f.kind == "input"}
            (frame,) = client.download_outputs(job_id, tmp_path / "out")
    assert inputs == {"shots/scene.blend", "lib/library.blend", "textures/checker.png"}

    rendered = np.asarray(Image.open(frame).convert("RGBA"), dtype=np.int16)
    assert rendered.shape == expected.shape
    assert np.abs(rendered - expected).max() <= 2, "the farm's frame equals the local render"


def test_packing_never_touches_the_users_files(tmp_path: Path) -> None:
    scene = make_project(tmp_path / "proj")
    before = {p: p.read_bytes() for p in (tmp_path / "proj").rglob("*") if p.is_file()}
    with pack(scene) as packed:
        assert packed.main_file == "shots/scene.blend"
        assert set(packed.files) == {
            "shots/scene.blend",
            "lib/library.blend",
            "textures/checker.png",
        }
        assert packed.rewritten == ["shots/scene.blend"], "its absolute paths were rewritten"
        assert packed.files["shots/scene.blend"] != scene, "a copy, not the user's file"
        assert packed.missing == []
        copy = packed.workdir
    assert not copy.exists(), "the packed copies are cleaned up"
    after = {p: p.read_bytes() for p in (tmp_path / "proj").rglob("*") if p.is_file()}
    assert after == before


PATHS_SCRIPT = """
import json, os, sys
import bpy
args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
if bpy.data.filepath != args[0]:
    bpy.ops.wm.open_mainfile(filepath=args[0])
found = {}
for path in bpy.utils.blend_paths(absolute=False):
    where = bpy.path.abspath(path).replace("<UDIM>", "1001")
    found[path] = os.path.exists(where)
print("PATHS=" + json.dumps(found))
"""


def paths_in_blend(install: BlenderInstall, scene: Path) -> dict[str, bool]:
    """Every file path in `scene` as Blender sees it, and whether it exists."""
    if install.kind == "module":
        command = [install.python, "-c", PATHS_SCRIPT, str(scene)]
    else:
        assert install.path is not None
        command = [install.path, "-b", "--factory-startup", str(scene),
                   "--python-expr", PATHS_SCRIPT, "--", str(scene)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in result.stdout.splitlines() if x.startswith("PATHS=")), None)
    assert line is not None, result.stdout[-2000:] + result.stderr[-2000:]
    found: dict[str, bool] = json.loads(line.removeprefix("PATHS="))
    return found


def test_every_kind_of_dependency_is_packed_with_relative_paths(
    tmp_path: Path, install: BlenderInstall
) -> None:
    scene = make_project(tmp_path / "studio" / "proj", install=install, extras=True)
    with pack(scene) as packed:
        assert packed.missing == []
        assert {
            "cache/smoke_0001.vdb",
            "sounds/beep.wav",
            "textures/checker.png",
            "textures/seq/flame_0001.png",
            "textures/seq/flame_0002.png",
            "textures/seq/flame_0003.png",
            "textures/udim/skin.1001.png",
            "textures/udim/skin.1002.png",
            "lib/library.blend",
            "shots/scene.blend",
        } <= set(packed.files)
        assert any(name.startswith("fonts/") for name in packed.files)
        tree = tmp_path / "worker"
        for relative, source in packed.files.items():
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tree / relative)
    (tmp_path / "studio").rename(tmp_path / "gone")

    found = paths_in_blend(install, tree / "shots" / "scene.blend")
    assert len(found) >= 7, found
    assert all(path.startswith("//") for path in found), found
    assert all(found.values()), f"every path resolves inside the packed tree: {found}"
