"""Where the keyboard focus goes when "Try again" sends a refused upload once more.

The submit page offers "Try again" after an upload the manager refused through no fault
of the file (busy: 503 with Retry-After). Pressing it hid the button while the file was
sent, and the focus fell to the page's body: a keyboard user had to Tab from the top
again, and a screen reader said nothing of the new attempt. The focus now moves to the
upload's status line, a live region that says what happens, with "Try again" next in
Tab order when it comes back; once the file is read, the form's name field has it.

The busy answers are given through the browser's request interception and page timers
run on Playwright's clock, as in test_busy_answers_ui.py. No Blender: a stand-in .blend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from farmhand.localfarm import LocalFarm
from farmhand.manager.context import UNPACKS_AT_ONCE
from farmhand.manager.file_reads import RETRY_AFTER_SECONDS
from tests.browser.conftest import expect, manager_farm, shoot
from tests.browser.test_busy_answers_ui import busy_answer, project_zip, submit_page
from tests.integration.conftest import FAKE_BLEND

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

farm = manager_farm(name="try-again-farm")

FOCUSED = "() => document.activeElement && document.activeElement.id"
BUSY = "The manager is busy and did not take the file (nothing is wrong with it). "


def test_try_again_keeps_the_keyboard_focus_on_the_upload(
    browser: Any, farm: LocalFarm, tmp_path: Path
) -> None:
    shot = project_zip(tmp_path / "shot.zip", {"shot.blend": FAKE_BLEND})
    page = submit_page(browser, farm)
    sent: list[str] = []

    def busy_twice(route: Any) -> None:
        sent.append(route.request.url)
        if len(sent) <= 2:
            busy_answer(route, UNPACKS_AT_ONCE, "unpacking other projects")
        else:
            route.continue_()

    page.route("**/api/projects", busy_twice)
    page.set_input_files("#file", str(shot))
    text = page.locator("#upload-text")
    again = page.locator("#upload-again")
    expect()(text).to_have_text(BUSY + f"Try again in {RETRY_AFTER_SECONDS} s.")
    # The status line is announced when it changes.
    expect()(text).to_have_attribute("role", "status")
    expect()(text).to_have_attribute("aria-live", "polite")
    page.clock.run_for(RETRY_AFTER_SECONDS * 1000)
    expect()(again).to_be_enabled()

    # Pressed from the keyboard: still busy. The focus is on the line that says so.
    again.focus()
    page.keyboard.press("Enter")
    expect()(text).to_have_text(BUSY + f"Try again in {RETRY_AFTER_SECONDS} s.")
    assert len(sent) == 2, sent
    assert page.evaluate(FOCUSED) == "upload-text", "the focus fell to the page's body"
    shoot(page, "try-again-focus-on-status")

    # "Try again" is the next Tab stop once it can be pressed; this time the file goes
    # through and the focus moves on to the form.
    page.clock.run_for(RETRY_AFTER_SECONDS * 1000)
    expect()(again).to_be_enabled()
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == "upload-again"
    page.keyboard.press("Enter")
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    expect()(text).to_have_text("Uploaded: 1 file.")
    assert page.evaluate(FOCUSED) == "name", "the form's first field has the focus"
    assert len(sent) == 3, sent
    shoot(page, "try-again-focus-on-form")
    page.context.close()
