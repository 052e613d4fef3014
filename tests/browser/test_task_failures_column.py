"""The job page's task table shows failures, what the retry limit counts, not hand-outs.

A task given back four times showed `Attempts 4` on a job allowed one attempt, which
read as a retry limit not kept: give-backs (a worker stopping) are not failures. The
column is now Failures, with the hand-outs added only when they say more.

No Blender here: scripted runners (register, claim, release, fail, complete) and a
stand-in .blend, as in `test_task_table_layout.py`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    claim,
    complete,
    expect,
    fail,
    manager_farm,
    phone_like,
    register,
    release,
    shoot,
    sign_in,
)
from tests.browser.test_task_table_layout import TABLE_WIDTH, UNREADABLE
from tests.integration.conftest import submit_stand_in

NONE = "\N{EN DASH}"
"""What a cell shows for what a task does not have."""

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


# Scripted runners send no heartbeats: a long timeout keeps them online. A failed task
# leaves its job going, so the table may show it beside running and given-back ones.
farm = manager_farm("--job-failure-share", "1", name="task-failures-farm", heartbeat_timeout=600.0)


def test_the_task_table_shows_failures_and_hand_outs_only_when_they_say_more(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(
        api, name="one try", frame_start=1, frame_end=3, chunk_size=1, max_attempts=1
    )
    # Task 0, given back four times by a worker stopping, then handed out a fifth time;
    # task 1, failed once (its one attempt); task 2, completed at the first hand-out.
    stopping = register(api, farm, "render-box-01")
    for _ in range(4):
        release(api, stopping, claim(api, stopping))
    again = claim(api, stopping)
    crashing = register(api, farm, "render-box-02")
    crashed = claim(api, crashing)
    fail(api, crashing, crashed, "boom")
    finishing = register(api, farm, "render-box-03")
    done = claim(api, finishing)
    complete(api, finishing, done)

    page = sign_in(browser, farm)
    page.set_viewport_size({"width": 1920, "height": 900})
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    headings = page.locator("#tasks thead th")
    expect()(headings.filter(has_text="Failures")).to_have_count(1)
    expect()(headings.filter(has_text="Attempts")).to_have_count(0)
    cell = '#tasks tr[data-task-id="{}"] td.failures'
    expect()(page.locator(cell.format(again["task_id"]))).to_have_text("0 of 5 hand-outs")
    expect()(page.locator(cell.format(crashed["task_id"]))).to_have_text("1")
    expect()(page.locator(cell.format(done["task_id"]))).to_have_text("0")

    # The longer cell keeps the table's width rules: it fits its frame from 1200 px, and
    # between a phone and a laptop every cell is readable under its heading.
    task_ids = [again["task_id"], crashed["task_id"], done["task_id"]]
    unreadable: dict[str, list[str]] = {}
    for width in (641, 800, 1024, 1199, 1200, 1366, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("() => document.getAnimations().length === 0")
        shoot(page, f"task-failures-{width}")
        if width >= 1200:
            scroll, client = page.evaluate(TABLE_WIDTH)
            assert scroll <= client, f"at {width} px the tasks are {scroll} px in {client} px"
        for task_id in task_ids:
            if problems := page.evaluate(UNREADABLE, task_id):
                unreadable[f"{width} px, task {task_id}"] = problems
    assert unreadable == {}, "\n".join(f"{where}: {what}" for where, what in unreadable.items())

    # On a phone the column is left out (as attempts were), and nothing scrolls sideways.
    phone = phone_like(browser, page)
    phone.goto(f"{farm.url}/jobs/{job_id}")
    expect()(phone.locator("#live")).to_have_attribute("data-state", "live")
    expect()(phone.locator(cell.format(again["task_id"]))).to_be_hidden()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the job page scrolls sideways on a phone"
    shoot(phone, "task-failures-390")
    phone.context.close()
    page.context.close()


def test_a_task_given_back_to_the_queue_shows_no_running_time(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """A task given back keeps the `started_at` of its hand-out; the page counted its
    time up from there (`1m 09s`, then `1m 29s`) as if it were running."""
    job_id = submit_stand_in(api, name="given back", frame_start=1, frame_end=2, chunk_size=1)
    box, other = register(api, farm, "render-box-04"), register(api, farm, "render-box-05")
    given = claim(api, box)
    running = claim(api, other)
    release(api, box, given)

    page = sign_in(browser, farm)
    page.set_viewport_size({"width": 1920, "height": 900})
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    time_of = '#tasks tr[data-task-id="{}"] td.more[data-label="Time"]'
    expect()(page.locator(time_of.format(given["task_id"]))).to_have_text(NONE)
    expect()(page.locator(time_of.format(running["task_id"]))).not_to_have_text(NONE)
    page.context.close()
