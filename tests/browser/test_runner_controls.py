"""A runner's sleep schedule and deleting a runner, from the runners page in a real browser.

No Blender here: the runners are scripted HTTP calls (register, claim, heartbeat) as in
test_job_controls.py, and jobs are submitted with a stand-in .blend the manager never
opens. Every change made in the page is checked through the API too.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    Dialogs,
    claim,
    expect,
    manager_farm,
    phone_like,
    register,
    shoot,
    sign_in,
    task_status,
)
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
EVERY_DAY = [*WEEKDAYS, "sat", "sun"]
# Runner-controlled text that would run script if the page put it in as HTML.
NASTY_HOST = '<img src=x onerror="window.pwned=1">ws & <b>co</b>'
WORKSTATION = {
    "cpu": "AMD Ryzen 9 7950X 16-Core Processor",
    "cores": 32,
    "ram_bytes": 64 * 2**30,
    "hostname": "artist-workstation-long-hostname.studio.lan",
    "tags": ["gpu", "highmem"],
    "device": "CUDA",
    "gpu": 0,
    "blender_devices": ["CUDA: NVIDIA GeForce RTX 4090"],
    "gpus": ["NVIDIA GeForce RTX 4090"],
    "blender_versions": ["4.2.1"],
    # Its own address, as the worker reports it: a long IPv6 one, which a phone's card
    # must fit too.
    "address": "2001:db8:85a3:1234:5678:8a2e:370:7334",
}
# For `page.evaluate(..., selector)`: the table's frame shows it whole, nothing to scroll.
FITS_ITS_FRAME = """(selector) => {
    const frame = document.querySelector(selector).closest(".table-wrap");
    return frame.scrollWidth <= frame.clientWidth;
}"""
# For `page.evaluate`: controls of the open sleep-schedule dialog that stick out of the
# window (left or right) or out of the dialog itself.
OUTSIDE_THE_DIALOG = """() => {
    const dialog = document.getElementById("sleep-dialog").getBoundingClientRect();
    const out = [];
    const controls = "#sleep-dialog input, #sleep-dialog button, #sleep-dialog label";
    for (const el of document.querySelectorAll(controls)) {
        const box = el.getBoundingClientRect();
        if (!box.width) continue;
        if (box.left < 0 || box.right > window.innerWidth || box.left < dialog.left - 1
            || box.right > dialog.right + 1) out.push(el.outerHTML.slice(0, 80));
    }
    return out;
}"""
NONE = "\u2013"  # what a runner without a schedule shows (an en dash, as other empty cells)
# For `page.evaluate(..., selector)`: the elements that stick out of the window sideways,
# measured all at once (a live refresh may rewrite the rows between two measurements).
OFF_SCREEN = """(selector) => [...document.querySelectorAll(selector)]
    .filter((el) => { const box = el.getBoundingClientRect();
                      return !box.width || box.left < 0 || box.right > window.innerWidth; })
    .map((el) => el.outerHTML.slice(0, 120))"""
NAVIGATIONS = "performance.getEntriesByType('navigation').length"


# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = manager_farm(name="runner-controls-farm", heartbeat_timeout=600.0)


def runners(api: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = api.get("/api/admin/runners")
    assert answer.status_code == 200, answer.text
    return {r["name"]: r for r in answer.json()}


def schedule_of(api: httpx.Client, name: str) -> dict[str, Any] | None:
    return runners(api)[name]["sleep_schedule"]  # type: ignore[no-any-return]


def set_schedule(api: httpx.Client, name: str, schedule: dict[str, Any]) -> None:
    runner_id = runners(api)[name]["id"]
    answer = api.put(f"/api/admin/runners/{runner_id}/sleep-schedule", json=schedule)
    assert answer.status_code == 200, answer.text


def runners_page(page: Any, farm: LocalFarm) -> None:
    page.goto(farm.url + "/runners")
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")


def row(page: Any, name: str) -> Any:
    return page.locator(f'#runners tr[data-runner-name="{name}"]')


def window(page: Any, index: int) -> Any:
    return page.locator("#sleep-dialog .sleep-window").nth(index)


def ticked(window: Any) -> list[str]:
    return [
        box.get_attribute("value") for box in window.locator("input[type=checkbox]:checked").all()
    ]


def script_errors(page: Any) -> list[str]:
    """Uncaught errors of the page's script, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def settle(page: Any) -> None:
    """No toast and no running transition left for a screenshot."""
    expect()(page.locator("#toasts .toast")).to_have_count(0, timeout=10_000)
    page.wait_for_function("() => document.getAnimations().length === 0")


