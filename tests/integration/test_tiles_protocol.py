"""A tiled still through the runner API, with scripted runners (no Blender): what each
task carries, what the manager refuses, and how the merge gets the tiles."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import OpenEXR
import pytest
from PIL import Image

from farmhand.manager.api.runner_tiles import tile_path
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import TileSpec
from tests.integration.conftest import (
    Farm,
    png_bytes,
    post_stand_in,
    submit_stand_in,
    upload_frame,
)

STILL: dict[str, Any] = {"frame_start": 7, "frame_end": 7, "tiles": {"columns": 2, "rows": 2}}
"""Frame 7 in 2x2 tiles."""


def post_still(farm: Farm, **settings: Any) -> httpx.Response:
    """Submit the `STILL`, with `settings` on top."""
    return post_stand_in(farm.client, farm.admin, **(STILL | settings))


def submit_still(farm: Farm, **settings: Any) -> int:
    return submit_stand_in(farm.client, farm.admin, **(STILL | settings))


def upload_tile(
    farm: Farm, runner: dict[str, str], task: dict[str, object], data: bytes, name: str = "tile.png"
) -> int:
    """Send a tile as a worker does (the raw body); its status."""
    return put_tile(farm, runner, task, data, name).status_code


def put_tile(
    farm: Farm, runner: dict[str, str], task: dict[str, object], data: bytes, name: str
) -> httpx.Response:
    """`PUT /api/runner/tasks/{task}/tile.{ext}`, the extension of `name` (`frame.exr`)."""
    extension = name.rsplit(".", 1)[-1]
    answer: httpx.Response = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/tile.{extension}", headers=runner, content=data
    )
    return answer


def post_tile(
    farm: Farm, runner: dict[str, str], task: dict[str, object], data: bytes, name: str
) -> httpx.Response:
    """The multipart form workers before the `PUT` send."""
    answer: httpx.Response = farm.client.post(
        f"/api/runner/files/{task['job_id']}/tile",
        headers=runner,
        data={"task_id": str(task["task_id"])},
        files={"file": (name, data, "application/octet-stream")},
    )
    return answer


def exr_bytes(width: int = 4, height: int = 3, value: float = 0.5) -> bytes:
    """A half-float RGBA OpenEXR, as Blender writes a tile of a still in EXR."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tile.exr"
        pixels = np.full((height, width), value, dtype=np.float16)
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, {c: pixels for c in "RGBA"}).write(str(path))
        return path.read_bytes()


