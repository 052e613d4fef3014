"""The web UI with the keyboard alone, and the render facts the job and runner pages show.

Everything a person does here is Tab / Shift+Tab / Enter / Space / Escape and typing:
no clicks. Each control the Tab key lands on must show a focus ring (the page's own
`:focus-visible` style, not the browser's thin default), and live refreshes must not
throw the focus back to the top of the page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from farmhand.shared.schemas import JobSettings
from tests.browser.conftest import running, shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.xdist_group("browser"),
]

EMAIL, PASSWORD = "kim@example.com", "kim's long password"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

# What the focused element looks like; None when nothing on the page has the focus.
FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return {visible: el.matches(':focus-visible'), outline: style.outlineStyle,
          width: parseFloat(style.outlineWidth) || 0, shadow: style.boxShadow,
          what: el.outerHTML.slice(0, 100)};
}"""
IN_LIGHTBOX = "() => document.getElementById('lightbox').contains(document.activeElement)"


@dataclass
class KeyboardFarm(LocalFarm):
    """A farm whose manager also has a local user with an e-mail and a password."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(LOCAL_TEST_EMAIL=EMAIL, LOCAL_TEST_PASSWORD=PASSWORD)
        return env


@dataclass
class Jobs:
    done: int  # rendered: frames to open
    waiting: int  # needs a tag no runner has: stays queued, to pause and resume


@pytest.fixture(scope="module")
def keyboard_farm(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[LocalFarm]:
    with running(KeyboardFarm(tmp_path_factory.mktemp("keyboard-farm"))) as farm:
        yield farm


@pytest.fixture(scope="module")
def jobs(keyboard_farm: LocalFarm, scenes: dict[str, Path]) -> Jobs:
    with keyboard_farm.client() as client:
        done = client.submit_blend(
            scenes["quick"], JobSettings(name="keyboard cube", frame_start=1, frame_end=2)
        ).id
        waiting = client.submit_blend(
            scenes["quick"],
            JobSettings(name="waits for a tag", required_tags=["nobody-has-this"]),
        ).id
        deadline = time.monotonic() + 240
        while client.get_job(done).status != "completed":
            assert time.monotonic() < deadline, "the quick job did not render in 240 s"
            time.sleep(1)
    return Jobs(done=done, waiting=waiting)


def focused(page: Any, selector: str) -> bool:
    return bool(page.evaluate("s => document.activeElement?.matches(s) ?? false", selector))


def assert_focus_ring(page: Any) -> None:
    info = page.evaluate(FOCUS)
    if info is None:
        return
    assert info["visible"], f"keyboard focus is not :focus-visible on {info['what']}"
    ring = (info["outline"] != "none" and info["width"] >= 2) or info["shadow"] != "none"
    assert ring, f"no visible focus ring on {info['what']}: {info}"


def tab_to(page: Any, selector: str, *, back: bool = False, limit: int = 60) -> None:
    """Press Tab (or Shift+Tab) until `selector` has the focus, checking every stop's ring."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        assert_focus_ring(page)
        if focused(page, selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def keyboard_page(browser: Any, **options: Any) -> Any:
    options.setdefault("viewport", LAPTOP)
    context = browser.new_context(**options)
    context.set_default_timeout(30_000)
    return context.new_page()


def sign_in_with_token(page: Any, farm: LocalFarm) -> None:
    page.goto(farm.url + "/login")
    tab_to(page, "#token")
    page.keyboard.type(farm.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(farm.url + "/")


def test_sign_in_with_password_then_token_by_keyboard(
    browser: Any, keyboard_farm: LocalFarm
) -> None:
    from playwright.sync_api import expect

    farm = keyboard_farm
    page = keyboard_page(browser)
    page.goto(farm.url + "/")
    assert "/login" in page.url
    assert focused(page, "#email"), "the e-mail field has the focus on arrival"
    page.keyboard.type(EMAIL)
    tab_to(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(farm.url + "/")
    expect(page.locator(".who .name")).to_contain_text("kim")

    tab_to(page, ".who button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/login.*"))

    tab_to(page, "#token")
    page.keyboard.type(farm.admin_token)
    tab_to(page, "#token-login button[type=submit]")
    page.keyboard.press("Space")
    page.wait_for_url(farm.url + "/")
    expect(page.locator(".who .name")).to_contain_text("admin")


def test_jobs_actions_and_frames_by_keyboard(
    browser: Any, keyboard_farm: LocalFarm, jobs: Jobs
) -> None:
    from playwright.sync_api import expect

    farm = keyboard_farm
    page = keyboard_page(browser)
    sign_in_with_token(page, farm)
    page.goto(farm.url + "/submit")

    # Through the nav to the jobs, then into the waiting job.
    tab_to(page, 'nav.main a[href="/"]')
    page.keyboard.press("Enter")
    page.wait_for_url(farm.url + "/")
    link = page.locator(f'#jobs a[href="/jobs/{jobs.waiting}"]')
    tab_to(page, f'#jobs a[href="/jobs/{jobs.waiting}"]')
    # A change elsewhere rewrites the table live: the focus stays on the same link.
    httpx.patch(
        f"{farm.url}/api/jobs/{jobs.waiting}",
        json={"priority": 60},
        headers={"Authorization": f"Bearer {farm.admin_token}"},
    ).raise_for_status()
    expect(page.locator(f'#jobs tr[data-job-id="{jobs.waiting}"]')).to_contain_text("60")
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{farm.url}/jobs/{jobs.waiting}")
    expect(page.locator("#job-status")).to_have_text("queued")

    # Pause, and the focus stays in the action bar, on Resume.
    tab_to(page, '#actions [data-action="pause"]')
    page.keyboard.press("Enter")
    expect(page.locator("#job-status")).to_have_text("paused")
    expect(page.locator('#actions [data-action="resume"]')).to_be_focused()
    assert_focus_ring(page)
    page.keyboard.press("Space")
    expect(page.locator("#job-status")).to_have_text("queued")
    expect(page.locator('#actions [data-action="pause"]')).to_be_focused()

    # A new priority: typed, then Enter in the field.
    tab_to(page, "#priority-input")
    page.keyboard.press("Control+A")
    page.keyboard.type("70")
    page.keyboard.press("Enter")
    expect(page.locator("#stat-priority")).to_have_text("70")
    shoot(page, "keyboard-01-actions")

    # Back up to the nav, into the rendered job, and open its first frame.
    tab_to(page, 'nav.main a[href="/"]', back=True)
    page.keyboard.press("Enter")
    page.wait_for_url(farm.url + "/")
    tab_to(page, f'#jobs a[href="/jobs/{jobs.done}"]')
    page.keyboard.press("Enter")
    page.wait_for_url(f"{farm.url}/jobs/{jobs.done}")
    thumb = page.locator('.thumb[data-frame="1"]')
    expect(thumb).to_be_visible()
    tab_to(page, '.thumb[data-frame="1"]')
    page.keyboard.press("Enter")
    dialog = page.locator("#lightbox")
    expect(dialog).to_be_visible()
    assert page.evaluate(IN_LIGHTBOX)
    assert_focus_ring(page)
    page.keyboard.press("Tab")  # around the dialog's own controls
    assert page.evaluate(IN_LIGHTBOX)
    assert_focus_ring(page)
    shoot(page, "keyboard-02-lightbox")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(thumb).to_be_focused()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", ["laptop", "phone"])
def test_render_facts_on_job_and_runner_pages(
    browser: Any, keyboard_farm: LocalFarm, jobs: Jobs, scheme: str, width: str
) -> None:
    from playwright.sync_api import expect

    farm = keyboard_farm
    with farm.client() as client:
        done = client.get_job(jobs.done)
        waiting = client.get_job(jobs.waiting)
    assert done.blender_saved and done.tasks[0].peak_memory_bytes

    page = keyboard_page(
        browser,
        viewport=LAPTOP if width == "laptop" else PHONE,
        color_scheme=scheme,
        reduced_motion="reduce",  # progress bars at their width in the screenshots
    )
    sign_in_with_token(page, farm)
    page.goto(f"{farm.url}/jobs/{jobs.done}")
    expect(page.locator("#stat-blender")).to_have_text(done.blender_saved)
    expect(page.locator("#stat-memory")).to_have_text(re.compile(r"^\d+(\.\d)? (MiB|GiB)$"))
    expect(page.locator("#stat-per-frame")).to_have_text(re.compile(r"^\d+\.\ds$|^\d+m \d\ds$"))
    memory = page.locator(f'#tasks tr[data-task-id="{done.tasks[0].id}"] [data-memory]')
    expect(memory).to_have_text(re.compile(r"^\d+(\.\d)? (MiB|GiB)$"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#thumbs img')].every(i => i.complete)"
    )
    shoot(page, f"keyboard-03-job-{width}-{scheme}")

    page.goto(f"{farm.url}/jobs/{jobs.waiting}")
    if waiting.status_reason:
        expect(page.locator("#job-reason")).to_have_text(waiting.status_reason)
    shoot(page, f"keyboard-04-waiting-{width}-{scheme}")

    page.goto(farm.url + "/runners")
    row = page.locator('#runners tr[data-runner-name="w1"]')
    expect(row).to_contain_text("CPU")
    with farm.client() as client:
        versions = client.list_runners()[0].capabilities.blender_versions
    assert versions
    expect(row).to_contain_text(versions[0])
    shoot(page, f"keyboard-05-runners-{width}-{scheme}")
