"""The job page's task table while a task renders: every button stays where it is seen.

QA found that a running task's "Now" text (`frame 101 · sample 1/600`) widened the task
table past its frame on a laptop or a wide screen, and flipped it back when the task
ended; while it was wide, the pinned Actions column lay over the Log and Last error
columns, so a press aimed at "Show" requeued or canceled the task instead. Requeue asked
nothing, and a finished render was thrown away. Between a phone and a laptop (641 to
1365 px: tablets, small laptops, split screens) the table still scrolled sideways with
the pinned column over Log and Last error: at those widths every cell must be in view,
under its heading and under nothing else, and every button pressable.

No Blender here: scripted runners (register, claim, progress, fail, upload, complete)
and a stand-in .blend, as in `test_job_controls.py`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    Dialogs,
    claim,
    complete,
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

LONG_ERROR = "Blender crashed: out of memory while building the BVH of " + "x" * 200
# For `page.evaluate(..., taskId)`: the button at the centre of task `taskId`'s Show
# button, as a press there finds it (the page is scrolled so that the button's row is in
# the window; its table's frame is left as it is).
HIT_AT_SHOW = """(taskId) => {
    const show = document.querySelector(`#tasks [data-log="${taskId}"]`);
    show.closest("tr").scrollIntoView({ block: "center", inline: "nearest" });
    const frame = show.closest(".table-wrap");
    frame.scrollLeft = 0;
    const box = show.getBoundingClientRect();
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    const at = document.elementFromPoint(x, y);
    const hit = at?.closest("button");
    return {
        x, y, log: hit?.dataset.log ?? null,
        hit: hit ? `the ${hit.getAttribute("aria-label") || hit.textContent} button`
            : String(at?.tagName),
    };
}"""
TABLE_WIDTH = """() => {
    const frame = document.querySelector("#tasks").closest(".table-wrap");
    return [frame.scrollWidth, frame.clientWidth];
}"""


# Scripted runners send no heartbeats: a long timeout keeps them online. A job goes on
# when a task fails for good, so its table may show a failed task next to running ones.
farm = manager_farm("--job-failure-share", "1", name="task-table-farm", heartbeat_timeout=600.0)


def test_a_running_task_covers_no_button_and_requeue_of_a_finished_one_asks(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(
        api, name="wide shot", frame_start=1, frame_end=4, chunk_size=1, max_attempts=3
    )
    # A finished task (Requeue); one that failed once with a long error and is rendered
    # again (Cancel), where a long "Now" text will go; two that wait.
    finisher = register(api, farm, "render-box-01")
    done = claim(api, finisher)
    complete(api, finisher, done)
    flaky = register(api, farm, "render-box-02")
    failed = claim(api, flaky)
    fail(api, flaky, failed, LONG_ERROR)
    busy = register(api, farm, "render-box-03")
    rendering = claim(api, busy)
    assert rendering["task_id"] != done["task_id"]

    page = sign_in(browser, farm)
    dialogs = Dialogs(page)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    rows = page.locator("#tasks tbody tr[data-task-id]")
    expect()(rows).to_have_count(4)
    expect()(page.locator("#tasks")).to_contain_text(LONG_ERROR)
    busy_row = page.locator(f'#tasks tr[data-task-id="{rendering["task_id"]}"]')
    expect()(busy_row).to_contain_text("render-box-03")
    between = page.evaluate(TABLE_WIDTH)

    # The rendering task reports a long "Now": frame 1000001, sample 12345 of 65536.
    progress = f"/api/runner/tasks/{rendering['task_id']}/progress"
    report = {"frame": 1000001, "sample": 12345, "samples_total": 65536}
    answer = api.post(progress, headers=busy, json=report)
    assert answer.status_code == 200, answer.text
    expect()(busy_row).to_contain_text("frame 1000001 · sample 12345/65536")
    assert page.evaluate(TABLE_WIDTH) == between, "the table's width follows the Now text"

    task_ids = [int(row.get_attribute("data-task-id") or 0) for row in rows.all()]
    for width in (1366, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("() => document.getAnimations().length === 0")
        shoot(page, f"task-table-{width}")
        scroll, client = page.evaluate(TABLE_WIDTH)
        assert scroll <= client, f"at {width} px the tasks are {scroll} px in a {client} px frame"
        for task_id in task_ids:
            where = page.evaluate(HIT_AT_SHOW, task_id)
            assert where["log"] == str(task_id), (
                f"at {width} px a press on task {task_id}'s Show lands on {where['hit']}"
            )
            # A real click there opens the log, and another closes it.
            show = page.locator(f'#tasks [data-log="{task_id}"]')
            page.mouse.click(where["x"], where["y"])
            expect()(show).to_have_attribute("aria-expanded", "true")
            expect()(page.locator(f"#log-{task_id}")).to_be_visible()
            where = page.evaluate(HIT_AT_SHOW, task_id)
            page.mouse.click(where["x"], where["y"])
            expect()(show).to_have_attribute("aria-expanded", "false")
    assert dialogs.asked == [], "no press on Show reached Cancel or Requeue"
    assert task_status(api, job_id, done["task_id"]) == "completed"
    assert task_status(api, job_id, rendering["task_id"]) == "active"

    # On a phone the tasks are cards, and each Show is where it is seen there too.
    mobile = phone_like(browser, page)
    mobile.goto(f"{farm.url}/jobs/{job_id}")
    expect()(mobile.locator("#live")).to_have_attribute("data-state", "live")
    expect()(mobile.locator("#tasks")).to_contain_text("frame 1000001 · sample 12345/65536")
    shoot(mobile, "task-table-390")
    for task_id in task_ids:
        where = mobile.evaluate(HIT_AT_SHOW, task_id)
        assert where["log"] == str(task_id), (
            f"at 390 px a tap on task {task_id}'s Show lands on {where['hit']}"
        )
    mobile.context.close()

    # Requeue of a finished task throws its render away: the page asks first, and "no"
    # leaves it completed; "yes" queues it again.
    page.set_viewport_size({"width": 1366, "height": 900})
    finished = page.locator(f'#tasks tr[data-task-id="{done["task_id"]}"]')
    index = finished.locator("td").first.inner_text()
    requeue = finished.get_by_role("button", name=f"Requeue task {index}")
    requeue.click()
    page.wait_for_timeout(500)
    assert dialogs.asked == [
        f"Requeue task {index}? Its finished work is thrown away and rendered again."
    ]
    expect()(finished.locator(".badge")).to_have_text("completed")
    assert task_status(api, job_id, done["task_id"]) == "completed"
    dialogs.accept = True
    requeue.click()
    expect()(finished.locator(".badge")).to_have_text("queued")
    assert task_status(api, job_id, done["task_id"]) == "queued"
    page.context.close()


# For `page.evaluate(..., taskId)`: what a person cannot read or press on task `taskId`'s
# row, with the row scrolled into the window and its table's frame scrolled to its start:
# text of a cell that lies outside the frame or under something else (as under a pinned
# column), cells that do not line up with their column's heading, and buttons that a
# press at their centre misses. A cell that says only a dash (none yet) has nothing to read.
UNREADABLE = """(taskId) => {
    const row = document.querySelector(`#tasks tr[data-task-id="${taskId}"]`);
    row.scrollIntoView({ block: "center", inline: "nearest" });
    const frame = row.closest(".table-wrap");
    frame.scrollLeft = 0;
    const edge = frame.getBoundingClientRect();
    const heads = document.querySelector("#tasks thead tr").cells;
    const what = (node) => {
        if (!node) return "nothing (outside the window)";
        const cell = node.closest("td, th");
        if (!cell) return node.tagName;
        const owner = cell.tagName === "TH"
            ? "the heading" : `task ${cell.parentElement.dataset.taskId}'s`;
        return `${owner} ${heads[cell.cellIndex].textContent} cell`;
    };
    const problems = [];
    for (const cell of row.cells) {
        const text = cell.textContent.trim();
        if (!text || text === "\\u2013") continue;
        const name = `${heads[cell.cellIndex].textContent} (${text.slice(0, 30)})`;
        const head = heads[cell.cellIndex].getBoundingClientRect();
        if (head.width && Math.abs(head.left - cell.getBoundingClientRect().left) > 1) {
            problems.push(`${name} is not under its heading`);
        }
        const range = document.createRange();
        range.selectNodeContents(cell);
        const boxes = [...range.getClientRects()].filter((box) => box.width && box.height);
        if (!boxes.length) problems.push(`${name} is not shown`);
        for (const box of boxes) {
            if (box.left < edge.left - 0.5 || box.right > edge.right + 0.5) {
                problems.push(`${name} lies outside the table's frame`);
                break;
            }
            const x = box.left + box.width / 2, y = box.top + box.height / 2;
            const at = document.elementFromPoint(x, y);
            if (!cell.contains(at)) {
                problems.push(`${name} lies under ${what(at)}`);
                break;
            }
        }
    }
    for (const button of row.querySelectorAll("button")) {
        const box = button.getBoundingClientRect();
        const at = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
        if (at?.closest("button") !== button) {
            const name = button.getAttribute("aria-label") || button.textContent;
            problems.push(`a press on ${name} lands on ${what(at)}`);
        }
    }
    return problems;
}"""


def test_at_tablet_and_small_laptop_widths_every_cell_is_readable_and_every_button_pressable(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(
        api, name="mid shot", frame_start=1001, frame_end=1010, chunk_size=2, max_attempts=1
    )
    # A completed task (with its time per frame and peak memory), a failed one with a
    # long error (Requeue), one rendering with a long "Now" (Cancel), two that wait.
    finisher = register(api, farm, "render-box-01")
    done = claim(api, finisher)
    report = {"frames_done": 2, "render_seconds": 167.0, "peak_memory_bytes": 3 * 2**30}
    progress = f"/api/runner/tasks/{done['task_id']}/progress"
    answer = api.post(progress, headers=finisher, json=report)
    assert answer.status_code == 200, answer.text
    complete(api, finisher, done)
    crasher = register(api, farm, "render-box-02")
    failed = claim(api, crasher)
    fail(api, crasher, failed, LONG_ERROR)
    busy = register(api, farm, "render-box-03.studio.example.com")
    rendering = claim(api, busy)
    report = {"frame": 1000001, "sample": 12345, "samples_total": 65536}
    report |= {"peak_memory_bytes": 11 * 2**30}
    progress = f"/api/runner/tasks/{rendering['task_id']}/progress"
    answer = api.post(progress, headers=busy, json=report)
    assert answer.status_code == 200, answer.text

    page = sign_in(browser, farm)
    dialogs = Dialogs(page)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    rows = page.locator("#tasks tbody tr[data-task-id]")
    expect()(rows).to_have_count(5)
    expect()(page.locator("#tasks")).to_contain_text(LONG_ERROR)
    expect()(page.locator("#tasks")).to_contain_text("frame 1000001 · sample 12345/65536")
    task_ids = [int(row.get_attribute("data-task-id") or 0) for row in rows.all()]

    widths = (641, 700, 800, 1024, 1180, 1200, 1280, 1365)
    unreadable: dict[str, list[str]] = {}
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("() => document.getAnimations().length === 0")
        shoot(page, f"task-table-{width}")
        for task_id in task_ids:
            if problems := page.evaluate(UNREADABLE, task_id):
                unreadable[f"{width} px, task {task_id}"] = problems
    assert unreadable == {}, "\n".join(f"{where}: {what}" for where, what in unreadable.items())

    # A real click on each Show opens its log (the rows under it move down), another
    # closes it.
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        for task_id in task_ids:
            show = page.locator(f'#tasks [data-log="{task_id}"]')
            where = page.evaluate(HIT_AT_SHOW, task_id)
            page.mouse.click(where["x"], where["y"])
            expect()(show).to_have_attribute("aria-expanded", "true")
            expect()(page.locator(f"#log-{task_id}")).to_be_visible()
            where = page.evaluate(HIT_AT_SHOW, task_id)
            page.mouse.click(where["x"], where["y"])
            expect()(show).to_have_attribute("aria-expanded", "false")
    assert dialogs.asked == [], "no press on Show reached Cancel or Requeue"
    assert task_status(api, job_id, done["task_id"]) == "completed"
    assert task_status(api, job_id, failed["task_id"]) == "failed"
    assert task_status(api, job_id, rendering["task_id"]) == "active"
    page.context.close()
