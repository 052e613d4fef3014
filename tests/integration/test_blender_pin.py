"""One job, one Blender: its render tasks all render with the series its first one used.

Tiles of a still rendered by Blender 3.4 and 5.0 differ visibly (colour management
defaults, render engines): the merged frame has seams, and frames of an animation
flicker. Scripted runners (no Blender) that name their Blenders, through the API: which
task a claim hands whom, and what the job says when it cannot go on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.shared.blendfile import best_version
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import Farm, make_settings, png_bytes
from tests.integration.postgres import fresh_database
from tests.integration.test_scheduling import (
    claim,
    claimed,
    fail,
    farm_for,
    finish,
    job,
    runners,
    submit,
)
from tests.integration.test_tiles_protocol import upload_tile


@pytest.fixture
def strict_farm(tmp_path: Path) -> Iterator[Farm]:
    """A farm that blocklists a worker after two failures of one job."""
    settings = make_settings(tmp_path / "data", blocklist_threshold=2)
    with TestClient(create_app(settings)) as client:
        yield farm_for(client, settings)


def runner(farm: Farm, name: str, *blenders: str) -> dict[str, str]:
    """A runner with these Blenders that renders and merges (as every real worker does)."""
    caps = {"blender_versions": list(blenders), "task_types": ["render", "merge"]}
    answer = farm.client.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": name,
            "capabilities": {"protocol": WORKER_PROTOCOL, **caps},
        },
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def finish_tile(farm: Farm, who: dict[str, str], task: dict[str, Any]) -> None:
    assert upload_tile(farm, who, task, png_bytes(4, 3)) == 201
    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=who, json={"frames": []}
    )
    assert done.status_code == 200, done.text


def test_every_tile_of_a_still_renders_with_the_first_tiles_blender(farm: Farm) -> None:
    still = submit(farm, "7-7", tiles={"columns": 3, "rows": 2})  # saved by 3.4: both open it
    old, new = runner(farm, "debian", "3.4.1"), runner(farm, "bpy", "5.0.0")
    assert job(farm, still)["blender_pinned"] is None

    first = claimed(farm, new)
    assert first["tile"] is not None
    assert job(farm, still)["blender_pinned"] == "5.0"
    assert claim(farm, old) is None, "a tile rendered by 3.4 would be lighter than 5.0's"
    finish_tile(farm, new, first)
    for _ in range(5):
        assert claim(farm, old) is None
        tile = claimed(farm, new)
        assert tile["type"] == "render"
        finish_tile(farm, new, tile)

    merge = claimed(farm, old)  # the merge runs no Blender: any worker may do it
    assert merge["type"] == "merge"
    finish(farm, old, merge)
    done = job(farm, still)
    assert done["status"] == "completed"
    workers: dict[str, set[str]] = {}
    for task in done["tasks"]:
        workers.setdefault(task["type"], set()).add(task["worker"])
    assert workers == {"render": {"bpy"}, "merge": {"debian"}}


def picks(task: dict[str, Any], *blenders: str) -> str | None:
    """The Blender a worker with `blenders` renders the assigned task with: the newest
    inside the range the assignment names (`worker/blender/renderer.install_for`)."""
    return best_version(list(blenders), task["blender_saved"], task["blender_version"])


def test_every_frame_of_an_animation_renders_with_one_blender_series(farm: Farm) -> None:
    animation = submit(farm, "1-4")
    old = runner(farm, "debian", "3.4.1")
    only5 = runner(farm, "bpy", "5.0.0")
    patched = runner(farm, "patched", "3.4.2")  # another 3.4: same series, same look

    first = claimed(farm, old)
    assert job(farm, animation)["blender_pinned"] == "3.4"
    assert first["blender_version"] == "==3.4", "the first render's worker is told the pin too"
    assert claim(farm, only5) is None, "it would render the frame with 5.0: flicker"
    second = claimed(farm, patched)
    finish(farm, old, first)
    finish(farm, patched, second)
    while (task := claim(farm, old)) is not None:
        finish(farm, old, task)
    done = job(farm, animation)
    assert done["status"] == "completed"
    assert {t["worker"] for t in done["tasks"]} == {"debian", "patched"}


def test_a_worker_with_the_pinned_series_and_a_newer_one_renders_with_the_pinned(
    farm: Farm,
) -> None:
    """Left to itself a worker renders with its newest Blender that fits; the assignment
    narrows the job's range to the pin, so one with 5.0 and 5.1 helps a job begun with
    5.0, with its 5.0."""
    animation = submit(farm, "1-3")
    only50 = runner(farm, "bpy50", "5.0.0")
    both = runner(farm, "both", "5.0.1", "5.1.0")
    first = claimed(farm, only50)
    assert job(farm, animation)["blender_pinned"] == "5.0"

    second = claimed(farm, both)
    assert second["blender_version"] == "==5.0"
    assert picks(second, "5.0.1", "5.1.0") == "5.0.1"
    finish(farm, only50, first)
    finish(farm, both, second)
    assert job(farm, animation)["status_reason"] is None


def test_a_job_within_a_range_is_pinned_to_what_the_range_lets_a_worker_use(
    farm: Farm,
) -> None:
    ranged = submit(farm, "1-3", blender_version=">=4.2,<5")
    both = runner(farm, "both", "4.2.3", "5.0.0")  # renders this one with 4.2
    only5 = runner(farm, "only5", "5.0.0")
    newer42 = runner(farm, "newer42", "4.2.5", "4.3.0")  # 4.3 is in range, 4.2 pinned
    first = claimed(farm, both)
    assert job(farm, ranged)["blender_pinned"] == "4.2"
    assert picks(first, "4.2.3", "5.0.0") == "4.2.3"
    assert claim(farm, only5) is None
    second = claimed(farm, newer42)
    assert second["blender_version"] == ">=4.2,<5,==4.2"
    assert picks(second, "4.2.5", "4.3.0") == "4.2.5"


def test_a_job_whose_blender_left_waits_and_requeue_all_frees_it(farm: Farm) -> None:
    animation = submit(farm, "1-3")
    new = runner(farm, "bpy", "5.0.0")
    finish(farm, new, claimed(farm, new))
    gone = farm.client.delete(
        f"/api/admin/runners/{runners(farm)['bpy']['id']}", headers=farm.admin
    )
    assert gone.status_code == 204
    old = runner(farm, "debian", "3.4.1")

    assert claim(farm, old) is None, "frames 2-3 must match frame 1's Blender"
    waiting = job(farm, animation)
    assert waiting["blender_pinned"] == "5.0"
    assert waiting["status_reason"] == (
        "waiting: the job needs Blender 5.0, which its first render task used (every tile "
        "and frame of a job renders with one Blender); the online workers would render it "
        "with 3.4"
    )

    failed_only = farm.client.post(
        f"/api/jobs/{animation}/actions", headers=farm.admin, json={"action": "requeue-failed"}
    )
    assert failed_only.status_code == 200
    assert job(farm, animation)["blender_pinned"] == "5.0", "frame 1 stays, so does its Blender"

    again = farm.client.post(
        f"/api/jobs/{animation}/actions", headers=farm.admin, json={"action": "requeue-all"}
    )
    assert again.status_code == 200
    assert job(farm, animation)["blender_pinned"] is None, "every frame renders again"
    while (task := claim(farm, old)) is not None:
        finish(farm, old, task)
    done = job(farm, animation)
    assert done["status"] == "completed" and done["blender_pinned"] == "3.4"
    assert {t["worker"] for t in done["tasks"]} == {"debian"}


def test_requeue_all_keeps_the_pin_while_a_render_still_runs(farm: Farm) -> None:
    animation = submit(farm, "1-2")
    new = runner(farm, "bpy", "5.0.0")
    old = runner(farm, "debian", "3.4.1")
    finish(farm, new, claimed(farm, new))
    running = claimed(farm, new)
    again = farm.client.post(
        f"/api/jobs/{animation}/actions", headers=farm.admin, json={"action": "requeue-all"}
    )
    assert again.status_code == 200
    assert job(farm, animation)["blender_pinned"] == "5.0", "frame 2 still renders with 5.0"
    assert claim(farm, old) is None
    finish(farm, new, running)


def fail_two_tasks_each(farm: Farm, one: dict[str, str], other: dict[str, str]) -> None:
    """`one` and `other` each fail two different tasks: blocklisted at the threshold, 2."""
    first, second = claimed(farm, one), claimed(farm, other)
    fail(farm, one, first, "frame: CUDA error: out of memory")
    fail(farm, other, second, "frame: CUDA error: out of memory")
    fail(farm, one, claimed(farm, one), "frame: CUDA error: out of memory")
    fail(farm, other, claimed(farm, other), "frame: CUDA error: illegal address")


def test_a_job_with_nothing_rendered_in_its_pinned_blender_is_released_from_it(
    strict_farm: Farm,
) -> None:
    """When every worker with the pinned series is blocklisted before a frame of the
    job was rendered, there is nothing to match: the job goes on with another Blender
    instead of failing."""
    farm = strict_farm
    animation = submit(farm, "1-4", max_attempts=5)
    bpy1, bpy2 = runner(farm, "bpy1", "5.0.0"), runner(farm, "bpy2", "5.0.0")
    old = runner(farm, "debian", "3.4.1")
    first, second = claimed(farm, bpy1), claimed(farm, bpy2)
    assert job(farm, animation)["blender_pinned"] == "5.0"
    fail(farm, bpy1, first, "frame: CUDA error: out of memory")
    fail(farm, bpy2, second, "frame: CUDA error: out of memory")
    fail(farm, bpy1, claimed(farm, bpy1), "frame: CUDA error: out of memory")  # blocklisted
    assert claim(farm, old) is None, "while a 5.0 worker may run it, the job keeps 5.0"
    fail(farm, bpy2, claimed(farm, bpy2), "frame: CUDA error: out of memory")

    released = job(farm, animation)
    assert released["status"] == "queued", released["status_reason"]
    assert released["blender_pinned"] is None
    while (task := claim(farm, old)) is not None:
        assert task["blender_version"] == "==3.4"
        finish(farm, old, task)
    done = job(farm, animation)
    assert done["status"] == "completed" and done["blender_pinned"] == "3.4"
    assert {t["worker"] for t in done["tasks"]} == {"debian"}


def test_a_job_with_frames_in_its_pinned_blender_fails_when_no_such_worker_is_left(
    strict_farm: Farm,
) -> None:
    farm = strict_farm
    animation = submit(farm, "1-4", max_attempts=5)
    bpy1, bpy2 = runner(farm, "bpy1", "5.0.0"), runner(farm, "bpy2", "5.0.0")
    old = runner(farm, "debian", "3.4.1")
    finish(farm, bpy1, claimed(farm, bpy1))  # frame 1 exists, rendered with 5.0
    fail_two_tasks_each(farm, bpy1, bpy2)

    assert claim(farm, old) is None, "a 3.4 worker may not finish a job begun with 5.0"
    failed = job(farm, animation)
    assert failed["status"] == "failed"
    assert failed["blender_pinned"] == "5.0"
    nobody = (
        "no worker left that may run it (2 blocklisted, last: bpy2; none other available "
        "renders with Blender 5.0, which its first render used)"
    )
    assert failed["status_reason"] == (
        f"task 1 failed: {nobody}; its last error: frame: CUDA error: illegal address"
    )
    assert failed["tasks"][3]["last_error"] == (
        f"{nobody}; the job's last render error: frame: CUDA error: illegal address"
    )


def test_merge_tasks_are_not_pinned(farm: Farm) -> None:
    still = submit(farm, "1-1", tiles={"columns": 2, "rows": 1})
    new = runner(farm, "bpy", "5.0.0")
    merger = runner(farm, "debian", "3.4.1")
    for _ in range(2):
        finish_tile(farm, new, claimed(farm, new))
    assert job(farm, still)["blender_pinned"] == "5.0"
    assert claimed(farm, merger)["type"] == "merge", "a merge runs no Blender"


def test_workers_that_name_no_blender_pin_nothing(farm: Farm) -> None:
    """Stand-ins (no Blender) are not checked for a file's version; nor for a pin."""
    animation = submit(farm, "1-2")
    stand_in = farm.register_runner("stand-in")
    new = runner(farm, "bpy", "5.0.0")
    finish(farm, stand_in, claimed(farm, stand_in))
    assert job(farm, animation)["blender_pinned"] is None
    finish(farm, new, claimed(farm, new))
    assert job(farm, animation)["blender_pinned"] == "5.0"


