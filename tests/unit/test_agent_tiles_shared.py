"""Tiled stills of jobs on shared storage, in the worker agent against the in-memory fake
manager (no Blender): a tile task renders the .blend from the share and sends its tile
to the manager only, never into the job's `output_dir` (it would take the frame's name
there); the merge task writes the merged frame into `output_dir` and uploads it; a merged
frame that cannot reach the share fails the merge, as a frame fails a render task.

And the settings: a tiled still may be a shared-storage job, with or without
`output_dir`; what a tiled still cannot be otherwise is still refused.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from farmhand.shared.pathmap import current_platform
from farmhand.shared.schemas import JobSettings, SharedJobCreate, TileGrid
from farmhand.worker.agent import RenderJob, RenderOutcome
from tests.unit.test_agent_merge import TileManager, _no_render
from tests.unit.test_worker_agent import FakeManager, _start, _stop

TILE = {"frame": 7, "column": 1, "row": 0, "columns": 2, "rows": 1, "overlap": 32}


def _on_share(task: dict[str, Any], nas: Path, **overrides: Any) -> None:
    """Make `task` one of a shared-storage job whose frames also go to `nas/renders`,
    with the share mapped to `nas` on this worker's platform."""
    task |= {
        "storage": "shared",
        "main_file": "{projects}/shot/scene.blend",
        "files": [],
        "output_dir": "{projects}/renders",
        "path_variables": {"projects": {current_platform(): str(nas)}},
    } | overrides


def _share(tmp_path: Path) -> Path:
    """A share holding the job's .blend, and nothing else yet."""
    nas = tmp_path / "nas"
    (nas / "shot").mkdir(parents=True)
    (nas / "shot" / "scene.blend").write_bytes(b"BLENDER-v300 on the share")
    return nas