def test_a_still_is_tiles_then_a_merge_of_them(farm: Farm) -> None:
    job_id = submit_still(farm)
    runner = farm.register_runner("r1")
    runner_caps = {"capabilities": {"task_types": ["render", "merge"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=runner_caps).is_success

    colours = {}
    for n, (row, column) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
        assert task["type"] == "render" and task["frames"] == []
        [listed] = farm.client.get("/api/admin/runners", headers=farm.admin).json()
        assert listed["current_task_tile"] == task["tile"], "the runners page names the tile"
        assert task["tile"] == {
            "frame": 7, "column": column, "row": row, "columns": 2, "rows": 2, "overlap": 32
        }  # fmt: skip
        complete = f"/api/runner/tasks/{task['task_id']}/complete"
        early = farm.client.post(complete, headers=runner, json={"frames": [7]})
        assert early.status_code == 409 and "no tile" in early.text
        as_frame = upload_frame(farm, runner, task, 7, png_bytes())
        assert as_frame.status_code == 400, "a tile task delivers no frame"
        refused = farm.client.post(
            f"/api/runner/files/{job_id}/tile",
            headers=runner,
            data={"task_id": str(task["task_id"])},
            files={"file": ("tile.jpg", b"not a png", "image/jpeg")},
        )
        assert refused.status_code == 400
        colours[(row, column)] = ["red", "green", "blue", "white"][n]
        assert upload_tile(farm, runner, task, png_bytes(4, 3, colours[(row, column)])) == 201
        assert farm.client.post(complete, headers=runner, json={"frames": []}).status_code == 200
        job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
        assert job["progress"] == (n + 1) * 20.0, "4 tiles and the merge: a fifth each"
        assert job["frames_done"] == 0

    merge = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert merge["type"] == "merge" and merge["frames"] == [7]
    places = {(t["row"], t["column"]): t["path"] for t in merge["tile_files"]}
    assert places == {
        place: tile_path(
            TileSpec(frame=7, row=place[0], column=place[1], columns=2, rows=2), ".png"
        )
        for place in colours
    }
    fetched = farm.client.get(
        f"/api/runner/files/{job_id}/{places[(1, 0)]}", params={"kind": "tile"}, headers=runner
    )
    assert fetched.content == png_bytes(4, 3, "blue")
    assert upload_frame(farm, runner, merge, 7, png_bytes(8, 6)).status_code == 201
    done = farm.client.post(
        f"/api/runner/tasks/{merge['task_id']}/complete", headers=runner, json={"frames": [7]}
    )
    assert done.status_code == 200 and done.json()["job_status"] == "completed"
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert (job["frames_done"], job["frames_total"], job["progress"]) == (1, 1, 100.0)


def test_what_a_tiled_still_cannot_be(farm: Farm) -> None:
    for settings, said in (
        ({"tiles": {"columns": 1, "rows": 1}}, "at least 2 tiles"),
        ({"tiles": {"columns": 17, "rows": 2}}, "16"),
        (
            {"frame_end": 7 + 389, "tiles": {"columns": 16, "rows": 16}},
            "390 frames in 256 tiles is 100230 tasks (a tile task each and a merge per frame), "
            "more than the 100000 a job may have",
        ),
        ({"output_format": "JPEG"}, "merged as PNG, OPEN_EXR or OPEN_EXR_MULTILAYER, not JPEG"),
    ):
        answer = post_still(farm, **settings)
        assert answer.status_code == 400 and said in answer.text, (settings, answer.text)
    assert farm.client.get("/api/jobs", headers=farm.admin).json() == [], "nothing stored"


def test_a_tile_failed_for_good_cancels_the_merge_and_fails_the_still(farm: Farm) -> None:
    job_id = submit_still(farm, max_attempts=1)
    runner = farm.register_runner("r1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    failed = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=runner, json={"reason": "boom"}
    )
    assert failed.status_code == 200
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    [merge] = [t for t in job["tasks"] if t["type"] == "merge"]
    assert merge["status"] == "canceled" and job["status"] == "failed"


def test_a_still_with_a_tile_canceled_ends_canceled_saying_which(farm: Farm) -> None:
    job_id = submit_still(farm)
    me = farm.client.get("/api/auth/me", headers=farm.admin).json()["user"]["name"]
    tile = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"][1]
    canceled = farm.client.post(
        f"/api/jobs/{job_id}/tasks/{tile['id']}/actions",
        headers=farm.admin,
        json={"action": "cancel"},
    )
    assert canceled.status_code == 200, canceled.text
    runner = farm.register_runner("r1")
    for _ in range(3):
        task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
        assert upload_tile(farm, runner, task, png_bytes(4, 3)) == 201
        complete = f"/api/runner/tasks/{task['task_id']}/complete"
        assert farm.client.post(complete, headers=runner, json={"frames": []}).status_code == 200
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    [merge] = [t for t in job["tasks"] if t["type"] == "merge"]
    assert merge["status"] == "canceled"
    assert (job["status"], job["status_reason"]) == ("canceled", f"task 1 canceled by {me}")


def test_a_still_in_openexr_is_exr_tiles_merged_into_an_exr_frame(farm: Farm) -> None:
    job_id = submit_still(farm, output_format="OPEN_EXR", name="exr")
    runner = farm.register_runner("r1")
    runner_caps = {"capabilities": {"task_types": ["render", "merge"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=runner_caps).is_success
    for n in range(4):
        task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
        assert task["output_format"] == "OPEN_EXR" and task["tile"] is not None
        as_png = post_tile(farm, runner, task, png_bytes(4, 3), "tile.png")
        assert as_png.status_code == 400 and "rendered in .exr tiles, not .png" in as_png.text
        disguised = post_tile(farm, runner, task, png_bytes(4, 3), "tile.exr")
        assert disguised.status_code == 400 and "a PNG image, not .exr" in disguised.text
        assert upload_tile(farm, runner, task, exr_bytes(value=n), "frame_0007.exr") == 201
        complete = f"/api/runner/tasks/{task['task_id']}/complete"
        assert farm.client.post(complete, headers=runner, json={"frames": []}).status_code == 200

    [output] = merge_the_exr_tiles(farm, runner, job_id)
    thumbnail = farm.client.get(
        f"/api/jobs/{job_id}/files/{output['id']}/thumbnail", headers=farm.admin
    )
    with Image.open(io.BytesIO(thumbnail.content)) as shown:
        assert (shown.format, shown.size) == ("JPEG", (8, 6)), "the frame, not a placeholder"
    multilayer = post_still(farm, output_format="OPEN_EXR_MULTILAYER")
    assert multilayer.is_success, "its passes are channels like any other"


@pytest.mark.parametrize("send", [put_tile, post_tile], ids=["put", "post"])
def test_a_tile_in_another_format_than_its_jobs_is_refused(farm: Farm, send: Any) -> None:
    submit_still(farm, output_format="PNG")
    runner = farm.register_runner("r1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    as_exr = send(farm, runner, task, exr_bytes(), "tile.exr")
    assert as_exr.status_code == 400 and "rendered in .png tiles, not .exr" in as_exr.text
    as_jpeg = send(farm, runner, task, png_bytes(), "tile.jpg")
    assert as_jpeg.status_code == 400 and "a .png or .exr file" in as_jpeg.text
    not_png = send(farm, runner, task, b"not a png", "tile.png")
    assert not_png.status_code == 400 and "not a readable image" in not_png.text
    assert tiles(farm, task["job_id"]) == [], "nothing recorded"


def claim(farm: Farm, runner: dict[str, str]) -> dict[str, Any]:
    """The next task for `runner`, without waiting."""
    task: dict[str, Any] = farm.client.get(
        "/api/runner/tasks", params={"wait": 0}, headers=runner
    ).json()
    return task


def merge_the_exr_tiles(farm: Farm, runner: dict[str, str], job_id: int) -> list[dict[str, Any]]:
    """Claim the 2x2 still's merge task, which must hand out its four EXR tiles, send an
    8x6 EXR frame as the merged one and complete: the job completes, its only output the
    EXR frame (returned, as the job's outputs)."""
    merge = claim(farm, runner)
    assert merge["type"] == "merge" and merge["job_id"] == job_id
    assert sorted(t["path"] for t in merge["tile_files"]) == [
        f"tiles/0007/r{r}c{c}.exr" for r in range(2) for c in range(2)
    ]
    frame = farm.client.put(
        f"/api/runner/tasks/{merge['task_id']}/frames/7.exr",
        headers=runner,
        content=exr_bytes(8, 6),
    )
    assert frame.status_code == 201, frame.text
    done = farm.client.post(
        f"/api/runner/tasks/{merge['task_id']}/complete", headers=runner, json={"frames": [7]}
    )
    assert done.json()["job_status"] == "completed"
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    outputs = [f for f in files if f["kind"] == "output"]
    assert [f["path"] for f in outputs] == ["frames/0007.exr"]
    return outputs


def test_a_still_keeping_the_blends_format_in_openexr_is_merged_as_exr(farm: Farm) -> None:
    """No `output_format`: the scene's OpenEXR is kept (the driver renders EXR tiles for
    it), so the manager takes EXR tiles, the merge gets them, and the frame is an EXR."""
    job_id = submit_still(farm, name="scene-exr")
    runner = farm.register_runner("r1")
    runner_caps = {"capabilities": {"task_types": ["render", "merge"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=runner_caps).is_success
    for n in range(4):
        task = claim(farm, runner)
        assert task["output_format"] is None and task["tile"] is not None
        send = put_tile if n % 2 else post_tile  # both routes, one rule
        assert send(farm, runner, task, exr_bytes(value=n), "frame_0007.exr").status_code == 201
        complete = f"/api/runner/tasks/{task['task_id']}/complete"
        assert farm.client.post(complete, headers=runner, json={"frames": []}).status_code == 200

    merge_the_exr_tiles(farm, runner, job_id)


@pytest.mark.parametrize("send", [put_tile, post_tile], ids=["put", "post"])
@pytest.mark.parametrize("first", [".png", ".exr"])
def test_every_tile_of_a_still_keeping_the_blends_format_is_in_its_first_ones(
    farm: Farm, send: Any, first: str
) -> None:
    """Either format may come first; after it, a tile in the other, of another tile task
    or of the same one sent again, is refused and not stored, and the merge gets tiles
    of one format."""
    job_id = submit_still(farm)
    runner = farm.register_runner("r1")
    made = {".png": png_bytes(4, 3), ".exr": exr_bytes()}
    other = ".exr" if first == ".png" else ".png"
    one, two = claim(farm, runner), claim(farm, runner)
    assert send(farm, runner, one, made[first], f"tile{first}").status_code == 201
    for task in (two, one):
        refused = send(farm, runner, task, made[other], f"tile{other}")
        assert refused.status_code == 400, refused.text
        said = refused.json()["detail"]
        assert f"keeps the .blend's format and its still already has {first} tiles" in said
        assert "every tile of a still must be in one format to be merged" in said
        assert f"a tile of it is {first}, not {other}" in said
    assert [t["path"] for t in tiles(farm, job_id)] == [f"tiles/0007/r0c0{first}"]
    assert send(farm, runner, two, made[first], f"tile{first}").status_code == 201
    assert sorted(t["path"] for t in tiles(farm, job_id)) == [
        f"tiles/0007/r0c0{first}", f"tiles/0007/r0c1{first}"
    ]  # fmt: skip


def tiles(farm: Farm, job_id: int) -> list[dict[str, Any]]:
    """The job's tiles as its files list them, each called a tile (not an input)."""
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    found = [f for f in files if f["path"].startswith("tiles/")]
    assert all(f["kind"] == "tile" for f in found), found
    return found


@pytest.mark.parametrize("send", [put_tile, post_tile], ids=["put", "post"])
def test_only_the_runner_holding_a_tile_task_may_send_a_tile(farm: Farm, send: Any) -> None:
    """Whichever way a tile is sent: a task of an animation has no tile, a runner that
    lost its tile task is late, a person is no runner."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    animator = farm.register_runner("r2")
    frames = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=animator).json()
    assert frames["tile"] is None
    job_id = submit_still(farm)
    runner = farm.register_runner("r1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert task["job_id"] == job_id and task["tile"] is not None

    not_a_tile = send(farm, animator, frames, png_bytes(), "tile.png")
    assert not_a_tile.status_code == 400 and "is not a tile" in not_a_tile.text
    late = send(farm, animator, task, png_bytes(), "tile.png")
    assert late.status_code == 409, late.text
    person = send(farm, farm.admin, task, png_bytes(), "tile.png")
    assert person.status_code == 401, "a person's token is not a runner's secret"
    assert tiles(farm, job_id) == [] and tiles(farm, frames["job_id"]) == []

    assert send(farm, runner, task, png_bytes(4, 3, "blue"), "frame_0007.PNG").status_code == 201
    [tile] = tiles(farm, job_id)
    assert tile["path"] == "tiles/0007/r0c0.png"
    fetched = farm.client.get(f"/api/jobs/{job_id}/files/{tile['id']}/download", headers=farm.admin)
    assert fetched.content == png_bytes(4, 3, "blue")


def test_a_tile_sent_again_either_way_replaces_the_one_before(farm: Farm) -> None:
    """A retried tile task of an older worker (the form) and a newer one (the PUT)."""
    job_id = submit_still(farm)
    runner = farm.register_runner("r1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert post_tile(farm, runner, task, png_bytes(4, 3, "red"), "t.png").status_code == 201
    assert put_tile(farm, runner, task, png_bytes(4, 3, "green"), "t.png").status_code == 201
    [tile] = tiles(farm, job_id)
    fetched = farm.client.get(f"/api/jobs/{job_id}/files/{tile['id']}/download", headers=farm.admin)
    assert fetched.content == png_bytes(4, 3, "green")


RANGE: dict[str, Any] = {"frame_start": 7, "frame_end": 8, "tiles": {"columns": 2, "rows": 1}}
"""Frames 7 and 8, each in 2x1 tiles."""


def merging_runner(farm: Farm, name: str) -> dict[str, str]:
    """A runner that takes tiles and merges, as every worker does."""
    runner = farm.register_runner(name)
    caps = {"capabilities": {"task_types": ["render", "merge"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=caps).is_success
    return runner


def shape(farm: Farm, job_id: int) -> list[tuple[str, list[int], int | None]]:
    """The job's tasks in index order: type, frames and the frame of its tile."""
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    ordered = sorted(job["tasks"], key=lambda t: t["index"])
    assert [t["index"] for t in ordered] == list(range(len(ordered)))
    return [(t["type"], t["frames"], t["tile"] and t["tile"]["frame"]) for t in ordered]


def send_tile(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> None:
    """Upload a 4x3 PNG as the tile of `task` and complete it."""
    assert task["type"] == "render" and task["tile"] is not None, task
    assert upload_tile(farm, runner, task, png_bytes(4, 3)) == 201
    complete = f"/api/runner/tasks/{task['task_id']}/complete"
    assert farm.client.post(complete, headers=runner, json={"frames": []}).status_code == 200


def merge_frame(farm: Farm, runner: dict[str, str], merge: dict[str, Any], frame: int) -> str:
    """Check that the merge `merge` of `frame` got its own two tiles only, upload its
    frame and complete it; the job's status after."""
    assert merge["type"] == "merge" and merge["frames"] == [frame], merge
    assert sorted(t["path"] for t in merge["tile_files"]) == [
        f"tiles/{frame:04d}/r0c0.png", f"tiles/{frame:04d}/r0c1.png"
    ], "only this frame's tiles"  # fmt: skip
    assert upload_frame(farm, runner, merge, frame, png_bytes(8, 3)).status_code == 201
    done = farm.client.post(
        f"/api/runner/tasks/{merge['task_id']}/complete", headers=runner, json={"frames": [frame]}
    )
    assert done.status_code == 200, done.text
    status: str = done.json()["job_status"]
    return status


def outputs(farm: Farm, job_id: int) -> list[str]:
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    return sorted(f["path"] for f in files if f["kind"] == "output")


def test_a_range_in_tiles_is_each_frames_tiles_then_its_own_merge(farm: Farm) -> None:
    """Frame by frame: frame 7's merge runs as soon as frame 7's tiles are done, while a
    tile of frame 8 is still queued, and gets frame 7's tiles only although a tile of
    frame 8 is already stored; frame 8's merge waits for frame 8's tiles."""
    job_id = submit_still(farm, **RANGE)
    assert shape(farm, job_id) == [
        ("render", [], 7), ("render", [], 7), ("merge", [7], None),
        ("render", [], 8), ("render", [], 8), ("merge", [8], None),
    ]  # fmt: skip
    r1, r2, r3 = (merging_runner(farm, name) for name in ("r1", "r2", "r3"))
    left7, right7 = claim(farm, r1), claim(farm, r2)
    assert [left7["tile"]["frame"], right7["tile"]["frame"]] == [7, 7]
    left8 = claim(farm, r3)
    assert (left8["tile"]["frame"], left8["tile"]["column"]) == (8, 0), "no merge yet"
    send_tile(farm, r3, left8)
    send_tile(farm, r1, left7)
    right8 = claim(farm, r1)
    assert (right8["tile"]["frame"], right8["tile"]["column"]) == (8, 1), "7 has a tile to go"
    send_tile(farm, r2, right7)

    merge7 = claim(farm, r2)
    assert merge_frame(farm, r2, merge7, 7) == "active"
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert (job["frames_done"], job["frames_total"], job["progress"]) == (1, 2, 66.67), (
        "frame 7 merged; progress: 3 of 4 tiles and 1 of 2 merges"
    )
    assert farm.client.get(
        "/api/runner/tasks", params={"wait": 0}, headers=r3
    ).status_code == 204, "frame 8's merge waits for its last tile"  # fmt: skip

    send_tile(farm, r1, right8)
    assert merge_frame(farm, r3, claim(farm, r3), 8) == "completed"
    assert outputs(farm, job_id) == ["frames/0007.png", "frames/0008.png"]
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert (job["frames_done"], job["frames_total"], job["progress"]) == (2, 2, 100.0)


def test_a_tile_of_a_later_frame_failed_for_good_cancels_its_merge_only(farm: Farm) -> None:
    """Frame 7 merged, then a tile of frame 8 fails for good: frame 8's merge is canceled
    because of it, the job fails as when any task fails for good, and frame 7 stays."""
    job_id = submit_still(farm, max_attempts=1, **RANGE)
    runner = merging_runner(farm, "r1")
    send_tile(farm, runner, claim(farm, runner))
    send_tile(farm, runner, claim(farm, runner))
    assert merge_frame(farm, runner, claim(farm, runner), 7) == "active"
    tile8 = claim(farm, runner)
    assert tile8["tile"]["frame"] == 8
    failed = farm.client.post(
        f"/api/runner/tasks/{tile8['task_id']}/fail", headers=runner, json={"reason": "boom"}
    )
    assert failed.status_code == 200
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    merges = {t["frames"][0]: t for t in job["tasks"] if t["type"] == "merge"}
    assert merges[7]["status"] == "completed"
    assert merges[8]["status"] == "canceled"
    assert "it depends on is failed" in merges[8]["last_error"], "canceled by its tile"
    assert job["status"] == "failed" and job["frames_done"] == 1
    assert outputs(farm, job_id) == ["frames/0007.png"]


def test_a_range_in_tiles_keeps_its_step(farm: Farm) -> None:
    """7-11 every 2nd: frames 7, 9 and 11, each its tiles and merge; frame 9's merge gets
    frame 9's tiles."""
    job_id = submit_still(farm, **(RANGE | {"frame_end": 11, "frame_step": 2, "chunk_size": 5}))
    assert shape(farm, job_id) == [
        task
        for frame in (7, 9, 11)
        for task in [("render", [], frame), ("render", [], frame), ("merge", [frame], None)]
    ]
    runner = merging_runner(farm, "r1")
    for frame in (7, 9):
        send_tile(farm, runner, claim(farm, runner))
        send_tile(farm, runner, claim(farm, runner))
        merge_frame(farm, runner, claim(farm, runner), frame)
    assert outputs(farm, job_id) == ["frames/0007.png", "frames/0009.png"]


def test_a_range_in_tiles_makes_its_video_of_the_merged_frames(farm: Farm) -> None:
    """A video of a tiled range: one task after every tile and merge, handed the merged
    frames, not the tiles; it waits for the last merge."""
    job_id = submit_still(farm, video=True, **RANGE)
    assert shape(farm, job_id)[-1] == ("video", [], None)
    runner = merging_runner(farm, "r1")
    maker = farm.register_runner("ffmpeg-box")
    caps = {"capabilities": {"task_types": ["video"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=maker, json=caps).is_success
    for frame in (7, 8):
        send_tile(farm, runner, claim(farm, runner))
        send_tile(farm, runner, claim(farm, runner))
        waiting = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=maker)
        assert waiting.status_code == 204, f"the video waits for frame {frame}'s merge"
        assert merge_frame(farm, runner, claim(farm, runner), frame) == "active"
    video = claim(farm, maker)
    assert video["type"] == "video" and video["job_id"] == job_id
    assert [(f["frame"], f["path"]) for f in video["frame_files"]] == [
        (7, "frames/0007.png"), (8, "frames/0008.png")
    ], "the merged frames, not the tiles"  # fmt: skip


def test_a_tile_of_a_range_with_a_video_failed_for_good_fails_the_job(farm: Farm) -> None:
    """The video waits for each tile and for each merge: a tile that fails for good
    cancels its merge, and the video through it, once. The worker's report was a 500,
    retried for ever, with the tile active and the job never ending."""
    job_id = submit_still(farm, video=True, max_attempts=1, **RANGE)
    runner = merging_runner(farm, "r1")
    tile = claim(farm, runner)
    failed = farm.client.post(
        f"/api/runner/tasks/{tile['task_id']}/fail", headers=runner, json={"reason": "boom"}
    )
    assert failed.status_code == 200, failed.text
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    assert job["status"] == "failed", job
    by_type = {t["type"]: t for t in job["tasks"] if t["type"] != "render"}
    assert by_type["video"]["status"] == by_type["merge"]["status"] == "canceled"
    assert "it depends on is" in by_type["video"]["last_error"], by_type["video"]
    assert [t["status"] for t in job["tasks"] if t["status"] in ("queued", "active")] == []


def test_a_tile_of_a_range_with_a_video_canceled_cancels_what_waits_for_it(farm: Farm) -> None:
    """Canceling one tile of a tiled range with a video: its merge and the video are
    canceled with it, saying why (it was a 500, and nothing was canceled)."""
    job_id = submit_still(farm, video=True, **RANGE)
    tile = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"][0]
    canceled = farm.client.post(
        f"/api/jobs/{job_id}/tasks/{tile['id']}/actions",
        headers=farm.admin,
        json={"action": "cancel"},
    )
    assert canceled.status_code == 200, canceled.text
    tasks = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
    statuses = {(t["type"], t["frames"][0] if t["frames"] else None): t["status"] for t in tasks}
    assert statuses[("merge", 7)] == statuses[("video", None)] == "canceled", statuses
    assert statuses[("merge", 8)] == "queued", "frame 8 does not wait for frame 7's tile"
    video = next(t for t in tasks if t["type"] == "video")
    assert video["last_error"] and "it depends on is canceled" in video["last_error"], video


def task_action(farm: Farm, job_id: int, task_id: int, action: str) -> None:
    answer = farm.client.post(
        f"/api/jobs/{job_id}/tasks/{task_id}/actions", headers=farm.admin, json={"action": action}
    )
    assert answer.status_code == 200, answer.text


def test_the_video_requeued_after_its_merge_was_canceled_brings_the_merge_back(
    farm: Farm,
) -> None:
    """A person cancels frame 7's merge (the video goes with it), then requeues the video:
    the merge it needs is back in the queue too, and the job ends with its video. The
    video waited for ever for a canceled merge, the job active and unfinished."""
    job_id = submit_still(farm, video=True, **RANGE)
    tasks = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
    merge7 = next(t for t in tasks if t["type"] == "merge" and t["frames"] == [7])
    video = next(t for t in tasks if t["type"] == "video")
    task_action(farm, job_id, merge7["id"], "cancel")
    task_action(farm, job_id, video["id"], "requeue")
    tasks = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
    by_id = {t["id"]: t for t in tasks}
    assert (by_id[merge7["id"]]["status"], by_id[video["id"]]["status"]) == ("queued", "queued")
    assert by_id[merge7["id"]]["last_error"] == "a task that depends on it runs again"

    runner = merging_runner(farm, "r1")
    for frame in (7, 8):
        send_tile(farm, runner, claim(farm, runner))
        send_tile(farm, runner, claim(farm, runner))
        merge_frame(farm, runner, claim(farm, runner), frame)
    maker = farm.register_runner("ffmpeg-box")
    caps = {"capabilities": {"task_types": ["video"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=maker, json=caps).is_success
    assert claim(farm, maker)["type"] == "video", "the video is handed out, not waiting"


def test_requeueing_a_still_while_its_merge_runs_merges_the_new_tiles(farm: Farm) -> None:
    """Requeue all while the merge is under way: the merge, made of the old tiles, runs
    again after the new ones (its worker is told to stop, its late frame refused). The
    running merge was left alone; it completed with the old tiles, the job ended
    completed with a frame made of tiles since rendered again, and it never ran again."""
    job_id = submit_still(farm, **{**RANGE, "frame_end": 7})
    runner = merging_runner(farm, "r1")
    send_tile(farm, runner, claim(farm, runner))
    send_tile(farm, runner, claim(farm, runner))
    merge = claim(farm, runner)
    assert merge["type"] == "merge"
    again = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "requeue-all"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["requeued"] == 3, "two tiles, and the merge made of them"
    tasks = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()["tasks"]
    assert [t["status"] for t in tasks] == ["queued"] * 3
    beat = {"current_task_id": merge["task_id"]}
    told = farm.client.post("/api/runner/heartbeat", headers=runner, json=beat).json()
    assert told["abort_task_ids"] == [merge["task_id"]]
    late = upload_frame(farm, runner, merge, 7, png_bytes(8, 3))
    assert late.status_code == 409, late.text

    send_tile(farm, runner, claim(farm, runner))
    send_tile(farm, runner, claim(farm, runner))
    assert merge_frame(farm, runner, claim(farm, runner), 7) == "completed"


def test_a_tiled_frame_took_what_its_tiles_took_together(farm: Farm) -> None:
    """The job's "per frame" for tiles: the Blender seconds of a frame's tiles summed,
    counted once that frame is merged (a tile finishes no frame on its own)."""
    job_id = submit_still(farm, **RANGE)
    r1, r2, r3 = (merging_runner(farm, name) for name in ("r1", "r2", "r3"))

    def rendered(runner: dict[str, str], task: dict[str, Any], seconds: float) -> None:
        progress = f"/api/runner/tasks/{task['task_id']}/progress"
        body = {"frames_done": 0, "render_seconds": seconds}
        assert farm.client.post(progress, headers=runner, json=body).status_code == 200
        send_tile(farm, runner, task)

    def per_frame() -> float | None:
        job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
        seconds: float | None = job["seconds_per_frame"]
        return seconds

    left7, right7, left8 = claim(farm, r1), claim(farm, r2), claim(farm, r3)
    rendered(r1, left7, 3.0)
    rendered(r2, right7, 5.0)
    rendered(r3, left8, 40.0)
    assert per_frame() is None, "no frame is whole yet"
    assert merge_frame(farm, r1, claim(farm, r1), 7) == "active"
    assert per_frame() == 8.0, "frame 7: its two tiles, 3 s and 5 s; frame 8 not merged"

    right8 = claim(farm, r2)
    halfway = {"frames_done": 0, "frame": 8, "sample": 5, "samples_total": 10}
    progress = f"/api/runner/tasks/{right8['task_id']}/progress"
    assert farm.client.post(progress, headers=r2, json=halfway).status_code == 200
    job = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    [running] = [t for t in job["tasks"] if t["id"] == right8["task_id"]]
    assert running["eta_seconds"] == 2.0, "half of a tile, a tile half of an 8 s frame"
