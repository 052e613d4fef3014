"""The client's paged lists, against a fake manager (`httpx.MockTransport`) that
answers as the real one does.

The real manager is driven in tests/integration/test_job_lists.py and
test_cli_job_lists.py; here what needs many pages (more than the manager's 1,000 a
request) is cheap to arrange."""

from __future__ import annotations

import httpx

from farmhand.client import FarmhandClient
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
