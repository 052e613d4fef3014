"""A runner's image that is not one: the 400 says why, never where the manager keeps it.

The bytes are verified in a temporary file of the blob store; its path is the manager's
business (it tells anyone asking how the manager's disk is laid out, and means nothing
to the worker), so it goes to the manager's log, not into the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Farm, png_bytes, submit_stand_in
from tests.integration.test_tiles_protocol import post_tile, put_tile, submit_still

DAMAGED_PNG = png_bytes(64, 48)[:-40]
"""A PNG cut off before its end: Pillow reads its header, then fails on the pixels."""


def claim(farm: Farm, runner: dict[str, str]) -> dict[str, Any]:
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def put_frame(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> httpx.Response:
    answer: httpx.Response = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/1.png", headers=runner, content=DAMAGED_PNG
    )
    return answer


def post_frame(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        f"/api/runner/files/{task['job_id']}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", DAMAGED_PNG, "application/octet-stream")},
    )
    return answer


def put_pass(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> httpx.Response:
    answer: httpx.Response = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/1/pass/normal.png",
        headers=runner,
        content=DAMAGED_PNG,
    )
    return answer


Send = Callable[[Farm, dict[str, str], dict[str, Any]], httpx.Response]


def assert_pathless(farm: Farm, answer: httpx.Response, said: str) -> None:
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert said in detail and "damaged or truncated" in detail, detail
    for leak in (str(farm.data_dir), "/tmp", "upload-", "blobs"):
        assert leak not in detail, detail


@pytest.mark.parametrize(
    ("send", "said"),
    [
        (put_frame, "frame 1 is not a readable image: it is damaged or truncated"),
        (post_frame, "frame 1 is not a readable image: it is damaged or truncated"),
        (put_pass, "the pass of frame 1 is not an image: it is damaged or truncated"),
    ],
    ids=["frame-put", "frame-post", "pass-put"],
)
def test_a_damaged_frame_or_pass_is_a_400_without_the_managers_path(
    farm: Farm, send: Send, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    submit_stand_in(farm.client, farm.admin, frame_end=1)
    runner = farm.register_runner()
    answer = send(farm, runner, claim(farm, runner))
    assert_pathless(farm, answer, said)
    captured = capsys.readouterr()  # the manager logs to stdout, or stderr once a CLI ran
    logged = captured.out + captured.err
    assert "image upload refused" in logged and str(farm.data_dir) in logged, (
        "the manager's log keeps the path"
    )


@pytest.mark.parametrize("send", [put_tile, post_tile], ids=["put", "post"])
def test_a_damaged_tile_is_a_400_without_the_managers_path(farm: Farm, send: Any) -> None:
    submit_still(farm, output_format="PNG")
    runner = farm.register_runner()
    answer = send(farm, runner, claim(farm, runner), DAMAGED_PNG, "tile.png")
    assert_pathless(farm, answer, "the tile is not a readable image: it is damaged or truncated")
