"""Many tabs of one browser on one farm.

Each live page used to hold its own `EventSource('/api/events')`. Over HTTP/1.1 Chromium
opens at most 6 connections to a host, and an event stream never ends: with six pages
open every other fetch and page load of that browser waited forever, while the pages
still said "live". A browser now holds one stream for all its tabs (a shared worker
owns it), and where there are no shared workers a tab holds one only while visible.

No Blender here: jobs are submitted with a stand-in .blend the manager never opens.
Every wait is bounded (`WAIT`): on the old page the seventh tab never loads, and the test
fails there instead of hanging.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import expect, manager_farm, shoot, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

TABS = 9
WAIT = 15_000
"""Milliseconds: far more than a page of an idle local farm needs, far less than forever."""

# For `page.evaluate`: the status of a fetch from the page, or 0 if none came in time.
FETCH_STATUS = """(ms) => Promise.race([
    fetch('/api/jobs', {credentials: 'same-origin'}).then((r) => r.status),
    new Promise((resolve) => setTimeout(() => resolve(0), ms)),
])"""

# For `page.evaluate(..., hidden)`: the tab as a browser makes it when another tab is in
# front of it (hidden true) or it comes back to the front (false).
SET_HIDDEN = """(hidden) => {
    const state = hidden ? 'hidden' : 'visible';
    Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
    Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


farm = manager_farm(name="many-tabs-farm")


def open_tab(context: Any, farm: LocalFarm, path: str = "/") -> Any:
    """A new tab of `context` on `path`, live; fails (not hangs) if it does not load."""
    page = context.new_page()
    page.goto(farm.url + path, timeout=WAIT)
    expect()(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT)
    return page


def job_row(page: Any, job_id: int) -> Any:
    return page.locator(f'#jobs tr[data-job-id="{job_id}"]')


def test_nine_tabs_share_one_stream_and_every_tab_stays_live(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    first = sign_in(browser, farm)
    context = first.context
    expect()(first.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT)
    # Jobs lists and a job page: every kind of live page counts the same.
    before = submit_stand_in(api, name="before", frame_start=1, frame_end=2)
    tabs = [first] + [open_tab(context, farm) for _ in range(TABS - 2)]
    tabs.append(open_tab(context, farm, f"/jobs/{before}"))
    assert len(context.pages) == TABS

    # A tenth tab loads, and a fetch of the first tab answers.
    extra = open_tab(context, farm, "/runners")
    assert first.evaluate(FETCH_STATUS, WAIT) == 200

    # An event reaches every tab: a new job shows in every list, a cancel in each.
    job_id = submit_stand_in(api, name="seen-everywhere", frame_start=1, frame_end=2)
    for page in tabs[:-1]:
        expect()(job_row(page, job_id)).to_be_visible(timeout=WAIT)
    assert api.delete(f"/api/jobs/{before}").status_code == 200
    expect()(tabs[-1].locator("#job-status")).to_have_text("canceled", timeout=WAIT)
    for page in tabs[:-1]:
        expect()(job_row(page, before).locator(".badge")).to_have_text("canceled", timeout=WAIT)
    shoot(first, "many-tabs-01-first-of-nine")

    # The tabs that were opened first close: the others stay live and keep hearing.
    for page in [*tabs[:4], extra]:
        page.close()
    later = submit_stand_in(api, name="after-closing", frame_start=1, frame_end=2)
    for page in tabs[4:-1]:
        expect()(page.locator("#live")).to_have_attribute("data-state", "live")
        expect()(job_row(page, later)).to_be_visible(timeout=WAIT)
    context.close()


def test_without_shared_workers_only_visible_tabs_hold_a_stream(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """A browser with no shared workers (Chrome on Android): each tab streams on its own
    while it is in front, and gives its stream up once it has been behind for a while."""
    first = sign_in(browser, farm)
    context = first.context
    context.add_init_script("window.SharedWorker = undefined;")
    context.clock.install()
    first.reload()
    tabs = [first]
    first.clock.run_for(2500)  # the load, and the live stream opening
    expect()(first.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT)
    for _ in range(TABS - 1):
        # A new tab comes to the front: the one before goes behind.
        tabs[-1].evaluate(SET_HIDDEN, True)
        tabs.append(open_tab(context, farm))
    # The tabs behind let their streams go after 10 s.
    first.clock.run_for(11_000)
    extra = open_tab(context, farm, "/runners")
    assert first.evaluate(FETCH_STATUS, WAIT) == 200

    # A tab behind fetches nothing when jobs change; back in front, it catches up.
    asked: list[str] = []
    tabs[1].on("request", lambda request: asked.append(request.url))
    job_id = submit_stand_in(api, name="while-behind", frame_start=1, frame_end=2)
    expect()(job_row(tabs[-1], job_id)).to_be_visible(timeout=WAIT)
    assert not [url for url in asked if "/api/jobs" in url]
    tabs[1].evaluate(SET_HIDDEN, False)
    tabs[1].clock.run_for(2500)
    expect()(tabs[1].locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT)
    expect()(job_row(tabs[1], job_id)).to_be_visible(timeout=WAIT)
    shoot(tabs[1], "many-tabs-02-back-in-front")
    extra.close()
    context.close()