def test_admin_sets_shows_edits_and_clears_a_sleep_schedule(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    register(api, farm, "artist-ws-01", **WORKSTATION)
    register(api, farm, "render-box-01")
    page = sign_in(browser, farm, timezone_id="America/New_York")
    errors = script_errors(page)
    runners_page(page, farm)
    ws = row(page, "artist-ws-01")
    expect()(ws.locator("td.sleep")).to_have_text(NONE)
    dialog = page.locator("#sleep-dialog")
    expect()(dialog).to_be_hidden()

    # Open the editor with the keyboard: a new schedule starts in the browser's time zone
    # with one office-hours window, the focus in the time zone field, which offers the
    # browser's list of zones.
    opener = page.get_by_role("button", name="Sleep schedule of artist-ws-01")
    opener.focus()
    page.keyboard.press("Enter")
    expect()(dialog).to_be_visible()
    expect()(page.locator("#sleep-title")).to_have_text("Sleep schedule of artist-ws-01")
    zone = page.get_by_label("Time zone")
    expect()(zone).to_be_focused()
    expect()(zone).to_have_value("America/New_York")
    assert page.locator("#sleep-zones option").count() > 300
    expect()(page.locator('#sleep-zones option[value="Europe/Paris"]')).to_have_count(1)
    expect()(dialog.locator(".sleep-window")).to_have_count(1)
    assert ticked(window(page, 0)) == WEEKDAYS
    expect()(window(page, 0).get_by_label("From")).to_have_value("09:00")
    expect()(window(page, 0).get_by_label("Until")).to_have_value("18:00")
    expect()(page.get_by_label("Let the running task finish")).to_be_checked()
    expect()(page.get_by_role("button", name="Clear schedule")).to_be_hidden()

    # Tab stays in the dialog: from its last control to the first and back.
    page.get_by_role("button", name="Cancel").focus()
    page.keyboard.press("Tab")
    expect()(zone).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect()(page.get_by_role("button", name="Cancel")).to_be_focused()

    # Paris time; office hours on weekdays and every night (overnight, 22:00 until 06:00);
    # a running task is stopped when a window starts.
    zone.fill("Europe/Paris")
    page.get_by_role("button", name="Add window").click()
    second = window(page, 1)
    expect()(second.locator("legend")).to_have_text("Window 2")
    expect()(second.locator("input[type=checkbox]").first).to_be_focused()
    assert ticked(second) == [], "an added window has no day yet"
    for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"):
        second.get_by_label(day, exact=True).check()
    second.get_by_label("From").fill("22:00")
    second.get_by_label("Until").fill("06:00")
    page.get_by_label("Stop it now").check()
    expect()(page.get_by_role("button", name="Save")).to_be_in_viewport()
    expect()(page.get_by_role("button", name="Cancel")).to_be_in_viewport()
    settle(page)
    shoot(page, "runner-controls-01-editor")
    zone.press("Enter")  # Enter in a field saves, as in any form

    expect()(dialog).to_be_hidden()
    expect()(ws.locator("td.sleep")).to_have_text(
        "mon-fri 09:00-18:00, daily 22:00-06:00 (Europe/Paris) · stops a running task"
    )
    expect()(opener).to_be_focused()
    expect()(page.locator("#toasts")).to_contain_text("Sleep schedule of “artist-ws-01” saved.")
    assert schedule_of(api, "artist-ws-01") == {
        "timezone": "Europe/Paris",
        "windows": [
            {"days": WEEKDAYS, "start": "09:00", "end": "18:00"},
            {"days": EVERY_DAY, "start": "22:00", "end": "06:00"},
        ],
        "when": "now",
    }
    assert schedule_of(api, "render-box-01") is None, "only that runner's schedule changed"
    expect()(row(page, "render-box-01").locator("td.sleep")).to_have_text(NONE)
    assert page.evaluate(NAVIGATIONS) == 1, "no reload"
    # On a laptop the whole table, schedule and controls included, fits its frame.
    assert page.evaluate(FITS_ITS_FRAME, "#runners"), "the runners scroll in their frame"
    settle(page)
    shoot(page, "runner-controls-02-schedule-shown")

    # Reopen: the editor shows the stored schedule; Escape leaves it as it was.
    opener.click()
    expect()(dialog).to_be_visible()
    expect()(zone).to_have_value("Europe/Paris")
    expect()(dialog.locator(".sleep-window")).to_have_count(2)
    assert ticked(window(page, 0)) == WEEKDAYS
    assert ticked(window(page, 1)) == EVERY_DAY
    expect()(window(page, 0).get_by_label("From")).to_have_value("09:00")
    expect()(window(page, 0).get_by_label("Until")).to_have_value("18:00")
    expect()(window(page, 1).get_by_label("From")).to_have_value("22:00")
    expect()(window(page, 1).get_by_label("Until")).to_have_value("06:00")
    expect()(page.get_by_label("Stop it now")).to_be_checked()
    window(page, 0).get_by_label("Sat", exact=True).check()
    page.keyboard.press("Escape")
    expect()(dialog).to_be_hidden()
    expect()(opener).to_be_focused()
    assert schedule_of(api, "artist-ws-01")["windows"][0]["days"] == WEEKDAYS  # type: ignore[index]

    # Remove the office-hours window with the keyboard and save: the night window stays.
    opener.click()
    window(page, 0).get_by_role("button", name="Remove window 1").focus()
    page.keyboard.press("Enter")
    expect()(dialog.locator(".sleep-window")).to_have_count(1)
    expect()(window(page, 0).locator("legend")).to_have_text("Window 1")
    expect()(window(page, 0).get_by_role("button", name="Remove window 1")).to_be_focused()
    page.get_by_label("Let the running task finish").check()
    page.get_by_role("button", name="Save").click()
    expect()(dialog).to_be_hidden()
    expect()(ws.locator("td.sleep")).to_have_text("daily 22:00-06:00 (Europe/Paris)")
    assert schedule_of(api, "artist-ws-01") == {
        "timezone": "Europe/Paris",
        "windows": [{"days": EVERY_DAY, "start": "22:00", "end": "06:00"}],
        "when": "after-task",
    }

    # Clear it: the manager has no schedule left, the row says so without a reload.
    opener.click()
    clear = page.get_by_role("button", name="Clear schedule")
    expect()(clear).to_be_visible()
    clear.click()
    expect()(dialog).to_be_hidden()
    expect()(ws.locator("td.sleep")).to_have_text(NONE)
    expect()(page.locator("#toasts")).to_contain_text("Sleep schedule of “artist-ws-01” cleared.")
    assert schedule_of(api, "artist-ws-01") is None
    assert runners(api)["artist-ws-01"]["asleep"] is False
    assert page.evaluate(NAVIGATIONS) == 1, "no reload"
    assert errors == []
    page.context.close()


def test_mistakes_show_in_the_dialog_and_change_nothing(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    register(api, farm, "artist-ws-02")
    stored = {
        "timezone": "Europe/Paris",
        "windows": [{"days": ["sat", "sun"], "start": "10:00", "end": "12:00"}],
        "when": "after-task",
    }
    set_schedule(api, "artist-ws-02", stored)
    page = sign_in(browser, farm)
    errors = script_errors(page)
    runners_page(page, farm)
    ws = row(page, "artist-ws-02")
    expect()(ws.locator("td.sleep")).to_have_text("sat-sun 10:00-12:00 (Europe/Paris)")
    page.get_by_role("button", name="Sleep schedule of artist-ws-02").click()
    dialog = page.locator("#sleep-dialog")
    error = page.locator("#sleep-error")
    zone = page.get_by_label("Time zone")
    save = page.get_by_role("button", name="Save")
    expect()(error).to_be_hidden()

    # A time zone the manager does not know: its answer, in the dialog, which stays open
    # with the focus back in the field to fix.
    zone.fill("Mars/Olympus_Mons")
    save.click()
    expect()(error).to_be_visible()
    expect()(error).to_contain_text("Not saved: unknown time zone 'Mars/Olympus_Mons'")
    expect()(error).to_have_attribute("role", "alert")
    expect()(dialog).to_be_visible()
    expect()(zone).to_be_focused()
    assert schedule_of(api, "artist-ws-02") == stored
    expect()(ws.locator("td.sleep")).to_have_text("sat-sun 10:00-12:00 (Europe/Paris)")
    settle(page)
    shoot(page, "runner-controls-03-unknown-zone")

    # Mistakes the page catches itself, before asking the manager.
    zone.fill("Asia/Tokyo")
    first = window(page, 0)
    for day in ("Sat", "Sun"):
        first.get_by_label(day, exact=True).uncheck()
    save.click()
    expect()(error).to_have_text("Window 1: tick at least one day.")
    expect()(first.get_by_label("Mon", exact=True)).to_be_focused()
    first.get_by_label("Sat", exact=True).check()
    first.get_by_label("Until").fill("10:00")
    save.click()
    expect()(error).to_have_text("Window 1 starts and ends at 10:00: it would never apply.")
    zone.fill("")
    save.click()
    expect()(error).to_have_text("Choose a time zone, e.g. Europe/Paris or UTC.")
    expect()(zone).to_be_focused()
    assert schedule_of(api, "artist-ws-02") == stored

    # Fixed: an end of 00:00 is midnight at the end of the day (24:00 to the manager).
    zone.fill("Asia/Tokyo")
    first.get_by_label("Until").fill("00:00")
    save.click()
    expect()(dialog).to_be_hidden()
    expect()(ws.locator("td.sleep")).to_have_text("sat 10:00-24:00 (Asia/Tokyo)")
    assert schedule_of(api, "artist-ws-02") == {
        "timezone": "Asia/Tokyo",
        "windows": [{"days": ["sat"], "start": "10:00", "end": "24:00"}],
        "when": "after-task",
    }
    # Reopened, the error is gone and the end shows as 00:00 again.
    page.get_by_role("button", name="Sleep schedule of artist-ws-02").click()
    expect()(error).to_be_hidden()
    expect()(window(page, 0).get_by_label("Until")).to_have_value("00:00")
    page.get_by_role("button", name="Cancel").click()
    expect()(dialog).to_be_hidden()
    assert errors == []
    page.context.close()


def test_admin_deletes_a_runner(browser: Any, farm: LocalFarm, api: httpx.Client) -> None:
    job_id = submit_stand_in(api, name="night shot", frame_start=1, frame_end=2, chunk_size=1)
    old = register(api, farm, "old-box", hostname=NASTY_HOST)
    register(api, farm, "spare-box")
    task = claim(api, old)
    assert task["job_id"] == job_id

    page = sign_in(browser, farm)
    errors = script_errors(page)
    dialogs = Dialogs(page)
    runners_page(page, farm)
    doomed = row(page, "old-box")
    expect()(doomed.locator(".status")).to_have_text("busy")
    expect()(doomed).to_contain_text(NASTY_HOST)  # its hostname, as text
    assert page.locator("#runners img, #runners b").count() == 0
    delete = page.get_by_role("button", name="Delete runner old-box")
    expect()(delete).to_have_text("Delete")
    settle(page)
    shoot(page, "runner-controls-04-before-delete")

    # Saying no deletes nothing.
    delete.click()
    page.wait_for_timeout(500)
    assert len(dialogs.asked) == 1
    question = dialogs.asked[0]
    assert question.startswith("Delete runner “old-box”?"), question
    assert "secret stops working at once" in question
    assert "it cannot register again by itself" in question, "deleting is a lock-out"
    assert "running task (task 0 of “night shot”) goes back to the queue" in question
    expect()(doomed).to_have_count(1)
    assert "old-box" in runners(api)
    assert task_status(api, job_id, task["task_id"]) == "active"
    assert api.post("/api/runner/heartbeat", json={}, headers=old).status_code == 200

    # Yes, with the keyboard: the row goes without a reload, the keyboard is on the
    # remaining runner's Delete, and the manager has forgotten it: not listed, its
    # secret refused, its task back in the queue.
    dialogs.accept = True
    delete.focus()
    page.keyboard.press("Enter")
    expect()(doomed).to_have_count(0)
    assert len(dialogs.asked) == 2
    expect()(page.get_by_role("button", name="Delete runner spare-box")).to_be_focused()
    expect()(page.locator("#toasts")).to_contain_text("Runner “old-box” deleted.")
    assert sorted(runners(api)) == ["spare-box"]
    assert api.post("/api/runner/heartbeat", json={}, headers=old).status_code == 401
    assert task_status(api, job_id, task["task_id"]) == "queued"
    assert page.evaluate(NAVIGATIONS) == 1, "no reload"
    assert page.evaluate("window.pwned") is None
    # The row stays gone after the live refresh the manager's runner event brings.
    page.wait_for_timeout(1000)
    expect()(doomed).to_have_count(0)
    expect()(row(page, "spare-box")).to_have_count(1)

    # The last runner: the table says there are none, the keyboard goes on to the
    # registration tokens.
    page.keyboard.press("Enter")
    expect()(page.locator("#runners tbody td.empty")).to_contain_text("No runners yet")
    expect()(page.locator("#new-runner-token")).to_be_focused()
    assert runners(api) == {}
    assert errors == []
    page.context.close()


def test_each_runner_says_where_it_is(browser: Any, farm: LocalFarm, api: httpx.Client) -> None:
    """Under its name: the address the manager sees its requests come from (this test's
    scripted runners all come from 127.0.0.1), and its own when that differs."""
    register(api, farm, "render-box-02", hostname="render-box-02", address="127.0.0.1")
    register(api, farm, "behind-nat", hostname="nat.studio.lan", address="192.168.1.20")
    register(api, farm, "odd-one", address=NASTY_HOST[:100])
    page = sign_in(browser, farm)
    errors = script_errors(page)
    runners_page(page, farm)
    same = row(page, "render-box-02").locator(".address")
    expect()(same).to_have_text("127.0.0.1")
    expect()(same).to_have_attribute("title", "Its requests come from 127.0.0.1")
    nat = row(page, "behind-nat").locator("td.name")
    expect()(nat).to_contain_text("nat.studio.lan")
    expect()(nat.locator(".address")).to_have_text("127.0.0.1 (local 192.168.1.20)")
    expect()(row(page, "odd-one").locator(".address")).to_contain_text(NASTY_HOST[:40])
    assert page.locator("#runners img, #runners b").count() == 0, "what it says is text"
    assert page.evaluate(FITS_ITS_FRAME, "#runners"), "the runners fit their frame"
    settle(page)
    shoot(page, "runner-controls-07-addresses")
    assert page.evaluate("window.pwned") is None
    assert errors == []
    page.context.close()


def test_a_schedule_over_the_weeks_end_reads_as_it_was_typed(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """Nights from Friday to Monday read `fri-mon`, as `--window "fri-mon ..."` takes
    them and `farmhand runners` writes them, not `mon,fri-sun`."""
    register(api, farm, "weekend-ws")
    set_schedule(
        api,
        "weekend-ws",
        {
            "timezone": "Europe/Paris",
            "windows": [
                {"days": ["fri", "sat", "sun", "mon"], "start": "22:00", "end": "06:00"},
                {"days": ["sun", "mon", "wed"], "start": "12:00", "end": "13:00"},
            ],
            "when": "after-task",
        },
    )
    page = sign_in(browser, farm)
    errors = script_errors(page)
    runners_page(page, farm)
    expect()(row(page, "weekend-ws").locator("td.sleep")).to_have_text(
        "fri-mon 22:00-06:00, wed,sun-mon 12:00-13:00 (Europe/Paris)"
    )
    assert errors == []
    page.context.close()


def test_phone_runner_cards_and_editor_fit(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """On a 390 px phone in dark mode the runners' cards (schedule and controls included)
    and the sleep-schedule editor fit the width, and the editor works by touch."""
    submit_stand_in(api, name="phone shot", frame_start=1, frame_end=2, chunk_size=1)
    busy = register(api, farm, "render-box-01", **WORKSTATION)
    claim(api, busy)
    register(api, farm, "artist-ws-03", **WORKSTATION)
    set_schedule(
        api,
        "artist-ws-03",
        {
            "timezone": "America/Argentina/ComodRivadavia",
            "windows": [
                {"days": WEEKDAYS, "start": "09:00", "end": "18:00"},
                {"days": ["sat", "sun"], "start": "22:00", "end": "06:00"},
            ],
            "when": "now",
        },
    )
    page = sign_in(browser, farm)
    mobile = phone_like(browser, page)
    errors = script_errors(mobile)
    runners_page(mobile, farm)
    card = row(mobile, "artist-ws-03")
    expect()(card.locator("td.sleep")).to_have_text(
        "mon-fri 09:00-18:00, sat-sun 22:00-06:00 (America/Argentina/ComodRivadavia)"
        " · stops a running task"
    )
    expect()(row(mobile, "render-box-01").locator(".status")).to_have_text("busy")
    expect()(card.locator(".address")).to_have_text(
        "127.0.0.1 (local 2001:db8:85a3:1234:5678:8a2e:370:7334)"
    )
    # None is said on the card too, as in the table (the sleep schedule shows a dash).
    expect()(row(mobile, "render-box-01").locator("td.sleep")).to_be_visible()
    expect()(row(mobile, "render-box-01").locator("td.sleep")).to_have_text(NONE)
    settle(mobile)
    shoot(mobile, "runner-controls-05-phone-cards")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL), "the runners page scrolls sideways on a phone"
    assert mobile.evaluate(FITS_ITS_FRAME, "#runners"), "the runners scroll in their frame"
    assert mobile.evaluate(OFF_SCREEN, "#runners button") == []

    card.get_by_role("button", name="Sleep schedule of artist-ws-03").tap()
    dialog = mobile.locator("#sleep-dialog")
    expect()(dialog).to_be_visible()
    expect()(dialog.locator(".sleep-window")).to_have_count(2)
    # Filled from the manager's answer on a page that never edited it.
    expect()(mobile.get_by_label("Time zone")).to_have_value("America/Argentina/ComodRivadavia")
    assert ticked(window(mobile, 1)) == ["sat", "sun"]
    expect()(window(mobile, 1).get_by_label("Until")).to_have_value("06:00")
    expect()(mobile.get_by_label("Stop it now")).to_be_checked()
    mobile.wait_for_function("() => document.getAnimations().length === 0")
    mobile.wait_for_timeout(600)  # Chrome's highlight of the tapped button fades
    shoot(mobile, "runner-controls-06-phone-editor")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL)
    assert mobile.evaluate(OUTSIDE_THE_DIALOG) == []
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box

    # By touch: Saturday joins the weekday window, the running task may finish; saved.
    window(mobile, 0).get_by_label("Sat", exact=True).tap()
    mobile.get_by_label("Let the running task finish").tap()
    mobile.get_by_role("button", name="Save").tap()
    expect()(dialog).to_be_hidden()
    expect()(card.locator("td.sleep")).to_have_text(
        "mon-sat 09:00-18:00, sat-sun 22:00-06:00 (America/Argentina/ComodRivadavia)"
    )
    assert schedule_of(api, "artist-ws-03") == {
        "timezone": "America/Argentina/ComodRivadavia",
        "windows": [
            {"days": [*WEEKDAYS, "sat"], "start": "09:00", "end": "18:00"},
            {"days": ["sat", "sun"], "start": "22:00", "end": "06:00"},
        ],
        "when": "after-task",
    }
    mobile.context.close()
    assert errors == []
    page.context.close()