def grab_all(farm: Farm, clients: list[TestClient], jobs: list[int]) -> dict[int, set[str]]:
    """Runners with 3.4 and with 5.0 claim at once, through each of `clients` (managers
    on one database), until nothing is left; the Blender series each job's renders got."""
    versions = {"3.4": "3.4.1", "5.0": "5.0.0"}
    named = [(f"w{n}", series) for n, series in enumerate(["3.4", "5.0"] * 3)]
    who = {name: runner(farm, name, versions[series]) for name, series in named}
    got: dict[int, set[str]] = {job_id: set() for job_id in jobs}
    lock = threading.Lock()

    def grab(name: str, series: str, client: TestClient) -> None:
        while True:
            answer = client.get("/api/runner/tasks", params={"wait": 0}, headers=who[name])
            if answer.status_code == 204:
                return
            task = answer.json()
            with lock:
                got[task["job_id"]].add(series)

    threads = [
        threading.Thread(target=grab, args=(name, series, clients[n % len(clients)]))
        for n, (name, series) in enumerate(named)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def test_workers_racing_for_a_jobs_first_tasks_pin_it_once(farm: Farm) -> None:
    jobs = [submit(farm, "1-8") for _ in range(4)]
    got = grab_all(farm, [farm.client], jobs)
    assert all(len(series) == 1 for series in got.values()), got
    assert {job(farm, j)["blender_pinned"] for j in jobs} <= {"3.4", "5.0"}
    assert all(job(farm, j)["blender_pinned"] in got[j] for j in jobs)


@pytest.mark.xdist_group("postgres")
def test_two_managers_racing_to_pin_jobs_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """Two managers on one PostgreSQL: their claims are separate transactions, so two
    workers with different Blenders may pin one job at the same moment; one wins."""
    url = fresh_database(postgres_url, f"pin_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        farm = farm_for(first, settings)
        jobs = [submit(farm, "1-8") for _ in range(4)]
        got = grab_all(farm, [first, second], jobs)
        assert all(len(series) == 1 for series in got.values()), got
        assert all(job(farm, j)["blender_pinned"] in got[j] for j in jobs)
