"""The job list and a job's tasks a page at a time, on a real manager (real SQLite).

A studio farm holds thousands of jobs, some of 10,000 tasks: `GET /api/jobs` pages and
filters them (and refuses a filter it does not know instead of ignoring it), its lines
carry what a list shows (the workers on a job, its time left) so no page fetches each
job's detail, and a job's detail comes without its tasks on request, which
`GET /api/jobs/{id}/tasks` then pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings, submit_stand_in, upload_frames
from tests.integration.postgres import fresh_database


def submit(farm: Farm, headers: dict[str, str] | None = None, frames: int = 4) -> int:
    return submit_stand_in(
        farm.client, headers or farm.admin, frame_start=1, frame_end=frames, chunk_size=1
    )


def add_user(farm: Farm, name: str) -> dict[str, str]:
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def claim(farm: Farm, runner: dict[str, str]) -> dict[str, Any]:
    answer = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner)
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def report(farm: Farm, runner: dict[str, str], task: dict[str, Any], **progress: Any) -> None:
    answer = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/progress", headers=runner, json=progress
    )
    assert answer.status_code == 200, answer.text


def every_page(farm: Farm, url: str) -> Iterator[Any]:
    """Each answer from `url` on, following `Link: rel="next"` to the last page."""
    next_url: str | None = url
    while next_url is not None:
        answer = farm.client.get(next_url, headers=farm.admin)
        assert answer.status_code == 200, answer.text
        yield answer
        link = answer.links.get("next")
        next_url = link["url"] if link else None


def test_the_list_pages_in_its_order_with_the_total_and_a_link_to_the_next_page(
    farm: Farm,
) -> None:
    ids = [submit(farm) for _ in range(5)]
    whole = farm.client.get("/api/jobs", headers=farm.admin)
    assert [job["id"] for job in whole.json()] == ids[::-1], "newest first, as before"
    assert whole.headers["X-Total-Count"] == "5"
    assert "Link" not in whole.headers, "nothing past the only page"

    pages = list(every_page(farm, "/api/jobs?limit=2"))
    assert [[job["id"] for job in page.json()] for page in pages] == [
        ids[:2:-1],
        ids[2:0:-1],
        ids[:1],
    ]
    assert {page.headers["X-Total-Count"] for page in pages} == {"5"}
    assert pages[0].headers["Link"] == '</api/jobs?limit=2&offset=2>; rel="next"'
    assert "Link" not in pages[-1].headers

    past = farm.client.get("/api/jobs?offset=10", headers=farm.admin)
    assert past.json() == [] and past.headers["X-Total-Count"] == "5"


def test_status_and_owner_filter_the_list_and_its_count(farm: Farm) -> None:
    alice = add_user(farm, "alice")
    mine = [submit(farm) for _ in range(3)]
    hers = [submit(farm, alice) for _ in range(2)]
    canceled = farm.client.delete(f"/api/jobs/{mine[0]}", headers=farm.admin)
    assert canceled.status_code == 200, canceled.text

    def listed(query: str, headers: dict[str, str] | None = None) -> tuple[list[int], str]:
        answer = farm.client.get(f"/api/jobs{query}", headers=headers or farm.admin)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()], answer.headers["X-Total-Count"]

    assert listed("?owner=alice") == (hers[::-1], "2")
    assert listed("?status=canceled") == ([mine[0]], "1")
    assert listed("?status=canceled&status=queued&owner=admin") == (mine[::-1], "3")
    assert listed("?status=queued&limit=1") == ([hers[1]], "4")
    paged = list(every_page(farm, "/api/jobs?status=queued&owner=admin&limit=1"))
    assert [page.json()[0]["id"] for page in paged] == mine[:0:-1], "the filters stay"
    assert listed("?owner=nobody") == ([], "0")
    # A user's list is their own jobs, however it is filtered.
    assert listed("", alice) == (hers[::-1], "2")
    assert listed("?owner=admin", alice) == ([], "0")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?state=failed", "state"),  # a misspelt filter must not pass for one applied
        ("?page=2", "page"),
        ("?status=done", "status"),
        ("?status=", "status"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-1", "offset"),
    ],
)
def test_an_unknown_or_bad_parameter_is_a_400_naming_it(farm: Farm, query: str, named: str) -> None:
    submit(farm)
    answer = farm.client.get(f"/api/jobs{query}", headers=farm.admin)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and f"query.{named}" in detail, detail


@pytest.mark.parametrize(
    ("query", "named"), [("?task=false", "task"), ("?tasks=maybe", "tasks"), ("?limit=5", "limit")]
)
def test_a_job_s_unknown_or_bad_parameter_is_a_400_naming_it(
    farm: Farm, query: str, named: str
) -> None:
    """`?task=false` (a typo) answered the whole job, every task of it, as if asked for."""
    job_id = submit(farm)
    answer = farm.client.get(f"/api/jobs/{job_id}{query}", headers=farm.admin)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and f"query.{named}" in detail, detail


def test_a_list_line_shows_the_detail_s_workers_and_time_left(farm: Farm) -> None:
    running = submit(farm, frames=6)  # the older job: its tasks are handed out first
    waiting = submit(farm)
    first, second = farm.register_runner("gpu-b"), farm.register_runner("gpu-a")
    tasks = [claim(farm, first), claim(farm, second)]
    assert {task["job_id"] for task in tasks} == {running}
    report(farm, first, tasks[0], frames_done=1, render_seconds=4.0)
    report(farm, second, tasks[1], frame=2, sample=10, samples_total=100)

    lines = {job["id"]: job for job in farm.client.get("/api/jobs", headers=farm.admin).json()}
    detail = farm.client.get(f"/api/jobs/{running}", headers=farm.admin).json()
    assert lines[running]["workers"] == ["gpu-a", "gpu-b"]
    assert lines[running]["workers"] == sorted(
        task["worker"] for task in detail["tasks"] if task["status"] == "active"
    )
    # 5 frames left at 4 s a frame, shared by the 2 workers on the job.
    assert lines[running]["eta_seconds"] == detail["eta_seconds"] == 10.0
    assert (lines[waiting]["workers"], lines[waiting]["eta_seconds"]) == ([], None)
    # Every answer that gives a job's line gives the same.
    patched = farm.client.patch(
        f"/api/jobs/{running}", headers=farm.admin, json={"priority": 60}
    ).json()
    assert patched["workers"] == ["gpu-a", "gpu-b"] and patched["eta_seconds"] == 10.0


def test_a_job_with_nothing_running_has_no_time_left(farm: Farm) -> None:
    """A paused job, its running task done and the rest queued, kept its last "47s"
    remaining for minutes while its elapsed time rose: nothing brings it nearer its end,
    so it has no time left to tell (null, a dash on the page) until a task runs again."""
    job_id = submit(farm, frames=6)
    runner = farm.register_runner("gpu-a")
    task = claim(farm, runner)
    report(farm, runner, task, frames_done=1, render_seconds=4.0)
    running = farm.client.get(f"/api/jobs/{job_id}?tasks=false", headers=farm.admin).json()
    assert running["eta_seconds"] == 20.0  # 5 frames left at 4 s, one worker on it

    paused = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "pause"}
    )
    assert paused.status_code == 200, paused.text
    upload_frames(farm, runner, task)
    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=runner,
        json={"frames": task["frames"]},
    )
    assert done.status_code == 200, done.text

    detail = farm.client.get(f"/api/jobs/{job_id}?tasks=false", headers=farm.admin).json()
    line = next(j for j in farm.client.get("/api/jobs", headers=farm.admin).json())
    assert (detail["status"], detail["frames_done"], detail["task_counts"]["active"]) == (
        "paused",
        1,
        0,
    )
    assert detail["eta_seconds"] is None and line["eta_seconds"] is None
    # Resumed but with no worker asking, the queue does not move either.
    resumed = farm.client.post(
        f"/api/jobs/{job_id}/actions", headers=farm.admin, json={"action": "resume"}
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["eta_seconds"] is None
    # Once a task runs again, the time left is back.
    claim(farm, runner)
    again = farm.client.get(f"/api/jobs/{job_id}?tasks=false", headers=farm.admin).json()
    assert again["eta_seconds"] == 20.0


@contextmanager
def counting_queries(farm: Farm) -> Iterator[list[str]]:
    """The SQL statements the manager runs meanwhile."""
    engine = farm.client.app.state.farm.db.read_engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_page_of_jobs_takes_as_many_queries_for_many_running_jobs_as_for_one(
    farm: Farm,
) -> None:
    def running_jobs(count: int) -> None:
        for _ in range(count):
            job_id = submit(farm, frames=1)
            runner = farm.register_runner(f"w{job_id}")
            task = claim(farm, runner)
            assert task["job_id"] == job_id
            report(farm, runner, task, frame=1)

    def queries() -> int:
        with counting_queries(farm) as statements:
            answer = farm.client.get("/api/jobs", headers=farm.admin)
        assert answer.status_code == 200, answer.text
        assert all(job["workers"] for job in answer.json())
        return len(statements)

    # The fewest of three: the manager's own background passes may read meanwhile.
    running_jobs(1)
    one = min(queries() for _ in range(3))
    running_jobs(5)
    assert min(queries() for _ in range(3)) == one


def test_a_page_of_jobs_takes_as_many_queries_for_many_waiting_jobs_as_for_one(
    farm: Farm,
) -> None:
    """Jobs no worker may take (a tag nobody has) say why, in the same few queries
    however many of them the page holds."""
    farm.register_runner("plain")

    def waiting_jobs(count: int) -> None:
        for _ in range(count):
            submit_stand_in(
                farm.client, farm.admin, frame_start=1, frame_end=1, required_tags=["gpu"]
            )

    def queries() -> int:
        with counting_queries(farm) as statements:
            answer = farm.client.get("/api/jobs", headers=farm.admin)
        assert answer.status_code == 200, answer.text
        assert all(job["status_reason"] for job in answer.json()), answer.json()
        return len(statements)

    # The fewest of three: the manager's own background passes may read meanwhile.
    waiting_jobs(1)
    one = min(queries() for _ in range(3))
    waiting_jobs(5)
    assert min(queries() for _ in range(3)) == one


def test_a_job_without_its_tasks_is_otherwise_the_same(farm: Farm) -> None:
    job_id = submit(farm, frames=3)
    whole = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    answer = farm.client.get(f"/api/jobs/{job_id}?tasks=false", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    light = answer.json()
    assert len(whole["tasks"]) == 3 and light["tasks"] == []
    assert light["task_counts"] == {
        "queued": 3,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 0,
    }, "counted without them"
    assert {**light, "tasks": whole["tasks"]} == whole
    assert answer.headers["Retry-After"], "still polled as the detail is"

    # Running, with the numbers read from its tasks' columns: the same again.
    runner = farm.register_runner("gpu-a")
    task = claim(farm, runner)
    report(farm, runner, task, frames_done=1, render_seconds=4.0, peak_memory_bytes=5 << 20)
    whole = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()
    light = farm.client.get(f"/api/jobs/{job_id}?tasks=false", headers=farm.admin).json()
    assert (light["workers"], light["seconds_per_frame"], light["peak_memory_bytes"]) == (
        ["gpu-a"],
        4.0,
        5 << 20,
    )
    assert light["progress"] > 0 and light["eta_seconds"] is not None
    clock = {"elapsed_seconds": 0}  # read at each answer
    assert {**light, **clock, "tasks": whole["tasks"]} == {**whole, **clock}
    assert farm.client.get(f"/api/jobs/{job_id}?tasks=no-way", headers=farm.admin).status_code == (
        400
    )


def test_a_job_s_tasks_page_in_index_order_as_the_detail_shows_them(farm: Farm) -> None:
    job_id = submit(farm, frames=7)
    runner = farm.register_runner()
    held = claim(farm, runner)
    report(farm, runner, held, frame=1, sample=5, samples_total=50)
    detail = farm.client.get(f"/api/jobs/{job_id}", headers=farm.admin).json()

    pages = list(every_page(farm, f"/api/jobs/{job_id}/tasks?limit=3"))
    assert [len(page.json()) for page in pages] == [3, 3, 1]
    assert [task for page in pages for task in page.json()] == detail["tasks"]
    assert {page.headers["X-Total-Count"] for page in pages} == {"7"}

    answer = farm.client.get(
        f"/api/jobs/{job_id}/tasks?status=active&status=failed", headers=farm.admin
    )
    assert answer.json() == [t for t in detail["tasks"] if t["status"] == "active"]
    assert answer.json()[0]["worker"] == "w1" and answer.headers["X-Total-Count"] == "1"
    queued = farm.client.get(
        f"/api/jobs/{job_id}/tasks?status=queued&offset=4&limit=10", headers=farm.admin
    )
    assert [t["index"] for t in queued.json()] == [t["index"] for t in detail["tasks"][5:]]
    assert queued.headers["X-Total-Count"] == "6" and "Link" not in queued.headers


@pytest.mark.parametrize("query", ["?page=2", "?limit=1001", "?limit=0", "?status=paused"])
def test_a_bad_tasks_query_is_a_400(farm: Farm, query: str) -> None:
    job_id = submit(farm)
    answer = farm.client.get(f"/api/jobs/{job_id}/tasks{query}", headers=farm.admin)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("query.")


def test_a_job_s_tasks_are_seen_by_whom_sees_the_job(farm: Farm) -> None:
    alice, bob = add_user(farm, "alice"), add_user(farm, "bob")
    job_id = submit(farm, alice)
    for url in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/tasks"):
        assert farm.client.get(url, headers=alice).status_code == 200
        assert farm.client.get(url, headers=farm.admin).status_code == 200
        refused = farm.client.get(url, headers=bob)
        assert (refused.status_code, refused.json()) == (
            404,
            {"detail": f"job {job_id} not found"},
        ), "someone else's job is not found, so ids do not leak"
        assert farm.client.get(url).status_code == 401
    missing = farm.client.get("/api/jobs/999/tasks", headers=farm.admin)
    assert missing.status_code == 404


@pytest.mark.xdist_group("postgres")
@pytest.mark.parametrize(
    "test",
    [
        test_the_list_pages_in_its_order_with_the_total_and_a_link_to_the_next_page,
        test_status_and_owner_filter_the_list_and_its_count,
        test_a_list_line_shows_the_detail_s_workers_and_time_left,
        test_a_job_s_tasks_page_in_index_order_as_the_detail_shows_them,
    ],
    ids=["pages", "filters", "workers-eta", "tasks"],
)
def test_the_same_on_postgres(
    tmp_path: Path, postgres_url: str, test: Callable[[Farm], None]
) -> None:
    url = fresh_database(postgres_url, f"lists_{tmp_path.name}")
    settings = make_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        test(Farm(client, settings.admin_token, settings.runner_token, settings.data_dir))
