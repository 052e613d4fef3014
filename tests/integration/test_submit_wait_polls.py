"""What `submit --wait` asks the manager while it follows a job, against a real manager.

It polls about once a second for as long as the job renders. Asking for the whole job
each time meant every task each time: 3 MB a poll for a job of 10,000 tasks. It asks
for the job without its tasks (`?tasks=false`), its running tasks only while some run
(for the frames and samples it shows), and still says why a job failed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from rich.console import Console

from farmhand.cli import jobs_cmd
from farmhand.client import FarmhandClient
from farmhand.localfarm import LocalFarm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import farm_fixture, purge_jobs_and_runners, submit_stand_in

TASKS = 2000


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = farm_fixture(heartbeat_timeout=600.0)


@pytest.fixture
def api(farm: LocalFarm) -> Iterator[httpx.Client]:
    admin = {"Authorization": f"Bearer {farm.admin_token}"}
    with httpx.Client(base_url=farm.url, headers=admin, timeout=60) as client:
        yield client
        purge_jobs_and_runners(client)


class Recording(httpx.BaseTransport):
    """The client's real transport, noting each request and the bytes of its answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[httpx.URL, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.seen.append((request.url, len(response.content)))
        return response

    def close(self) -> None:
        self.inner.close()


def runner(api: httpx.Client, farm: LocalFarm, name: str) -> dict[str, str]:
    answer = api.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": name,
            "capabilities": {"protocol": WORKER_PROTOCOL},
        },
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def claim(api: httpx.Client, who: dict[str, str]) -> dict[str, Any]:
    answer = api.get("/api/runner/tasks", params={"wait": 0}, headers=who)
    assert answer.status_code == 200, f"{answer.status_code}: nothing to claim"
    return answer.json()  # type: ignore[no-any-return]


@pytest.fixture
def plain_lines(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What `follow` and `finish` write to stderr, as into a log (no terminal: lines)."""
    screen = io.StringIO()
    monkeypatch.setattr(jobs_cmd, "err", Console(file=screen, force_terminal=False, width=300))
    return screen


def test_following_a_big_job_asks_without_its_tasks_and_still_shows_the_frame_rendering(
    api: httpx.Client, farm: LocalFarm, plain_lines: io.StringIO
) -> None:
    job_id = submit_stand_in(api, frame_start=1, frame_end=TASKS, chunk_size=1)
    whole = api.get(f"/api/jobs/{job_id}")
    assert len(whole.content) > 300_000, "the detail with its tasks: what a poll was"
    w1 = runner(api, farm, "w1")
    task = claim(api, w1)
    progress = {"frame": task["frames"][0], "sample": 3, "samples_total": 8}
    sent = api.post(f"/api/runner/tasks/{task['task_id']}/progress", headers=w1, json=progress)
    assert sent.json() == {"keep_going": True}, sent.text

    polls = 0

    def between_polls(_seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:  # after two polls of the job rendering, someone cancels it
            api.delete(f"/api/jobs/{job_id}").raise_for_status()

    recording = Recording()
    with FarmhandClient(farm.url, farm.admin_token, transport=recording) as client:
        job = jobs_cmd.follow(client, job_id, sleep=between_polls)
        assert job.status == "canceled"
        with pytest.raises(typer.Exit):
            jobs_cmd.finish(client, job, farm.root / "out")

    lines = plain_lines.getvalue().splitlines()
    assert lines[0].startswith(f"job {job_id} active 0/{TASKS} frames · 0% · frame 1 sample 3/8")
    assert f"error: job {job_id} canceled: canceled by " in lines[-1], lines
    details = [url for url, _size in recording.seen if url.path == f"/api/jobs/{job_id}"]
    assert len(details) == 3 and all(url.params.get("tasks") == "false" for url in details)
    tasks = [url for url, _size in recording.seen if url.path.endswith("/tasks")]
    assert tasks and all(url.params.get_list("status") == ["active"] for url in tasks), tasks
    biggest = max(size for _url, size in recording.seen)
    assert biggest < 20_000, f"a poll answered {biggest} bytes"


def test_a_failed_job_is_said_with_its_reason(
    api: httpx.Client, farm: LocalFarm, plain_lines: io.StringIO
) -> None:
    job_id = submit_stand_in(api, frame_start=1, frame_end=3, chunk_size=1, max_attempts=1)
    w1 = runner(api, farm, "w1")
    task = claim(api, w1)
    failed = api.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=w1, json={"reason": "out of memory"}
    )
    failed.raise_for_status()
    recording = Recording()
    with FarmhandClient(farm.url, farm.admin_token, transport=recording) as client:
        job = jobs_cmd.follow(client, job_id, sleep=lambda _: None)
        with pytest.raises(typer.Exit):
            jobs_cmd.finish(client, job, farm.root / "out")
    said = plain_lines.getvalue()
    assert f"error: job {job_id} failed: task 0 failed: out of memory" in said, said
    details = [url for url, _size in recording.seen if url.path == f"/api/jobs/{job_id}"]
    assert details and all(url.params.get("tasks") == "false" for url in details), details
