"""The client's paged lists and its parallel download, against a fake manager
(`httpx.MockTransport`) that answers as the real one does.

The real manager is driven in tests/integration/test_job_lists.py and
test_cli_job_lists.py; here what needs many pages (more than the manager's 1,000 a
request) or requests in flight at once is cheap to arrange."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest

from farmhand.client import FarmhandClient, FarmhandError
from farmhand.client.client import DOWNLOAD_THREADS
from farmhand.shared.schemas import JOB_PAGE_MAX, JobStatus

BASE = "http://manager.test"


def job(job_id: int, status: str = "queued") -> dict[str, object]:
    return {
        "id": job_id,
        "name": f"shot{job_id}",
        "owner": "ann",
        "status": status,
        "priority": 50,
        "progress": 0.0,
        "frames_done": 0,
        "frames_total": 1,
        "created_at": "2024-05-01T10:00:00Z",
        "started_at": None,
        "finished_at": None,
    }


def paging_manager(jobs: list[dict[str, object]], asked: list[httpx.URL]) -> httpx.MockTransport:
    """`GET /api/jobs` as the manager answers it: filtered by status, at most
    `JOB_PAGE_MAX` a page (more is a 400), with `X-Total-Count`."""

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        query = request.url.params
        statuses = query.get_list("status")
        chosen = [j for j in jobs if not statuses or j["status"] in statuses]
        limit, offset = int(query.get("limit", JOB_PAGE_MAX)), int(query.get("offset", 0))
        if limit > JOB_PAGE_MAX:
            return httpx.Response(400, json={"detail": "query.limit: too big"})
        return httpx.Response(
            200,
            json=chosen[offset : offset + limit],
            headers={"X-Total-Count": str(len(chosen))},
        )

    return httpx.MockTransport(handler)


def test_all_jobs_are_listed_past_the_manager_s_page() -> None:
    jobs = [job(n) for n in range(2500, 0, -1)]
    asked: list[httpx.URL] = []
    with FarmhandClient(BASE, "tok", transport=paging_manager(jobs, asked)) as client:
        assert [j.id for j in client.list_jobs()] == list(range(2500, 0, -1))
        assert len(asked) == 3, "three pages of at most 1,000"
        asked.clear()
        page = client.jobs(limit=1500, offset=10)
        assert [j.id for j in page.items] == list(range(2490, 990, -1))
        assert page.total == 2500
        assert [(u.params["limit"], u.params["offset"]) for u in asked] == [
            ("1000", "10"),
            ("500", "1010"),
        ]


def test_a_filter_travels_with_every_page() -> None:
    jobs = [job(n, "failed" if n % 2 else "queued") for n in range(2200, 0, -1)]
    asked: list[httpx.URL] = []
    with FarmhandClient(BASE, "tok", transport=paging_manager(jobs, asked)) as client:
        failed = client.jobs(status=[JobStatus.FAILED], limit=3)
        assert [j.id for j in failed.items] == [2199, 2197, 2195] and failed.total == 1100
        assert {j.status for j in client.list_jobs(status=[JobStatus.FAILED])} == {"failed"}
        assert all(u.params.get_list("status") == ["failed"] for u in asked)


def test_a_manager_before_paging_is_still_listed_whole() -> None:
    """An older manager ignores the query and sends no `X-Total-Count`."""
    jobs = [job(n) for n in range(30, 0, -1)]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jobs))
    with FarmhandClient(BASE, "tok", transport=transport) as client:
        assert len(client.list_jobs()) == 30
        page = client.jobs(limit=5)
        assert [j.id for j in page.items] == [30, 29, 28, 27, 26] and page.total == 30


def frames_manager(count: int, in_flight: threading.Barrier) -> httpx.MockTransport:
    """A job of `count` small frames whose downloads each wait until `in_flight`
    downloads are under way at once (a download one at a time breaks the barrier)."""
    frames = {n: f"frame {n}".encode() for n in range(1, count + 1)}
    files = [
        {
            "id": n,
            "kind": "output",
            "path": f"frames/{n:04d}.png",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "frame": n,
            "task_id": n,
        }
        for n, data in frames.items()
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/7/files":
            return httpx.Response(200, json=files)
        file_id = int(request.url.path.split("/")[5])
        in_flight.wait()
        return httpx.Response(200, content=frames[file_id])

    return httpx.MockTransport(handler)


def test_frames_are_downloaded_several_at_once(tmp_path: Path) -> None:
    together = threading.Barrier(DOWNLOAD_THREADS, timeout=30)
    progress: list[tuple[int, int]] = []
    with FarmhandClient(BASE, "tok", transport=frames_manager(24, together)) as client:
        report = client.fetch_outputs(
            7, tmp_path, lambda done, total: progress.append((done, total))
        )
    assert report.paths == [tmp_path / f"frames/{n:04d}.png" for n in range(1, 25)]
    assert all(path.read_bytes() == f"frame {n}".encode() for n, path in enumerate(report.paths, 1))
    total = sum(len(f"frame {n}") for n in range(1, 25))
    assert progress[-1] == (total, total)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert not list(tmp_path.rglob("*.part"))


def test_a_failed_frame_fails_the_download_and_leaves_no_part_file(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/7/files":
            return httpx.Response(
                200,
                json=[
                    {
                        "id": n,
                        "kind": "output",
                        "path": f"frames/{n:04d}.png",
                        "size": 1,
                        "sha256": hashlib.sha256(b"x").hexdigest(),
                        "frame": n,
                        "task_id": n,
                    }
                    for n in range(1, 20)
                ],
            )
        if request.url.path.endswith("/files/5/download"):
            return httpx.Response(404, json={"detail": "file 5 not found"})
        return httpx.Response(200, content=b"x")

    with (
        FarmhandClient(BASE, "tok", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(FarmhandError, match="file 5 not found"),
    ):
        client.fetch_outputs(7, tmp_path)
    assert not list(tmp_path.rglob("*.part"))
