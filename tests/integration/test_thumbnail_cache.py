"""The thumbnail cache (`<data-dir>/thumbnails/`) stays bounded: a few sizes per frame."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.manager.app import create_app
from farmhand.manager.storage import thumbnail_cache
from farmhand.manager.storage.thumbnail_cache import SIZES, served_size
from tests.integration.conftest import Farm, make_settings, submit_stand_in
from tests.integration.test_web_api import bearer, make_user


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Anything touched within a minute is spared by garbage collection."""
    settings = make_settings(tmp_path / "data", blob_grace_seconds=60.0, gc_interval=0)
    with TestClient(create_app(settings)) as client:
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)  # type: ignore[arg-type]


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def job_with_two_frames(farm: Farm, headers: dict[str, str]) -> tuple[int, list[dict[str, str]]]:
    """A job of `headers`' user whose two frames (2000 by 1000 px) were rendered."""
    job_id = submit_stand_in(farm.client, headers, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    for frame, colour in ((1, "red"), (2, "blue")):
        stored = farm.client.post(
            f"/api/runner/files/{job_id}/upload",
            headers=runner,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": (f"frame_{frame:04}.png", png(2000, 1000, colour), "image/png")},
        )
        assert stored.status_code == 201, stored.text
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=headers).json()
    return job_id, [f for f in files if f["kind"] == "output"]


def cached(farm: Farm) -> list[Path]:
    folder = farm.data_dir / "thumbnails"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_a_requested_size_is_served_as_the_next_fixed_one() -> None:
    assert [served_size(n) for n in (16, 17, 64, 65, 128, 200, 256, 257)] == [
        64,
        64,
        64,
        128,
        128,
        256,
        256,
        512,
    ]
    assert [served_size(n) for n in (1024, 1025, 1600, 1601, 2048)] == [
        1024,
        1600,
        1600,
        2048,
        2048,
    ]
    for size in SIZES:
        assert served_size(size) == size


def test_the_web_uis_sizes_are_served_exactly() -> None:
    """The job page's grid asks for the default (256), its large view for 1600."""
    app_js = Path(__file__).parents[2] / "src/farmhand/manager/web/static/app.js"
    asked = {int(n) for n in re.findall(r"thumbUrl\([^)]*\)}&size=(\d+)", app_js.read_text())}
    assert asked == {1600}, "the web UI asks for other sizes now: keep them in SIZES"
    for size in (*asked, thumbnail_cache.DEFAULT_SIZE):
        assert served_size(size) == size


def test_the_cache_holds_a_few_sizes_per_frame(farm: Farm) -> None:
    """The report's steps: bob's two frames asked for at 16, 17, 18, 256 and 2048 px
    (and the web UI's 1600, and 300) make five files each, not seven."""
    bob = bearer(make_user(farm, "bob"))
    job_id, outputs = job_with_two_frames(farm, bob)
    shown: dict[int, tuple[int, int]] = {}
    for output in outputs:
        for size in (16, 17, 18, 256, 2048, 1600, 300):
            answer = farm.client.get(
                f"/api/jobs/{job_id}/files/{output['id']}/thumbnail",
                params={"size": size},
                headers=bob,
            )
            assert answer.status_code == 200, answer.text
            with Image.open(io.BytesIO(answer.content)) as image:
                shown[size] = image.size
    assert shown[16] == shown[17] == shown[18] == (64, 32), "served at 64 px"
    assert shown[256] == (256, 128) and shown[1600] == (1600, 800), "the web UI's, exactly"
    assert shown[300] == (512, 256)
    assert shown[2048] == (2000, 1000), "never enlarged past the frame"
    files = cached(farm)
    assert len(files) == 2 * 5, [f.name for f in files]  # 64, 256, 512, 1600, 2048 each
    for size in (15, 2049):
        too = farm.client.get(
            f"/api/jobs/{job_id}/files/{outputs[0]['id']}/thumbnail",
            params={"size": size},
            headers=bob,
        )
        assert too.status_code == 400, "outside 16 to 2048, as before"