def _written(root: Path) -> list[str]:
    """Every file under `root` (hidden temporary ones too), relative to it."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TileTaskManager(FakeManager):
    """The fake manager with one tile task (the right half of frame 7), taking tiles."""

    def __init__(self) -> None:
        super().__init__([])
        self.tasks[0] |= {"tile": TILE}
        self.tiles: dict[str, bytes] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)  # records the call (as "tile.png")
        name = request.url.path.rsplit("/", 1)[-1]
        if request.method == "PUT" and name.startswith("tile."):
            data = request.read()
            with self.lock:
                self.tiles[name] = data
            return httpx.Response(201, json={"id": 1, "frame": None, "sha256": "a" * 64, "size": 1})
        return response


def test_a_tile_of_a_shared_job_renders_from_the_share_and_goes_to_the_manager_only(
    tmp_path: Path,
) -> None:
    nas = _share(tmp_path)
    manager = TileTaskManager()
    _on_share(manager.tasks[0], nas)
    seen: list[RenderJob] = []

    def renderer(job: RenderJob) -> RenderOutcome:
        seen.append(job)
        # Blender writes a tile under the frame's own name, as it does any frame.
        tile = job.output_dir / "0007.png"
        Image.new("RGB", (30, 20), "red").save(tile)
        job.on_frame_saved(7, tile)
        return RenderOutcome(ok=True)

    stop, thread, result = _start(tmp_path, manager, renderer)
    manager.wait_for("complete")
    _stop(stop, thread, result)

    [job] = seen
    assert job.blend_file == nas / "shot" / "scene.blend", "the .blend as mapped on the share"
    assert job.task.tile is not None and job.task.render_frames == [7]
    assert list(manager.tiles) == ["tile.png"], "the tile went to the manager"
    assert "upload" not in manager.names(), "as a tile, not as the frame"
    assert "fail" not in manager.names()
    assert _written(nas / "renders") == [], "no tile may land in output_dir as the frame"


def test_a_merge_writes_the_frame_into_output_dir_before_uploading_it(tmp_path: Path) -> None:
    nas = _share(tmp_path)
    manager = TileManager()
    _on_share(manager.tasks[0], nas, output_template="{job}/{frame:04d}.{ext}")
    target = nas / "renders" / "shot" / "0007.png"
    on_share_at_upload: list[bool] = []
    manager.on_call = lambda name: (
        on_share_at_upload.append(target.is_file()) if name == "upload" else None
    )
    stop, thread, result = _start(tmp_path, manager, _no_render)
    manager.wait_for("complete")
    _stop(stop, thread, result)

    assert manager.body("complete")["frames"] == [7]
    assert "fail" not in manager.names()
    assert _written(nas / "renders") == ["shot/0007.png"], "the frame, by the job's template"
    assert target.read_bytes() == manager.uploads[7], "the frame the manager got"
    with Image.open(io.BytesIO(manager.uploads[7])) as frame:
        assert frame.size == (5, 3), "the merged frame, not a tile"
    assert on_share_at_upload == [True], "on the share before the upload, as a render task"


def test_a_merged_frame_that_cannot_reach_the_share_fails_the_merge(tmp_path: Path) -> None:
    nas = _share(tmp_path)
    (nas / "renders").write_text("a file where the output folder should be")
    manager = TileManager()
    _on_share(manager.tasks[0], nas)
    stop, thread, result = _start(tmp_path, manager, _no_render)
    manager.wait_for("fail")
    _stop(stop, thread, result)

    reason = manager.body("fail")["reason"]
    assert reason.startswith("cannot write to shared storage: frame 7: "), reason
    assert not {"upload", "complete"} & set(manager.names())


def test_a_merge_without_a_root_for_output_dir_fails_before_fetching_tiles(
    tmp_path: Path,
) -> None:
    manager = TileManager()
    _on_share(manager.tasks[0], tmp_path, path_variables={"projects": {"elsewhere": "/mnt/p"}})
    stop, thread, result = _start(tmp_path, manager, _no_render)
    manager.wait_for("fail")
    _stop(stop, thread, result)

    reason = manager.body("fail")["reason"]
    assert reason.startswith("cannot write to shared storage: output_dir: no root for {projects}")
    assert manager.fetched == [], "no tile fetched for a frame that could not be written"
    assert not {"upload", "complete"} & set(manager.names())


def test_an_uploaded_job_with_output_dir_gets_the_merged_frame_there_too(
    tmp_path: Path,
) -> None:
    """`output_dir` alone (inputs uploaded) is enough for the merge to write the frame."""
    nas = tmp_path / "nas"
    manager = TileManager()
    manager.tasks[0] |= {
        "output_dir": "{projects}/renders",
        "path_variables": {"projects": {current_platform(): str(nas)}},
    }
    stop, thread, result = _start(tmp_path, manager, _no_render)
    manager.wait_for("complete")
    _stop(stop, thread, result)
    assert _written(nas / "renders") == ["0007.png"], "the default shared template"


# ------------------------------------------------------------------- settings


def test_a_tiled_still_may_be_a_shared_storage_job() -> None:
    grid = TileGrid(columns=2, rows=2)
    still = {"frame_start": 7, "frame_end": 7, "tiles": grid}
    shared = JobSettings(storage="shared", output_dir="/mnt/projects/renders", **still)
    assert shared.tiles == grid
    assert JobSettings(storage="shared", **still).tiles == grid
    assert JobSettings(output_dir="/mnt/projects/renders", **still).tiles == grid
    request = SharedJobCreate(
        blend_path="/mnt/projects/shot/scene.blend", output_dir="/mnt/projects/renders", **still
    )
    assert (request.storage, request.tiles) == ("shared", grid)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"frame_end": 7 + 389, "tiles": {"columns": 16, "rows": 16}}, "more than the 100000"),
        ({"output_format": "JPEG"}, "not JPEG"),
    ],
)
def test_what_a_shared_tiled_still_still_cannot_be(settings: dict[str, Any], said: str) -> None:
    still: dict[str, Any] = {"frame_start": 7, "frame_end": 7, "tiles": {"columns": 2, "rows": 1}}
    with pytest.raises(ValueError, match=said):
        SharedJobCreate.model_validate(
            {"blend_path": "/mnt/projects/s.blend", "output_dir": "/mnt/out"} | still | settings
        )
