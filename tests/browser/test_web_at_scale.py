"""The web UI on a studio-sized farm: a job of 10,000 tasks and hundreds of jobs.

The job page used to fetch every task of the job on every refresh and draw a row for
each (a 10,000-task job froze the browser for seconds), and the jobs list fetched every
job and up to 25 jobs' full details (all their tasks) on every refresh to show workers
and time left. Now the job page asks for the job without its tasks and one page of them,
and the list asks the manager for one filtered page of jobs, whose rows carry their
workers and time left.

No Blender here: jobs are stand-in .blend files and the runners scripted HTTP calls.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import claim, complete, expect, manager_farm, register, shoot, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

DASH = "\N{EN DASH}"
"""The dash the page writes in a range of tasks and for a time not known yet."""
BIG = 10_000
SMALL_JOBS = 250
WAIT = 20_000
"""Milliseconds for a page of the big job to show, and for each change of its filter
or page: far more than it needs on a quiet machine, where Playwright's 5 s default
was not enough for a page turn while other tests loaded both cores."""
JOB_DETAIL = re.compile(r"/api/jobs/\d+(\?|$)")
"""A job's detail: with all its tasks unless the query says `tasks=false`."""


# Scripted runners send no heartbeats of their own: a long timeout keeps them online.
farm = manager_farm(name="at-scale-farm", heartbeat_timeout=600.0)


HOLD_SHOW_MORE = """() => {
    const real = window.fetch;
    let asked = 0;
    window.fetch = (url, init) => {
        if (!String(url).includes("/api/jobs?") || !String(url).includes("limit=400")) {
            return real(url, init);
        }
        const wait = ++asked === 1 ? 1500 : 3000;
        return new Promise((done) => setTimeout(done, wait)).then(() => real(url, init));
    };
}"""
"""For `page.evaluate`: the list's next two asks for 400 jobs (Show more's, then a live
refresh's) are answered after 1.5 and 3 s, so the click's own answer comes back first,
overtaken: the page draws the later one."""


def requests_of(page: Any) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def busy_big_job(api: httpx.Client, farm: LocalFarm) -> int:
    """A job of BIG one-frame tasks: one completed, two rendering (on r1 and r2) and the
    last one canceled (a failed task would fail the whole job)."""
    job_id = submit_stand_in(
        api, name="big", frame_start=1, frame_end=BIG, chunk_size=1, priority=100
    )
    r1, r2 = register(api, farm, "r1"), register(api, farm, "r2")
    complete(api, r1, claim(api, r1))
    claim(api, r1)
    claim(api, r2)
    last = api.get(f"/api/jobs/{job_id}/tasks", params={"offset": BIG - 1}).json()[0]
    answer = api.post(f"/api/jobs/{job_id}/tasks/{last['id']}/actions", json={"action": "cancel"})
    assert answer.status_code == 200, answer.text
    return job_id


