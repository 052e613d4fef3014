"""A tile rendered while the manager was away is delivered from the worker's outbox as a
tile (not as the frame its merge will make), and its task completed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import structlog

from farmhand.shared.schemas import TaskAssignment, TaskProgress, TileSpec
from farmhand.worker.outbox import Outbox, Outcome, deliver


class RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def upload_tile(self, job_id: int, task_id: int, path: Path) -> None:
        self.calls.append(("tile", job_id, task_id, path.read_bytes()))

    def upload_output(self, job_id: int, task_id: int, frame: int, path: Path) -> None:
        self.calls.append(("frame", job_id, task_id, frame))

    def progress(self, task_id: int, progress: TaskProgress) -> None:
        self.calls.append(("progress", task_id, progress.frames_done))

    def complete(self, task_id: int, frames: list[int], lines: list[str]) -> None:
        self.calls.append(("complete", task_id, frames))


def test_a_tile_in_the_outbox_is_delivered_as_a_tile(tmp_path: Path) -> None:
    task = TaskAssignment(
        task_id=12, job_id=3, job_name="poster", type="render", frames=[], main_file="a.blend",
        files=[], output_format=None, resolution_percentage=None, samples=None, attempt=1,
        tile=TileSpec(frame=7, column=1, row=0, columns=2, rows=2),
    )  # fmt: skip
    box = Outbox(tmp_path).open(task)
    rendered = box.frames_dir / "frame_0007.png"
    rendered.write_bytes(b"the tile")
    box.frame_saved(7, rendered)
    box.finish(Outcome(True, None, []))
    client = RecordingClient()

    deliver(box, client, threading.Event(), structlog.get_logger())  # type: ignore[arg-type]

    assert client.calls == [
        ("tile", 3, 12, b"the tile"),
        ("progress", 12, 1),  # a tile task counts its tile as one
        ("complete", 12, [7]),
    ]
    assert not box.root.exists(), "delivered, so the box is gone"
