"""A `merge` task in the worker agent, against the in-memory fake manager: it runs with the
progress reporter, so its log lines reach the manager while it merges and a cancel
(`keep_going: false`) or a stop ends it between tiles, without an upload or a failure."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from farmhand.worker.agent import RenderJob, RenderOutcome
from tests.unit.test_worker_agent import FakeManager, _start, _stop

# A 5x3 frame in 2x2 tiles (columns 2 and 3 wide, rows 1 and 2 high), one colour a tile.
WIDTHS, HEIGHTS = (2, 3), (1, 2)
COLOURS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (9, 9, 9)}


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class TileManager(FakeManager):
    """The fake manager with one merge task of frame 7, serving its tiles by path."""

    def __init__(self) -> None:
        super().__init__([7])
        self.tiles = {
            f"tiles/0007/r{row}c{column}.png": _png((WIDTHS[column], HEIGHTS[row]), colour)
            for (row, column), colour in COLOURS.items()
        }
        self.tasks[0] |= {
            "type": "merge",
            "main_file": "",
            "files": [],
            "tile_files": [
                {
                    "path": f"tiles/0007/r{row}c{column}.png",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "row": row,
                    "column": column,
                    "rows": 2,
                    "columns": 2,
                }
                for (row, column) in COLOURS
                for data in [self.tiles[f"tiles/0007/r{row}c{column}.png"]]
            ],
        }
        self.fetched: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)  # records the call, runs `on_call`
        prefix = "/api/runner/files/3/"
        if request.url.path.startswith(prefix):
            path = request.url.path.removeprefix(prefix)
            assert request.url.params.get("kind") == "tile"
            with self.lock:
                self.fetched.append(path)
            return httpx.Response(200, content=self.tiles[path])
        return response

    def progress_lines(self) -> list[str]:
        with self.lock:
            return [line for n, b in self.calls if n == "progress" for line in b["log_lines"]]

    def progress_bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [b for n, b in self.calls if n == "progress"]


def _no_render(job: RenderJob) -> RenderOutcome:
    raise AssertionError(f"a merge renders nothing, yet task {job.task.task_id} was rendered")


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_merge_completes_with_its_log_sent_before_the_frame(tmp_path: Path) -> None:
    manager = TileManager()
    stop, thread, result = _start(tmp_path, manager, _no_render)
    manager.wait_for("complete")
    _stop(stop, thread, result)
    assert sorted(manager.fetched) == sorted(manager.tiles)
    assert manager.body("complete")["frames"] == [7]
    with Image.open(io.BytesIO(manager.uploads[7])) as frame:
        assert frame.size == (5, 3) and frame.getpixel((4, 2)) == (9, 9, 9)
    assert manager.progress_lines() == [
        "fetching 4 tiles",
        f"tiles ready: 4 downloaded ({sum(map(len, manager.tiles.values()))} bytes), "
        "0 from the cache",
        "pasting 4 tiles into a 5x3 frame",
        "merged 4 tiles into a 5x3 frame",
    ]
    assert manager.progress_bodies()[0]["frame"] == 7
    assert "fail" not in manager.names()


def test_keep_going_false_stops_a_running_merge_after_its_log_reached_the_manager(
    tmp_path: Path,
) -> None:
    """The first tile download waits for a progress report while the merge runs: only
    the reporter sends one then. The manager answers it `keep_going: false`, and the
    merge stops before the next tile: nothing uploaded, completed, failed or released."""
    manager = TileManager()
    manager.keep_going = False
    reported_while_fetching: list[bool] = []

    def on_call(name: str) -> None:
        if name == "download" and not reported_while_fetching:
            reported = _wait(lambda: "fetching 4 tiles" in manager.progress_lines(), 3.0)
            reported_while_fetching.append(reported)
            time.sleep(0.3)  # the reporter reads the answer and drops the task

    manager.on_call = on_call
    stop, thread, result = _start(tmp_path, manager, _no_render)
    assert _wait(lambda: bool(manager.fetched), 10.0)
    time.sleep(0.5)
    _stop(stop, thread, result)
    assert reported_while_fetching == [True], "no progress report while the merge ran"
    assert manager.progress_bodies()[0]["frame"] == 7, "the merge's frame, reported live"
    assert len(manager.fetched) == 1, "the merge went on after keep_going: false"
    assert not {"upload", "complete", "fail", "release"} & set(manager.names())


def test_a_worker_stopping_mid_merge_gives_the_task_back(tmp_path: Path) -> None:
    manager = TileManager()
    downloading, stopping = threading.Event(), threading.Event()

    def on_call(name: str) -> None:
        if name == "download" and not downloading.is_set():
            downloading.set()
            stopping.wait(5.0)

    manager.on_call = on_call
    stop, thread, result = _start(tmp_path, manager, _no_render)
    assert downloading.wait(10.0)
    stop.set()
    stopping.set()
    _stop(stop, thread, result)
    names = manager.names()
    assert len(manager.fetched) == 1
    assert "release" in names and not {"upload", "complete", "fail"} & set(names)
    assert names.index("release") < names.index("sign-off")
