"""A tiled still of a job on shared storage, for real: two workers of studio B render the
tiles from B's mount of the share, the manager gets the tiles, a merge writes the frame
into the job's `output_dir` on the share under the frame's name and uploads it.

Set up as in `test_shared_storage.py` (the job submitted with studio A's path, which is
gone before the workers start, so they can only render from their own mapping) and
compared as in `test_tiles.py` (the merged frame equals the frame rendered whole). A
watcher looks at `output_dir` all along: a tile written there (as a render task writes
its frames) would take the frame's file name until the merge replaced it, so any file
of another size seen there, even for a moment, fails the test.

Plus the same through the runner API without Blender: what the manager accepts and hands
out for such a still.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TileGrid
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import Farm, png_bytes, upload_frame
from tests.integration.test_shared_storage import (  # noqa: F401 (fixture)
    nas_farm,
    two_studio_mounts,
)
from tests.integration.test_tiles import HEIGHT, WIDTH, assert_same_picture, finished
from tests.integration.test_tiles_protocol import upload_tile
from tests.integration.waiting import wait_for

FRAME = 2


class Watcher:
    """Every (file, image size) seen under `root` while it runs, sampled every 20 ms;
    hidden files (the temporary names of a write in progress) are not looked at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[tuple[str, tuple[int, int] | None]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-output-dir", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.look()

    def look(self) -> None:
        if not self.root.exists():
            return
        for path in self.root.rglob("*"):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                with Image.open(path) as image:
                    size: tuple[int, int] | None = image.size
            except FileNotFoundError:
                continue  # replaced between the listing and the open
            except OSError:
                size = None  # not an image at all
            self.seen.add((str(path.relative_to(self.root)), size))

    @contextmanager
    def running(self) -> Iterator[Watcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self.look()


def run_job(farm: LocalFarm, blend_path: str, settings: JobSettings) -> JobDetail:
    """Submit a shared-storage job and wait until it has completed."""
    with farm.client() as client:
        job_id = client.submit_shared(blend_path, settings).id
    job = wait_for(lambda: finished(farm, job_id), 300, f"job {job_id} to finish")
    assert job.status == JobStatus.COMPLETED, [(t.index, t.last_error) for t in job.tasks]
    return job


@pytest.mark.blender
@pytest.mark.slow
def test_a_tiled_still_on_shared_storage_is_merged_into_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blender_executable: BlenderInstall
) -> None:
    nas = tmp_path / "nas"
    make_scene(
        nas / "shot-010" / "still.blend", "animated", install=blender_executable,
        width=WIDTH, height=HEIGHT, frames="1-3", samples=4,
    )  # fmt: skip
    mount_a, mount_b = two_studio_mounts(tmp_path, nas, monkeypatch)
    blend_at_a = str(mount_a / "shot-010" / "still.blend")
    renders = nas / "renders"

    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        mount_a.unlink()  # studio A's path does not exist on studio B's workers
        for name in ("b1", "b2"):
            farm.start_worker(
                name, "--platform", "studio-b", "--path-map", f"projects:studio-b={mount_b}",
                blender=str(blender_executable.path),
            )  # fmt: skip
        with Watcher(renders).running() as watcher:
            tiled = run_job(
                farm,
                blend_at_a,
                JobSettings(
                    name="poster",
                    frame_start=FRAME,
                    frame_end=FRAME,
                    tiles=TileGrid(columns=2, rows=2, overlap=5),
                    output_dir=str(mount_a / "renders"),
                    output_template="{job}/{frame:04d}.{ext}",
                ),
            )
        whole = run_job(
            farm, blend_at_a, JobSettings(name="whole", frame_start=FRAME, frame_end=FRAME)
        )
        with farm.client() as client:
            [downloaded] = client.download_outputs(tiled.id, tmp_path / "download")
            [reference] = client.download_outputs(whole.id, tmp_path / "whole")
        worker_log = farm.logs(400)

    assert tiled.settings.storage == "shared"
    assert sorted(t.type for t in tiled.tasks) == ["merge", *["render"] * 4]
    assert all(t.status == "completed" for t in tiled.tasks)
    assert str(mount_b / "shot-010" / "still.blend") in worker_log, "rendered from B's mount"

    frame = renders / "poster" / "0002.png"
    assert sorted(p.relative_to(renders) for p in renders.rglob("*")) == [
        Path("poster"),
        Path("poster/0002.png"),
    ], "output_dir holds the frame, and nothing else (no tile, no temporary file)"
    assert watcher.seen == {("poster/0002.png", (WIDTH, HEIGHT))}, (
        "only ever the whole merged frame in output_dir, never a tile under its name"
    )
    assert frame.read_bytes() == downloaded.read_bytes(), "the manager has the same frame"
    assert_same_picture(frame, reference)


# -------------------------------------------------- through the runner API (no Blender)


def test_a_shared_still_in_tiles_hands_out_tiles_from_the_share_and_a_merge_to_it(
    nas_farm: Farm,  # noqa: F811
) -> None:
    """Tile tasks name the .blend on the share (as render tasks do) and take their tiles
    at the manager; the merge task carries `output_dir`, its template and the share's
    roots, which its worker needs to write the frame there."""
    farm = nas_farm  # knows the share as /mnt/projects (Linux) and P:\\ (Windows)
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={
            "storage": "shared",
            "blend_path": "/mnt/projects/shot-010/still.blend",
            "frame_start": 7,
            "frame_end": 7,
            "tiles": {"columns": 2, "rows": 1},
            "output_dir": "/mnt/projects/renders",
            "output_template": "{job}/{frame:04d}.{ext}",
        },
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    runner = farm.register_runner()
    caps = {"capabilities": {"task_types": ["render", "merge"], "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=runner, json=caps).is_success
    roots = {"projects": {"linux": "/mnt/projects", "windows": "P:\\"}}
    for column in (0, 1):
        task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
        assert task["tile"]["column"] == column and task["frames"] == []
        assert (task["storage"], task["main_file"], task["files"]) == (
            "shared", "{projects}/shot-010/still.blend", []
        )  # fmt: skip
        assert task["path_variables"] == roots
        assert upload_tile(farm, runner, task, png_bytes(4, 3)) == 201
        complete = f"/api/runner/tasks/{task['task_id']}/complete"
        assert farm.client.post(complete, headers=runner, json={"frames": []}).is_success

    merge = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert merge["type"] == "merge" and merge["frames"] == [7]
    assert len(merge["tile_files"]) == 2
    assert merge["output_dir"] == "{projects}/renders"
    assert merge["output_template"] == "{job}/{frame:04d}.{ext}"
    assert merge["path_variables"] == roots
    assert upload_frame(farm, runner, merge, 7, png_bytes(8, 3)).status_code == 201
    done = farm.client.post(
        f"/api/runner/tasks/{merge['task_id']}/complete", headers=runner, json={"frames": [7]}
    )
    assert done.json()["job_status"] == "completed"
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    assert [f["path"] for f in files if f["kind"] == "output"] == ["frames/0007.png"]