def test_a_job_of_10000_tasks_shows_a_page_of_them_with_a_filter_and_a_pager(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = busy_big_job(api, farm)
    page = sign_in(browser, farm)
    asked = requests_of(page)
    page.goto(f"{farm.url}/jobs/{job_id}")
    rows = page.locator("#tasks tbody tr[data-task-id]")
    expect()(page.locator("#tasks-range")).to_have_text(f"1{DASH}200 of 10,000", timeout=WAIT)
    expect()(rows).to_have_count(200)
    expect()(page.locator("#tasks-count")).to_have_text("10,000 tasks")
    expect()(page.locator("#stat-frames")).to_have_text(f"1/{BIG}")
    # The frames grid has every frame (the browser paints those near the screen).
    expect()(page.locator("#thumbs .thumb")).to_have_count(BIG)
    expect()(page.locator("#frames-count")).to_have_text(f"1 of {BIG} done")
    expect()(page.locator('#thumbs .thumb.rendering[data-frame="3"]')).to_have_count(1)
    # …in a box of its own: the tasks are a screen or two down, not 300,000 px.
    assert page.evaluate("document.querySelector('#tasks').getBoundingClientRect().top") < 2000
    shoot(page, "at-scale-01-job-of-10000-tasks")
    # Every task's detail was asked without its tasks; tasks came a page at a time.
    details = [url for url in asked if JOB_DETAIL.search(url)]
    assert details, "the job page asked for the job"
    assert all("tasks=false" in url for url in details), details

    # Failed and active tasks are one choice away, with their counts.
    page.select_option("#task-filter", "failed")
    expect()(rows).to_have_count(1, timeout=WAIT)
    expect()(rows.first.locator(".badge")).to_have_text("canceled", timeout=WAIT)
    expect()(page.locator("#task-filter option[value=failed]")).to_have_text(
        "Failed or canceled (1)", timeout=WAIT
    )
    expect()(page.get_by_role("button", name="Requeue failed")).to_be_visible(timeout=WAIT)
    page.select_option("#task-filter", "active")
    expect()(rows).to_have_count(2, timeout=WAIT)
    expect()(page.locator("#tasks tbody td.worker")).to_have_text(["r1", "r2"], timeout=WAIT)
    expect()(page.locator("#task-pager")).to_be_hidden(timeout=WAIT)

    # The pager: the next page, the last one, and back to the first.
    page.select_option("#task-filter", "")
    expect()(page.locator("#tasks-range")).to_have_text(f"1{DASH}200 of 10,000", timeout=WAIT)
    indices = [t["index"] for t in api.get(f"/api/jobs/{job_id}/tasks?limit=1000").json()]
    page.click("#tasks-next")
    expect()(page.locator("#tasks-range")).to_have_text(f"201{DASH}400 of 10,000", timeout=WAIT)
    expect()(rows.first.locator("td.idx")).to_have_text(str(indices[200]), timeout=WAIT)
    page.click("#tasks-last")
    expect()(page.locator("#tasks-range")).to_have_text(
        f"9,801{DASH}10,000 of 10,000", timeout=WAIT
    )
    expect()(page.locator("#tasks-next")).to_be_disabled(timeout=WAIT)
    expect()(rows).to_have_count(200, timeout=WAIT)
    page.click("#tasks-first")
    expect()(page.locator("#tasks-range")).to_have_text(f"1{DASH}200 of 10,000", timeout=WAIT)
    expect()(page.locator("#tasks-prev")).to_be_disabled(timeout=WAIT)

    # Live: a third worker takes a task, and the Active count and the page follow.
    page.select_option("#task-filter", "active")
    expect()(rows).to_have_count(2, timeout=WAIT)
    claim(api, register(api, farm, "r4"))
    expect()(rows).to_have_count(3, timeout=WAIT)
    expect()(page.locator("#task-filter option[value=active]")).to_have_text(
        "Active (3)", timeout=WAIT
    )
    shoot(page, "at-scale-02-active-tasks")
    page.context.close()


def test_the_jobs_list_asks_the_manager_for_a_filtered_page(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    made = api.post("/api/admin/users", json={"name": "ann", "role": "user"})
    assert made.status_code == 201, made.text
    anns = submit_stand_in(
        api, {"Authorization": f"Bearer {made.json()['token']}"}, name="ann's", frame_end=1
    )
    for number in range(SMALL_JOBS):
        submit_stand_in(api, name=f"shot {number}", frame_start=1, frame_end=1)
    big = busy_big_job(api, farm)
    total = SMALL_JOBS + 2

    page = sign_in(browser, farm)
    asked = requests_of(page)
    page.goto(farm.url + "/")
    rows = page.locator("#jobs tbody tr[data-job-id]")
    expect()(page.locator("#jobs-count")).to_have_text(f"200 of {total} jobs")
    expect()(rows).to_have_count(200)
    # The running job shows its workers and time left from the list alone.
    row = page.locator(f'#jobs tr[data-job-id="{big}"]')
    expect()(row).to_contain_text("r1, r2")
    expect()(row.locator('td[data-label="Remaining"]')).not_to_have_text(DASH)
    assert not [url for url in asked if JOB_DETAIL.search(url)], "no job's detail was fetched"
    assert any("limit=200" in url for url in asked if "/api/jobs?" in url), asked

    # Show more: the rest, and the keyboard on the first job shown anew, also when a live
    # refresh overtakes the click's own (held here so that it answers last).
    page.evaluate(HOLD_SHOW_MORE)
    page.click("#jobs-more")
    changed = api.patch(f"/api/jobs/{anns}", json={"priority": 51})
    assert changed.status_code == 200, changed.text
    expect()(rows).to_have_count(total)
    expect()(page.locator("#jobs-count")).to_have_text(f"{total} of {total} jobs")
    expect()(page.locator("#jobs-more")).to_be_hidden()
    expect()(page.locator("#jobs tbody a").nth(200)).to_be_focused()

    # Filters go to the manager and stay in the URL.
    asked.clear()
    page.select_option("#filter-status", "active")
    expect()(rows).to_have_count(1)
    expect()(row).to_be_visible()
    assert page.url.endswith("/?status=active")
    assert any("status=active" in url for url in asked if "/api/jobs?" in url), asked
    page.goto(farm.url + "/?owner=ann")
    expect()(rows).to_have_count(1)
    expect()(page.locator(f'#jobs tr[data-job-id="{anns}"]')).to_be_visible()
    expect()(page.locator("#filter-owner")).to_have_value("ann")
    expect()(page.locator("#jobs-count")).to_have_text("1 of 1 job")
    page.select_option("#filter-status", "failed")
    expect()(page.locator("#jobs tbody td.empty")).to_have_text("No job matches the filters.")
    assert page.url.endswith("/?status=failed&owner=ann")
    shoot(page, "at-scale-03-jobs-filtered")
    page.context.close()
