"""A worker that lost its task (back from a network split, delivering its outbox) is told
so before it sends a big file, not after: a late frame, pass or tile over a megabyte, or
of unknown length, gets its 409 before a byte is read, and nothing reaches the store."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.manager.api.runner import LOOK_FIRST_BYTES
from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.test_tiles_protocol import submit_still


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data", max_upload_bytes=8 * LOOK_FIRST_BYTES)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def big_png() -> bytes:
    """A PNG of noise, which does not compress: over the size that is looked at first."""
    noise = random.Random(7).randbytes(700 * 700 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (700, 700), noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > LOOK_FIRST_BYTES
    return buffer.getvalue()


def in_the_store(farm: Farm) -> list[str]:
    """Every file under the blob store, placed or still being written."""
    root = farm.data_dir / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def url_for(route: str, task: dict[str, Any]) -> str:
    base = f"/api/runner/tasks/{task['task_id']}"
    if route == "tile":
        return f"{base}/tile.png"
    frame = task["frames"][0]
    return f"{base}/frames/{frame}.png" if route == "frame" else f"{base}/frames/{frame}/pass/x.png"


def held(farm: Farm, route: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A runner holding a task the route takes a file of."""
    if route == "tile":
        submit_still(farm)
    else:
        submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    runner = farm.register_runner("holder")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert (task["tile"] is not None) == (route == "tile")
    return runner, task


@pytest.mark.parametrize("route", ["frame", "pass", "tile"])
@pytest.mark.parametrize("length", ["declared", "chunked"])
def test_a_late_runners_big_file_is_refused_before_it_is_stored(
    farm: Farm, route: str, length: str
) -> None:
    runner, task = held(farm, route)
    late = farm.register_runner("late")
    body = big_png()
    before = in_the_store(farm)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    refused = farm.client.put(
        url_for(route, task), headers=late, content=body if length == "declared" else chunks()
    )
    assert refused.status_code == 409, refused.text
    assert "not assigned to this runner" in refused.json()["detail"]
    assert in_the_store(farm) == before, "a late runner's big file never reaches the store"

    taken = farm.client.put(url_for(route, task), headers=runner, content=body)
    assert taken.status_code == 201, taken.text
    assert len(in_the_store(farm)) == len(before) + 1, "the holder's is stored"
