"""`GET /metrics`: who may read it, and that it follows the farm as a dashboard would.

The text is parsed with Prometheus' own parser, so a malformed line fails here as it
would fail a scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import (
    Farm,
    make_settings,
    metric,
    png_bytes,
    scrape_metrics,
    submit_stand_in,
    upload_frames,
)
from tests.integration.test_output_uploads import jpeg_bytes
from tests.integration.test_scheduling import claim, claimed, fail, farm_for, finish, runner, submit

METRICS_TOKEN = "fh_metrics_test_token"


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """A manager with a metrics token, as a studio's Prometheus would scrape it."""
    settings = make_settings(tmp_path / "data", metrics_token=METRICS_TOKEN)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def scrape(farm: Farm) -> dict[str, float]:
    return scrape_metrics(farm.client, {"Authorization": f"Bearer {METRICS_TOKEN}"})


def value(samples: dict[str, float], name: str, /, **labels: str) -> float:
    return samples[metric(name, **labels)]


def test_only_admins_and_the_metrics_token_read_the_metrics(farm: Farm) -> None:
    assert farm.client.get("/metrics").status_code == 401
    wrong = farm.client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    made = farm.client.post(
        "/api/admin/users", headers=farm.admin, json={"name": "ana", "role": "user"}
    )
    ana = {"Authorization": f"Bearer {made.json()['token']}"}
    assert farm.client.get("/metrics", headers=ana).status_code == 403
    assert farm.client.get("/metrics", headers=farm.admin).status_code == 200
    # The scraper's token reads the metrics and nothing else.
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert farm.client.get("/metrics", headers=scraper).status_code == 200
    assert farm.client.get("/api/jobs", headers=scraper).status_code == 401
    assert farm.client.get("/api/admin/runners", headers=scraper).status_code == 401


def test_metrics_follow_a_job_from_queue_to_frames(farm: Farm) -> None:
    empty = scrape(farm)
    assert value(empty, "farmhand_jobs", status="queued") == 0, "every status, 0 included"
    assert value(empty, "farmhand_tasks", type="render", status="active") == 0
    assert value(empty, "farmhand_oldest_queued_job_age_seconds") == 0
    assert value(empty, "farmhand_data_disk_size_bytes") > 0

    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=3, chunk_size=1)
    queued = scrape(farm)
    assert value(queued, "farmhand_jobs", status="queued") == 1
    assert value(queued, "farmhand_tasks", type="render", status="queued") == 3
    assert value(queued, "farmhand_blobs") == 1, "the .blend"

    runner = farm.register_runner("box-7")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    busy = scrape(farm)
    assert value(busy, "farmhand_jobs", status="active") == 1
    assert value(busy, "farmhand_jobs", status="queued") == 0
    assert value(busy, "farmhand_tasks", type="render", status="active") == 1
    assert value(busy, "farmhand_tasks", type="render", status="queued") == 2
    assert value(busy, "farmhand_runners", status="busy") == 1
    assert value(busy, "farmhand_runners", status="idle") == 0
    assert 0 <= value(busy, "farmhand_runner_heartbeat_age_seconds", id="1", name="box-7") < 60

    upload_frames(farm, runner, task)
    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1]}
    )
    assert done.status_code == 200, done.text
    after = scrape(farm)
    assert value(after, "farmhand_tasks", type="render", status="completed") == 1
    assert value(after, "farmhand_frames_stored") == 1
    assert value(after, "farmhand_blobs") == 2, "the .blend and the frame"
    assert value(after, "farmhand_runners", status="idle") == 1


def test_a_frame_with_its_preview_and_passes_is_one_frame_stored(farm: Farm) -> None:
    """Blender's preview JPEG and the File Output passes of a frame carry its number
    too; the frames a dashboard counts are the rendered frames, each once."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner("w1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    for frame in task["frames"]:
        base = f"/api/runner/tasks/{task['task_id']}/frames/{frame}"
        extras = {
            f"{base}/preview/preview.jpg": jpeg_bytes(),
            f"{base}/pass/File_Output/normal{frame:04d}.png": png_bytes(colour="blue"),
            f"{base}/pass/File_Output/depth{frame:04d}.png": png_bytes(colour="white"),
        }
        for path, data in {f"{base}.png": png_bytes(), **extras}.items():
            answer = farm.client.put(path, headers=runner, content=data)
            assert answer.status_code == 201, answer.text

    assert value(scrape(farm), "farmhand_frames_stored") == 2


def test_a_runner_kept_off_two_task_types_of_a_job_is_one_entry(tmp_path: Path) -> None:
    """A blocklist entry bars a runner from one task type of a job: failing a job's
    render and then its video makes two, yet one runner is kept off one job."""
    settings = make_settings(tmp_path / "data", blocklist_threshold=1, metrics_token=METRICS_TOKEN)
    with TestClient(create_app(settings)) as client:
        farm = farm_for(client, settings)
        job_id = submit(farm, "1-2", max_attempts=5, video={"codec": "h264", "container": "mp4"})
        encoder = runner(farm, "encoder", types=["render", "video"])
        renderer = runner(farm, "renderer")
        fail(farm, encoder, claimed(farm, encoder))
        while (task := claim(farm, renderer)) is not None:
            finish(farm, renderer, task)
        video = claimed(farm, encoder)
        assert (video["job_id"], video["type"]) == (job_id, "video")
        fail(farm, encoder, video)
        entries = client.get("/api/admin/blocklist", headers=farm.admin).json()
        assert sorted((e["worker"], e["task_type"]) for e in entries) == [
            ("encoder", "render"),
            ("encoder", "video"),
        ]

        assert value(scrape(farm), "farmhand_blocklist_entries") == 1
