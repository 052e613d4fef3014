"""One task at a time, and the job's blocklist, from the job page in a real browser.

No Blender here: the runners are scripted HTTP calls (register, claim, fail) as in the
scheduling tests, and jobs are submitted with a stand-in .blend the manager never opens.
The manager blocklists a worker from a job at its first failed task there
(`--blocklist-threshold 1`) and lets a job run on whatever share of its tasks fails
(`--job-failure-share 1`), so one failure makes a task that failed for good and a
blocklist entry while the job stays active.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    Dialogs,
    claim,
    expect,
    fail,
    manager_farm,
    phone_like,
    register,
    shoot,
    sign_in,
    task_status,
)
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

# Runner-controlled text that would run script if the page put it in as HTML.
NASTY_ERROR = '<img src=x onerror="window.pwned=1">Blender crashed & <b>burned</b>'


# Scripted runners send no heartbeats: a long timeout keeps them online (eligible).
farm = manager_farm(
    "--blocklist-threshold", "1", "--job-failure-share", "1",
    name="controls-farm", heartbeat_timeout=600.0,
)  # fmt: skip


def blocklisted(api: httpx.Client, job_id: int) -> list[str]:
    answer = api.get("/api/admin/blocklist", params={"job_id": job_id})
    assert answer.status_code == 200, answer.text
    return sorted(entry["worker"] for entry in answer.json())


def make_user(api: httpx.Client, name: str) -> str:
    answer = api.post("/api/admin/users", json={"name": name, "role": "user"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


# For `page.evaluate(..., selector)`: the table's frame shows it whole, nothing to scroll.
FITS_ITS_FRAME = """(selector) => {
    const frame = document.querySelector(selector).closest(".table-wrap");
    return frame.scrollWidth <= frame.clientWidth;
}"""
# For `page.evaluate`: every task whose action cell lies over text of another cell of its
# row (as a pinned column does over the cells that scroll under it).
ACTION_OVER_TEXT = """() => {
    const hits = [];
    for (const row of document.querySelectorAll("#tasks tbody tr[data-task-id]")) {
        const act = row.querySelector("td.task-act").getBoundingClientRect();
        for (const cell of row.querySelectorAll("td:not(.task-act)")) {
            const range = document.createRange();
            range.selectNodeContents(cell);
            for (const text of range.getClientRects()) {
                if (text.width && text.left < act.right && act.left < text.right
                    && text.top < act.bottom && act.top < text.bottom) {
                    hits.push(`task ${row.dataset.taskId}: ${cell.textContent.trim()}`);
                }
            }
        }
    }
    return hits;
}"""

PHONE_FARM_BOX = {
    "blender_versions": ["4.2.1", "3.6.5"],
    "cpu": "AMD Ryzen 9 7950X 16-Core Processor",
    "cores": 32,
    "ram_bytes": 64 * 2**30,
    "hostname": "render-box-long-hostname.studio.lan",
    "tags": ["gpu", "highmem"],
    "device": "CUDA",
    "gpu": 0,
    "blender_devices": ["CUDA: NVIDIA GeForce RTX 4090"],
    "gpus": ["NVIDIA GeForce RTX 4090"],
}


def test_admin_controls_tasks_and_clears_the_blocklist(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(
        api, name="shot <i>42</i>", frame_start=1, frame_end=4, chunk_size=1, max_attempts=1
    )
    steady = register(api, farm, "steady")  # never fails: the job always has a worker
    flaky1, flaky2 = register(api, farm, "flaky-1"), register(api, farm, "flaky-2")

    page = sign_in(browser, farm)
    dialogs = Dialogs(page)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    expect()(page.locator("#job-name")).to_have_text("shot <i>42</i>")
    rows = page.locator("#tasks tbody tr[data-task-id]")
    expect()(rows).to_have_count(4)
    expect()(page.locator("#tasks th.task-act")).to_have_text("Actions")
    for index in range(4):  # numbered from 0, as the # column shows
        expect()(page.get_by_role("button", name=f"Cancel task {index}")).to_be_visible()
    expect()(page.locator("#blocklist-section")).to_be_hidden()

    def row(task_id: int) -> Any:
        return page.locator(f'#tasks tr[data-task-id="{task_id}"]')

    # Cancel a queued task with the keyboard: no question asked, the row says canceled,
    # and the keyboard is on the row's new action, Requeue.
    first = int(rows.nth(0).get_attribute("data-task-id") or 0)
    page.get_by_role("button", name="Cancel task 0").focus()
    page.keyboard.press("Enter")
    expect()(row(first).locator(".badge")).to_have_text("canceled")
    requeue = page.get_by_role("button", name="Requeue task 0")
    expect()(requeue).to_be_focused()
    assert dialogs.asked == [], "a queued task is canceled without a question"
    assert task_status(api, job_id, first) == "canceled"
    expect()(page.locator("#toasts")).to_contain_text("Task 0 canceled")

    # Requeue it: queued again, the focus on its Cancel.
    page.keyboard.press("Enter")
    expect()(row(first).locator(".badge")).to_have_text("queued")
    expect()(page.get_by_role("button", name="Cancel task 0")).to_be_focused()
    assert task_status(api, job_id, first) == "queued"

    # A worker takes a task: the row turns active live, and the rewrite of the table
    # leaves the keyboard where it was. Canceling a running task stops a render, so
    # the page asks first; saying no changes nothing.
    running = claim(api, steady)
    assert running["job_id"] == job_id
    active = row(running["task_id"])
    expect()(active.locator(".badge")).to_have_text("active")
    expect()(active).to_contain_text("steady")
    expect()(page.get_by_role("button", name="Cancel task 0")).to_be_focused()
    index = active.locator("td").first.inner_text()
    cancel = active.get_by_role("button", name=f"Cancel task {index}")
    cancel.click()
    page.wait_for_timeout(500)
    assert dialogs.asked == [f"Cancel task {index}? Its render stops now."]
    expect()(active.locator(".badge")).to_have_text("active")
    assert task_status(api, job_id, running["task_id"]) == "active"
    dialogs.accept = True
    cancel.click()
    expect()(active.locator(".badge")).to_have_text("canceled")
    assert task_status(api, job_id, running["task_id"]) == "canceled"
    assert len(dialogs.asked) == 2

    # Two workers fail a task each: the tasks fail for good (one attempt), both workers
    # are blocklisted from the job, and the page shows all of it without a reload.
    failed = []
    for who in (flaky1, flaky2):
        task = claim(api, who)
        assert task["job_id"] == job_id
        fail(api, who, task, NASTY_ERROR)
        failed.append(task["task_id"])
    assert blocklisted(api, job_id) == ["flaky-1", "flaky-2"]
    for task_id in failed:
        expect()(row(task_id).locator(".badge")).to_have_text("failed")
        expect()(row(task_id).locator("[data-task-action]")).to_have_text("Requeue")
        # The runner's words, as text: no element made of them, no script run.
        expect()(row(task_id).locator("td.wrap")).to_have_text(NASTY_ERROR)
    assert page.locator("#tasks img, #tasks b").count() == 0
    assert page.evaluate("window.pwned") is None
    section = page.locator("#blocklist-section")
    expect()(section).to_be_visible()
    entries = section.locator("tbody tr")
    expect()(entries).to_have_count(2)
    cells = entries.nth(0).locator("td")
    expect()(cells.nth(0)).to_have_text("flaky-1")
    expect()(cells.nth(1)).to_have_text("render")
    expect()(cells.nth(2)).to_have_text("failed 1 render task of this job")
    assert cells.nth(3).locator("time").get_attribute("datetime")
    expect()(cells.nth(3)).not_to_be_empty()
    expect()(entries.nth(1).locator("td").nth(0)).to_have_text("flaky-2")
    expect()(page.locator("#blocklist-clear-all")).to_be_visible()
    expect()(page.locator("#toasts .toast")).to_have_count(0, timeout=10_000)
    page.wait_for_function("() => document.getAnimations().length === 0")
    shoot(page, "job-controls-01-desktop")

    # Requeue one of the failed tasks with the mouse.
    row(failed[0]).get_by_role("button", name="Requeue").click()
    expect()(row(failed[0]).locator(".badge")).to_have_text("queued")
    assert task_status(api, job_id, failed[0]) == "queued"

    # Clear flaky-1's entry with the keyboard: its row goes, the keyboard moves on to the
    # entry left, "Clear all" is gone with the second entry, and flaky-1 may take the
    # job's tasks again.
    page.get_by_role("button", name="Clear flaky-1's blocklist entry").focus()
    page.keyboard.press("Enter")
    expect()(entries).to_have_count(1)
    expect()(entries.nth(0).locator("td").nth(0)).to_have_text("flaky-2")
    expect()(page.get_by_role("button", name="Clear flaky-2's blocklist entry")).to_be_focused()
    expect()(page.locator("#blocklist-clear-all")).to_be_hidden()
    assert blocklisted(api, job_id) == ["flaky-2"]
    again = claim(api, flaky1)
    assert again["job_id"] == job_id, "a cleared worker takes the job's tasks again"

    # It fails once more and is back on the list, live.
    fail(api, flaky1, again, "out of memory")
    expect()(entries).to_have_count(2)
    expect()(page.locator("#blocklist-clear-all")).to_be_visible()

    # A phone in dark mode: nothing scrolls sideways, each task's action is on screen
    # and works, and the blocklist is there too.
    mobile = phone_like(browser, page)
    mobile.goto(f"{farm.url}/jobs/{job_id}")
    expect()(mobile.locator("#live")).to_have_attribute("data-state", "live")
    expect()(mobile.locator("#blocklist-section tbody tr")).to_have_count(2)
    expect()(mobile.locator("#tasks tbody tr[data-task-id]")).to_have_count(4)
    mobile.wait_for_function("() => document.getAnimations().length === 0")
    shoot(mobile, "job-controls-02-phone-dark")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL), "the job page scrolls sideways on a phone"
    for button in mobile.locator("#tasks [data-task-action], #blocklist [data-clear-entry]").all():
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    queued = mobile.locator('#tasks tbody tr[data-task-id]:has(.badge:text-is("queued"))')
    phone_task = int(queued.first.get_attribute("data-task-id") or 0)
    queued.first.locator("[data-task-action]").tap()
    on_phone = mobile.locator(f'#tasks tr[data-task-id="{phone_task}"]')
    expect()(on_phone.locator(".badge")).to_have_text("canceled")
    assert task_status(api, job_id, phone_task) == "canceled"
    # The desktop page follows live.
    expect()(row(phone_task).locator(".badge")).to_have_text("canceled")
    mobile.context.close()

    # Clear all: the section goes, the keyboard lands in the job's actions, and the
    # manager has no entry left for the job.
    page.locator("#blocklist-clear-all").focus()
    page.keyboard.press("Enter")
    expect()(section).to_be_hidden()
    expect()(page.locator("#actions button:not([hidden])").first).to_be_focused()
    assert blocklisted(api, job_id) == []
    expect()(page.locator("#toasts")).to_contain_text("Blocklist cleared: 2 entries")

    # Requeue the failed and canceled ones from the job's actions: the page says how
    # many went back, and they are queued.
    tasks = api.get(f"/api/jobs/{job_id}").json()["tasks"]
    undone = [t for t in tasks if t["status"] in ("failed", "canceled")]
    assert len(undone) >= 2, undone
    page.locator("#actions").get_by_role("button", name="Requeue failed").click()
    expect()(page.locator("#toasts")).to_contain_text(
        f"Requeue failed: {len(undone)} tasks back in the queue"
    )
    assert all(task_status(api, job_id, t["id"]) == "queued" for t in undone)
    page.context.close()


def test_an_owner_controls_tasks_but_sees_no_blocklist(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    dana = make_user(api, "dana")
    job_id = submit_stand_in(
        api,
        {"Authorization": f"Bearer {dana}"},
        name="dana's shot",
        frame_start=1,
        frame_end=4,
        chunk_size=1,
    )
    register(api, farm, "steady")  # the job keeps a worker that may run it
    flaky = register(api, farm, "flaky-3")
    task = claim(api, flaky)
    assert task["job_id"] == job_id
    fail(api, flaky, task, "boom")
    assert blocklisted(api, job_id) == ["flaky-3"], "the job has an entry an admin would see"

    page = sign_in(browser, farm, dana)
    admin_calls: list[str] = []
    page.on("request", lambda r: admin_calls.append(r.url) if "/api/admin/" in r.url else None)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    failed = page.locator(f'#tasks tr[data-task-id="{task["task_id"]}"]')
    expect()(failed.locator(".badge")).to_have_text("queued")  # three attempts by default
    expect()(failed).to_contain_text("boom")
    expect()(page.locator("#tasks th.task-act")).to_be_visible()
    expect()(page.locator("#tasks [data-task-action]")).to_have_count(4)

    page.get_by_role("button", name="Cancel task 1").click()
    canceled = page.locator("#tasks tbody tr[data-task-id]").nth(1)
    expect()(canceled.locator(".badge")).to_have_text("canceled")
    canceled_id = int(canceled.get_attribute("data-task-id") or 0)
    assert task_status(api, job_id, canceled_id) == "canceled"

    assert page.locator("#blocklist-section, #blocklist").count() == 0
    expect()(page.locator("main")).not_to_contain_text("Blocklist")
    assert admin_calls == [], "a person's page never asks the admin API"
    page.context.close()


def test_the_job_actions_wait_for_the_job(browser: Any, farm: LocalFarm, api: httpx.Client) -> None:
    # Cancel clicked before the job had loaded acted on no job (a script error, nothing
    # canceled): the action bar now shows only once the page knows the job.
    job_id = submit_stand_in(api, name="slow to load", frame_start=1, frame_end=2)
    page = sign_in(browser, farm)
    held: list[Any] = []
    job_url = re.compile(rf"/api/jobs/{job_id}(\?tasks=false)?$")

    def hold(route: Any) -> None:  # the job's first fetch waits, unanswered
        held.append(route)

    page.route(job_url, hold)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#actions")).to_be_hidden()
    page.wait_for_function("() => document.readyState === 'complete'")
    assert held, "the page asked for its job"
    expect()(page.locator("#actions")).to_be_hidden()
    for route in held:
        route.continue_()
    page.unroute(job_url)
    shoot(page, "13c-job-actions-after-load")
    expect()(page.locator("#cancel-button")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    expect()(page.locator("#job-status")).to_have_text("canceled")
    assert api.get(f"/api/jobs/{job_id}").json()["status"] == "canceled"
    page.context.close()


def test_tasks_and_runners_are_cards_on_a_phone(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """On a 390 px phone the job's tasks and the runners fit their frames (no sideways
    scrolling inside them either), and no task's action covers a neighbour's text."""
    job_id = submit_stand_in(
        api, name="phone shot", frame_start=1, frame_end=3, chunk_size=1, max_attempts=1
    )
    busy = register(api, farm, "render-box-01", **PHONE_FARM_BOX)
    flaky = register(api, farm, "laptop-b", **PHONE_FARM_BOX)
    running = claim(api, busy)
    failing = claim(api, flaky)
    fail(api, flaky, failing, "Blender crashed: out of memory while building the BVH")

    page = sign_in(browser, farm)
    mobile = phone_like(browser, page)
    mobile.goto(f"{farm.url}/jobs/{job_id}")
    expect()(mobile.locator("#live")).to_have_attribute("data-state", "live")
    active = mobile.locator(f'#tasks tr[data-task-id="{running["task_id"]}"]')
    expect()(active).to_contain_text("render-box-01")
    expect()(mobile.locator("#tasks tbody tr[data-task-id]")).to_have_count(3)
    mobile.wait_for_function("() => document.getAnimations().length === 0")
    shoot(mobile, "job-controls-03-phone-tasks")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL)
    assert mobile.evaluate(FITS_ITS_FRAME, "#tasks"), "the tasks scroll sideways in their frame"
    assert mobile.evaluate(ACTION_OVER_TEXT) == []
    box = active.get_by_role("button", name="Cancel task 0").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    failed = mobile.locator(f'#tasks tr[data-task-id="{failing["task_id"]}"]')
    expect()(failed).to_contain_text("out of memory while building the BVH")

    # The runners: each one's name, status, current job and controls, all in view.
    mobile.goto(f"{farm.url}/runners")
    card = mobile.locator('#runners tr[data-runner-name="render-box-01"]')
    expect()(card.locator(".status")).to_have_text("busy")
    expect()(mobile.locator("#runner-tokens tbody tr[data-token-id]")).not_to_have_count(0)
    mobile.wait_for_function("() => document.getAnimations().length === 0")
    shoot(mobile, "job-controls-04-phone-runners")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL)
    for table in ("#runners", "#runner-tokens"):
        assert mobile.evaluate(FITS_ITS_FRAME, table), f"{table} scrolls sideways in its frame"
    for part in (
        card.locator("strong").filter(has_text="render-box-01"),
        card.locator(".status"),
        card.get_by_role("link", name="phone shot"),
        card.get_by_role("button", name="Finish task, then disable"),
        card.get_by_role("button", name="Stop task, disable now"),
    ):
        box = part.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    mobile.context.close()
    page.context.close()
