"""Tiles of a stereo (or multi-view) scene are refused at submit, not on the worker.

The worker's driver cannot render such a scene in tiles and says so, but only once a
tile task runs: the job spent every attempt failing and then failed. The .blend is now
read at submit (`shared/blendscene.py`): `farmhand submit` refuses before packing or
uploading a byte, and the manager answers 400 to a REST submission that skips the
client. Scenes are saved at test time by bpy 5.0 (zstd-compressed) and Blender 3.4.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import threading
from pathlib import Path

import pytest
import zstandard
from blender_asset_tracer import blendfile
from blender_asset_tracer.blendfile import iterators

from farmhand.client import FarmhandClient
from farmhand.client.errors import TilesRefused
from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_scene, run_builder
from farmhand.shared.blendscene import (
    UNTRUSTED_WALL_SECONDS,
    active_scene,
    rendered_views,
    rendered_views_bounded,
)
from farmhand.shared.schemas import JobSettings, TileGrid
from farmhand.worker import blender
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import Farm, inputs, post_stand_in, stored_blobs, upload_input
from tests.integration.test_cli_submit_options import farmhand, one_error_line

pytestmark = pytest.mark.blender

BUILDER = Path(__file__).with_name("views_scene_builder.py")
REFUSED = "stereo/multi-view output is not supported in tiles"
DRIVER = Path(blender.__file__).with_name("driver.py")
"""The worker's driver, run inside Blender (importing it here would import bpy)."""
TILES = {"columns": 2, "rows": 1}
VARIANTS: dict[str, tuple[bool, str, list[str], list[str]]] = {
    "plain": (False, "STEREO_3D", [], []),
    "stereo": (True, "STEREO_3D", [], []),
    "stereo_listing_a_third_view": (True, "STEREO_3D", ["centre"], []),
    "stereo_right_off": (True, "STEREO_3D", [], ["right"]),
    "multiview": (True, "MULTIVIEW", ["centre"], []),
    "multiview_of_one": (True, "MULTIVIEW", ["centre"], ["left", "right"]),
}
"""Stereoscopy on or off, its mode, the views added and those set not to render."""


def build_variants(install: BlenderInstall, folder: Path) -> dict[str, list[str]]:
    """Each of `VARIANTS` saved by `install` in `folder`; the views the worker's driver
    renders of each, as it reckons them inside that Blender."""
    base = make_scene(folder / "base.blend", "animated", install=install, width=32,
                      height=18, frames="1-2", samples=1)  # fmt: skip
    args = [str(base), str(folder), str(DRIVER), json.dumps(VARIANTS)]
    run_builder(install, BUILDER, args, folder / "views.json", "the stereo scenes")
    answers: dict[str, list[str]] = json.loads((folder / "views.json").read_text())
    return answers


