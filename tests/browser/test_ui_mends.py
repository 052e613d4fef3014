"""What a QA pass of the web UI found, each checked as a person would notice it.

No Blender: scripted runners (register, claim, upload, complete) and a stand-in .blend,
as in `test_job_controls.py`. The job page refuses a priority that is not a whole number;
names of 100-200 characters without a space fit every page on a laptop and a phone; a
file the manager refuses says so in the submit page's status line, and the next file
chosen clears it; the Frames section agrees with the Frames figure after a requeue, the
focus stays on a thumbnail made anew, Elapsed ticks between events, and a deleted job is
not fetched again; your own account offers no Disable or Delete; the account tables are
cards on a phone and the runner cards keep hardware, tags and sleep schedule; a busy
runner offers one "after its task" and one "now" control, and a draining one no second
"after its task".
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
    complete,
    days_away_from_now,
    expect,
    fail,
    manager_farm,
    phone_like,
    register,
    shoot,
    sign_in,
)
from tests.integration.conftest import png_bytes, submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

LONG_JOB = "Ünïcødé 渲染 🎬 " + "x" * 180
LONG_RUNNER = "render-node-" + "r" * 88  # 100 characters, the most a runner name may have
LONG_USER = "artist." + "u" * 93
LONG_TOKEN = "token-" + "t" * 94
LONG_ERROR = "Blender-crashed:" + "e" * 300
LONG_BOX = {
    "blender_versions": ["4.2.1"],
    "cpu": "C" * 200,
    "cores": 32,
    "ram_bytes": 64 * 2**30,
    "hostname": "h" * 200,
    "tags": ["a" * 40, "b" * 40, "gpu"],
    "gpus": ["G" * 120],
}
# Every table's frame shows it whole: nothing scrolls sideways inside the page either.
TABLES_FIT = """() => [...document.querySelectorAll(".table-wrap")]
    .filter((frame) => frame.offsetParent !== null && frame.scrollWidth > frame.clientWidth)
    .map((frame) => frame.querySelector("table").id)"""
DESKTOP = {"width": 1366, "height": 800}


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = manager_farm(name="mends-farm", heartbeat_timeout=600.0)


def test_a_priority_that_is_not_a_whole_number_is_refused(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    # An empty box was Number("") = 0: priority 0 and "Set priority: done".
    job_id = submit_stand_in(api, name="prio", frame_start=1, frame_end=2)
    page = sign_in(browser, farm)
    patches: list[str] = []
    page.on("request", lambda r: patches.append(r.url) if r.method == "PATCH" else None)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#stat-priority")).to_have_text("50")
    page.fill("#priority-input", "")
    page.click('[data-action="priority"]')
    refusal = page.locator(".toast.error")
    expect()(refusal).to_contain_text("whole number from 0 to 100")
    expect()(page.locator("#priority-input")).to_be_focused()
    page.fill("#priority-input", "2.5")
    page.press("#priority-input", "Enter")
    expect()(refusal).to_have_count(2)
    shoot(page, "mends-01-priority-refused")
    expect()(page.locator(".toast:not(.error)")).to_have_count(0)
    assert patches == [], "nothing was sent"
    assert api.get(f"/api/jobs/{job_id}").json()["priority"] == 50
    page.fill("#priority-input", "70")
    page.press("#priority-input", "Enter")
    expect()(page.locator("#stat-priority")).to_have_text("70")
    page.context.close()


def test_long_names_fit_every_page_on_a_laptop_and_a_phone(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    made = api.post("/api/admin/users", json={"name": LONG_USER, "role": "user"})
    assert made.status_code == 201, made.text
    theirs = {"Authorization": f"Bearer {made.json()['token']}"}
    token = api.post("/api/tokens", json={"name": LONG_TOKEN})
    assert token.status_code == 201, token.text
    job_id = submit_stand_in(api, name=LONG_JOB, frame_start=1, frame_end=4, max_attempts=1)
    submit_stand_in(api, theirs, name=LONG_JOB + "y", frame_start=1, frame_end=1)
    runner = register(api, farm, LONG_RUNNER, **LONG_BOX)
    done = claim(api, runner)
    complete(api, runner, done)
    failing = claim(api, runner)
    fail(api, runner, failing, LONG_ERROR)
    claim(api, runner)  # busy: the runner's row names the long job

    page = sign_in(browser, farm)
    page.set_viewport_size(DESKTOP)
    phone = phone_like(browser, page)
    pages = {
        "jobs": ("/", "#jobs tbody tr[data-job-id]"),
        "job": (f"/jobs/{job_id}", "#tasks tbody tr[data-task-id]"),
        "runners": ("/runners", "#runners tbody tr[data-runner-id]"),
        "account": ("/account", "#users tbody tr[data-user-id]"),
        "storage": ("/storage", "#storage-users tbody tr"),
    }
    for size, tab in (("desktop", page), ("phone", phone)):
        for name, (path, loaded) in pages.items():
            tab.goto(farm.url + path)
            expect()(tab.locator(loaded).first).to_contain_text(
                re.compile("xxxx|rrrr|uuuu|eeee|[0-9]")
            )
            shoot(tab, f"mends-02-long-{name}-{size}")
            assert tab.evaluate(NO_SIDEWAYS_SCROLL), f"{name} scrolls sideways on a {size}"
            assert tab.evaluate(TABLES_FIT) == [], f"{name}: a table scrolls on a {size}"
        # A file with a long name, read (or not) by the manager: its name fits too.
        tab.goto(farm.url + "/submit")
        tab.set_input_files(
            "#file",
            {
                "name": "f" * 150 + ".blend",
                "mimeType": "application/octet-stream",
                "buffer": b"BLENDER-v304RENDB" + b"\x00" * 64,
            },
        )
        # Not a .blend any Blender reads: refused, not kept (e275dc4); the refusal
        # names the file, and the line must fit as well.
        expect()(tab.locator("#upload-text")).to_contain_text("Failed", timeout=60_000)
        shoot(tab, f"mends-02-long-submit-{size}")
        assert tab.evaluate(NO_SIDEWAYS_SCROLL), f"submit scrolls sideways on a {size}"
    phone.context.close()
    page.context.close()


def test_a_refused_file_says_so_and_the_next_choice_clears_it(
    browser: Any, farm: LocalFarm
) -> None:
    page = sign_in(browser, farm)
    page.goto(farm.url + "/submit")
    page.set_input_files(
        "#file", {"name": "bad.blend", "mimeType": "text/plain", "buffer": b"this is not blend\n!"}
    )
    status = page.locator("#upload-text")
    expect()(status).to_contain_text("Failed: 'bad.blend' is not a .blend file")
    expect()(page.locator("#upload-bar")).to_have_class(re.compile(r"\bbad\b"))
    shoot(page, "mends-03-submit-refused")
    page.set_input_files("#file", {"name": "anim.log", "mimeType": "text/plain", "buffer": b"x"})
    expect()(page.locator("#blend-notice")).to_contain_text("anim.log is neither")
    expect()(page.locator("#upload")).to_be_hidden()
    expect()(page.get_by_text("bad.blend").filter(visible=True)).to_have_count(0)
    shoot(page, "mends-03-submit-other-file")
    page.context.close()


def test_the_job_page_after_a_requeue_while_active_and_when_deleted(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(api, name="requeued", frame_start=1, frame_end=6, chunk_size=3)
    runner = register(api, farm, "frames-box")
    first = claim(api, runner)
    complete(api, runner, first)
    page = sign_in(browser, farm)
    page.clock.install()
    page.goto(f"{farm.url}/jobs/{job_id}")
    page.clock.run_for(2500)  # the load, and the live stream opening
    expect()(page.locator("#frames-count")).to_have_text("3 of 6 done")
    expect()(page.locator("#stat-frames")).to_have_text("3/6")

    # A thumbnail with the keyboard's focus, whose frame is then queued again.
    middle = page.locator(f'.thumb[data-frame="{first["frames"][1]}"]')
    middle.focus()
    answer = api.post(
        f"/api/jobs/{job_id}/tasks/{first['task_id']}/actions", json={"action": "requeue"}
    )
    assert answer.status_code == 200, answer.text
    page.clock.run_for(1000)
    expect()(page.locator("#stat-frames")).to_have_text("0/6")
    expect()(page.locator("#frames-count")).to_have_text(
        "0 of 6 done · 3 frames shown from an earlier render, to be rendered again"
    )
    expect()(middle).to_contain_text("to render again")
    expect()(middle).to_be_focused()
    # The newest file is one of those frames: Last rendered says it is an earlier render.
    expect()(page.locator("#latest figcaption")).to_contain_text(
        "an earlier render, to be rendered again"
    )

    # Active (the task claimed again): Elapsed moves on without an event.
    again = claim(api, runner)
    assert again["task_id"] == first["task_id"]
    page.clock.run_for(1000)
    expect()(page.locator("#job-status")).to_have_text("active")
    expect()(middle).to_contain_text("rendering again")
    expect()(middle).to_be_focused()
    shoot(page, "mends-04-requeued-frames")
    # The frame's new render replaces its thumbnail: the keyboard stays on that frame.
    for frame in first["frames"][:2]:
        answer = api.put(
            f"/api/runner/tasks/{first['task_id']}/frames/{frame}.png",
            headers=runner,
            content=png_bytes(colour="blue"),
        )
        assert answer.status_code == 201, answer.text
    answer = api.post(
        f"/api/runner/tasks/{first['task_id']}/progress", headers=runner, json={"frames_done": 2}
    )
    assert answer.status_code == 200, answer.text
    page.clock.run_for(1000)
    expect()(page.locator("#frames-count")).to_contain_text("2 of 6 done · 1 frame shown")
    expect()(page.locator("#latest figcaption")).not_to_contain_text("earlier render")
    expect()(middle).not_to_contain_text("again")
    expect()(middle).to_be_focused()
    before = page.locator("#stat-elapsed").inner_text()
    page.clock.run_for(20_000)
    after = page.locator("#stat-elapsed").inner_text()
    assert after != before, f"Elapsed stayed {before} for 20 s while the job was active"

    # Deleting: nothing asks for the job once the delete is sent.
    asked: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: asked.append(f"{r.method} {r.url}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    Dialogs(page).accept = True
    page.click('[data-action="delete"]')
    page.clock.run_for(1000)
    page.wait_for_url(farm.url + "/")
    sent = next(i for i, url in enumerate(asked) if url.startswith("DELETE "))
    after_delete = [url for url in asked[sent + 1 :] if f"/api/jobs/{job_id}" in url]
    assert after_delete == [], after_delete
    assert errors == [], errors
    page.context.close()


def test_own_account_and_phone_cards_and_runner_controls(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    made = api.post("/api/admin/users", json={"name": "other-person", "role": "user"})
    assert made.status_code == 201, made.text
    api.post("/api/tokens", json={"name": "laptop CLI"})
    job_id = submit_stand_in(api, name="busy job", frame_start=1, frame_end=2)
    busy = register(api, farm, "studio-box", **LONG_BOX | {"tags": ["gpu", "highmem"]})
    claim(api, busy)
    runner_id = next(
        r["id"] for r in api.get("/api/admin/runners").json() if r["name"] == "studio-box"
    )
    [day] = days_away_from_now("UTC", 1)  # asleep now, it would show other controls
    schedule = {"timezone": "UTC", "windows": [{"days": [day], "start": "09:00", "end": "18:00"}]}
    answer = api.put(f"/api/admin/runners/{runner_id}/sleep-schedule", json=schedule)
    assert answer.status_code == 200, answer.text

    page = sign_in(browser, farm)
    page.goto(farm.url + "/account")
    me = page.evaluate("document.body.dataset.user")
    mine = page.locator(f'#users tr[data-user-name="{me}"]')
    theirs = page.locator('#users tr[data-user-name="other-person"]')
    expect()(theirs.get_by_role("button", name="Delete")).to_be_visible()
    expect()(theirs.get_by_role("button", name="Disable")).to_be_visible()
    expect()(mine.get_by_role("button", name="Set password")).to_be_visible()
    expect()(mine.get_by_role("button", name=re.compile("Disable|Delete"))).to_have_count(0)
    expect()(mine).to_contain_text("You cannot disable or delete yourself")
    shoot(page, "mends-05-account-own-row")

    # A busy runner: finish its task then disable, or stop it now; draining, no second drain.
    page.goto(farm.url + "/runners")
    row = page.locator('#runners tr[data-runner-name="studio-box"]')
    expect()(row.get_by_role("link", name="busy job")).to_be_visible()
    labels = row.locator("[data-action]")
    expect()(labels).to_have_text(["Finish task, then disable", "Stop task, disable now"])
    row.get_by_role("button", name="Finish task, then disable").click()
    expect()(row).to_contain_text("draining")
    expect()(labels).to_have_text(["Enable", "Stop task, disable now"])
    assert api.get(f"/api/jobs/{job_id}").json()["status"] == "active", "its task runs on"
    shoot(page, "mends-05-runner-draining")

    phone = phone_like(browser, page)
    phone.goto(farm.url + "/account")
    cards = phone.locator("#users tbody tr[data-user-id], #api-tokens tbody tr[data-token-id]")
    expect()(phone.locator('#users tr[data-user-name="other-person"]')).to_be_visible()
    shoot(phone, "mends-06-phone-account")
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    assert phone.evaluate(TABLES_FIT) == []
    buttons = cards.get_by_role("button")
    assert buttons.count() >= 4
    for button in buttons.all():
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    phone.goto(farm.url + "/runners")
    card = phone.locator('#runners tr[data-runner-name="studio-box"]')
    for shown in ("highmem", "32 cores", "64.0 GiB", f"{day} 09:00-18:00"):
        expect()(card.get_by_text(shown).first).to_be_visible()
    shoot(phone, "mends-06-phone-runners")
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    phone.context.close()
    page.context.close()