@pytest.fixture(scope="module")
def scenes(install: BlenderInstall, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of `VARIANTS`, saved by bpy 5.0 and by Blender 3.4 in turn, with the
    driver's answers in `views.json`."""
    folder = tmp_path_factory.mktemp("views")
    build_variants(install, folder)
    return folder


def test_the_views_read_from_the_file_are_those_the_worker_renders(scenes: Path) -> None:
    """Blender's rule, as the worker applies it inside Blender: Stereo 3D renders left and
    right only; Multi-View every view set to render; one view is no multi-view render."""
    driver_says: dict[str, list[str]] = json.loads((scenes / "views.json").read_text())
    assert driver_says["stereo"] == ["left", "right"]
    assert driver_says["multiview"] == ["left", "right", "centre"]
    read = {name: rendered_views(scenes / f"{name}.blend") for name in VARIANTS}
    assert read == driver_says


def test_a_file_that_cannot_be_read_is_left_to_the_worker(tmp_path: Path) -> None:
    junk = tmp_path / "junk.blend"
    junk.write_bytes(b"BLENDER-v304REND" + bytes(40))
    assert rendered_views(junk) is None
    assert rendered_views(tmp_path / "absent.blend") is None


def test_a_file_whose_views_loop_is_left_to_the_worker(scenes: Path, tmp_path: Path) -> None:
    """A crafted file whose last view points back at the first: BAT would follow it for
    ever, holding one of the manager's threads for each such upload."""
    data = (scenes / "stereo.blend").read_bytes()
    if data.startswith(b"\x28\xb5\x2f\xfd"):  # saved zstd-compressed by Blender 5.0
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    elif data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    looped = tmp_path / "looped.blend"
    looped.write_bytes(data)
    with blendfile.BlendFile(looped) as bfile:
        scene = active_scene(bfile)
        assert scene is not None
        first = scene.get_pointer((b"r", b"views", b"first"))
        assert first is not None
        last = list(iterators.listbase(first))[-1]
        # ListBase links start with `next`: point the last view's back at the first.
        where, first_address = last.file_offset, first.addr_old
        assert bfile.header.pointer_size == 8 and bfile.header.endian_str == b"<"
    with looped.open("r+b") as handle:
        handle.seek(where)
        handle.write(struct.pack("<Q", first_address))

    answers: list[list[str] | None] = []
    # A daemon thread: were the loop followed, the test fails rather than hangs pytest.
    reader = threading.Thread(target=lambda: answers.append(rendered_views(looped)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert answers == [None], "read as damaged, not followed round the loop"


def test_a_linked_active_scene_is_not_judged_by_the_files_own_scene(scenes: Path) -> None:
    """Blender renders the linked stereo scene; the reader used to answer for the file's
    local mono Scene instead ([]: "one view, tile it"), and every tile then failed."""
    assert rendered_views(scenes / "linked_stereo.blend") is None


def crafted_block(scenes: Path, folder: Path) -> Path:
    """`stereo.blend` with one more block before its end whose size field is negative: BAT
    seeks back onto the block and reads it again, for ever, keeping every copy."""
    data = (scenes / "stereo.blend").read_bytes()
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    elif data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    if data.startswith(b"BLENDER17"):  # Blender 5.0's headers: code, sdna, old, len, nr
        block = struct.pack("<4siQqq", b"DATA", 0, 0x1234, -32, 0)
        end = data.rindex(b"ENDB")
    else:  # Blender 3.4's: code, len, old, sdna, nr
        block = struct.pack("<4siQii", b"DATA", -24, 0x1234, 0, 0)
        end = data.rindex(b"ENDB")
    crafted = folder / "crafted.blend"
    crafted.write_bytes(data[:end] + block + data[end:])
    return crafted


def test_a_crafted_file_costs_the_manager_a_bounded_child_not_its_memory(
    farm: Farm, scenes: Path, tmp_path: Path
) -> None:
    """Read in the manager's own process, one such upload grew it 200 MB a second until it
    died; the manager now reads uploads in a child held to limits, and a file over them
    counts as one it cannot read: let through, as the worker refuses what it must."""
    crafted = crafted_block(scenes, tmp_path)
    answers: list[list[str] | None] = []
    reader = threading.Thread(
        target=lambda: answers.append(rendered_views_bounded(crafted)), daemon=True
    )
    reader.start()
    reader.join(timeout=UNTRUSTED_WALL_SECONDS * 2)
    assert answers == [None], "read in a child held to its limits, and given up"

    before = resident_bytes()
    answer = post_stand_in(farm.client, farm.admin, blend=crafted.read_bytes(), tiles=TILES)
    assert answer.status_code == 202, answer.text
    assert resident_bytes() - before < 200 << 20, "the manager's own memory stayed put"


def resident_bytes() -> int:
    """This process's resident memory (the test farm's manager runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def refusal_of(detail: str, file: str) -> None:
    """The refusal names the file, why, and both ways out."""
    assert REFUSED in detail, detail
    assert file in detail and "2 views (left, right" in detail, detail
    assert "without tiles" in detail and "turn Stereoscopy off" in detail, detail


def test_the_api_refuses_tiles_of_a_stereo_scene_with_400(farm: Farm, scenes: Path) -> None:
    """Multipart with the file, or a manifest of blobs uploaded first: 400 and no job,
    where the job used to be queued and fail on the worker after all its attempts."""
    stereo = (scenes / "stereo.blend").read_bytes()
    answer = post_stand_in(farm.client, farm.admin, blend=stereo, tiles=TILES)
    assert answer.status_code == 400, answer.text
    refusal_of(answer.json()["detail"], "'scene.blend'")

    sha = hashlib.sha256(stereo).hexdigest()
    put = farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=stereo)
    assert put.status_code in (200, 201), put.text
    manifest = {"main_file": "shot/poster.blend", "files": {"shot/poster.blend": sha}}
    answer = farm.client.post("/api/jobs", headers=farm.admin, json={**manifest, "tiles": TILES})
    assert answer.status_code == 400, answer.text
    refusal_of(answer.json()["detail"], "'shot/poster.blend'")
    assert farm.client.get("/api/jobs", headers=farm.admin).json() == []

    # Only tiles are refused: the stereo scene renders as frames, the others in tiles.
    answer = farm.client.post("/api/jobs", headers=farm.admin, json=manifest)
    assert answer.status_code == 202, answer.text
    for name in ("plain", "stereo_right_off", "multiview_of_one"):
        scene = (scenes / f"{name}.blend").read_bytes()
        answer = post_stand_in(farm.client, farm.admin, blend=scene, tiles=TILES)
        assert answer.status_code == 202, f"{name}: {answer.text}"
    multiview = (scenes / "multiview.blend").read_bytes()
    answer = post_stand_in(farm.client, farm.admin, blend=multiview, tiles=TILES)
    assert answer.status_code == 400, answer.text
    assert "3 views (left, right, centre" in answer.json()["detail"]


def test_a_tiled_jobs_main_file_is_not_replaced_by_a_stereo_scene(farm: Farm, scenes: Path) -> None:
    """`POST /api/jobs/{id}/upload` of the main file checks it as a submission does."""
    plain = (scenes / "plain.blend").read_bytes()
    answer = post_stand_in(farm.client, farm.admin, blend=plain, tiles=TILES)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    before = inputs(farm, job_id)
    replaced = upload_input(farm, job_id, "scene.blend", (scenes / "stereo.blend").read_bytes())
    assert replaced.status_code == 400, replaced.text
    refusal_of(replaced.json()["detail"], "'scene.blend'")
    assert inputs(farm, job_id) == before


@pytest.fixture(scope="module")
def stereo_5(blender_module: BlenderInstall, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("views5")
    build_variants(blender_module, folder)
    return folder / "stereo.blend"


def test_farmhand_submit_refuses_before_uploading_anything(
    manager: LocalFarm, stereo_5: Path
) -> None:
    """One red line saying why and what to do, no blob stored, no job; without --tiles
    the same scene is submitted."""
    result = farmhand(manager, "submit", str(stereo_5), "--frames", "1", "--tiles", "2x1")
    assert result.returncode == 1, result.stdout + result.stderr
    refusal_of(one_error_line(result.stderr), "stereo.blend")
    assert stored_blobs(manager) == []
    assert "job " not in result.stdout
    frames = farmhand(manager, "submit", str(stereo_5), "--frames", "1")
    assert frames.returncode == 0, frames.stderr
    assert "job " in frames.stdout


def test_the_client_refuses_before_sending_a_request(stereo_5: Path) -> None:
    """`submit_blend`, and `submit_shared` for a share's file readable here, refuse before
    a request: the manager here is unreachable, and would say so if one were sent."""
    settings = JobSettings(tiles=TileGrid(columns=2, rows=2))
    with FarmhandClient("http://127.0.0.1:9", "fh_api_unused") as client:
        with pytest.raises(TilesRefused, match=REFUSED):
            client.submit_blend(stereo_5, settings)
        with pytest.raises(TilesRefused, match=REFUSED):
            client.submit_shared(str(stereo_5), settings)
