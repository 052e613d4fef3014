"""A real browser (Debian's chromium driven by Playwright) against a real farm.

One farm (a manager and one worker rendering with the bpy module) and one browser serve
every test of a module; the tests share them through the `browser` xdist group. The
fixtures are module-scoped, not session-scoped, because Playwright's sync API keeps an
asyncio loop running in the thread while it is open, which would break `asyncio.run` in
any other test that the same xdist worker runs afterwards. A module whose runners are
scripted HTTP calls has a manager and no worker instead: `farm = manager_farm(...)`.
Screenshots land in `test-artifacts/screenshots/` (gitignored) for people to look at.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_scene
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.web_schemas import BlendInfo
from tests.integration.conftest import farm_fixture, png_bytes, purge_jobs_and_runners

CHROMIUM = os.environ.get("FARMHAND_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
EXPECT_TIMEOUT = 30_000
"""Milliseconds an `expect` waits for what it expects (Playwright's own default is 5 s):
on a loaded CI machine, with Blender rendering and the manager busy, a live event and the
request it starts can take longer than that. A wait, never a timing assertion. Also the
actions' default in `sign_in`'s contexts."""


@pytest.fixture(scope="module")
def playwright_api() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api.expect.set_options(timeout=EXPECT_TIMEOUT)  # global: every module's expect
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    browser = playwright_api.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser-scenes")
    return {
        "quick": make_scene(
            root / "spinning-cube.blend", "animated", width=64, height=48, frames="1-6", samples=2
        ),
        # Frames that take seconds: time to cancel while Blender runs.
        "slow": make_scene(
            root / "slow.blend", "slow", width=320, height=240, frames="1-50", samples=64
        ),
    }


@contextlib.contextmanager
def running(farm: LocalFarm) -> Iterator[LocalFarm]:
    """The farm's manager and one bpy worker `w1`; its logs are printed if anything fails."""
    try:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        yield farm
    except BaseException:
        print(farm.logs())
        raise
    finally:
        farm.stop()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[LocalFarm]:
    with running(LocalFarm(tmp_path_factory.mktemp("browser-farm"))) as farm:
        yield farm


def manager_farm(
    *manager_args: str, name: str, heartbeat_timeout: float | None = None
) -> Callable[..., object]:
    """A module's own `farm` (`farm = manager_farm(...)`): a manager and no worker, as
    `farm_fixture` makes it, started once the module's browser is up, so that without
    Chromium the module is skipped before any manager starts."""
    return farm_fixture(
        *manager_args, name=name, first=("browser",), heartbeat_timeout=heartbeat_timeout
    )


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot once running transitions have ended: a progress bar caught
    mid-way through its 0.4 s growth would show 57 % next to a "100 %" label."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate(
        "Promise.all(document.getAnimations().filter((a) => a.effect?.getTiming().iterations"
        " !== Infinity).map((a) => a.finished.catch(() => null)))"
    )
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(browser: Any, farm: LocalFarm, token: str | None = None, **options: Any) -> Any:
    """A fresh browser context signed in with `token` (the admin's by default); its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, **options)
    context.set_default_timeout(EXPECT_TIMEOUT)
    page = context.new_page()
    page.goto(farm.url + "/")
    assert "/login" in page.url, "an anonymous visitor is sent to the login page"
    page.fill("#token", token or farm.admin_token)
    page.click("#token-login button[type=submit]")
    page.wait_for_url(farm.url + "/")
    return page


NO_SIDEWAYS_SCROLL = "() => document.scrollingElement.scrollWidth <= window.innerWidth"
"""For `page.evaluate`: true when the page fits the window's width (as it must on a phone)."""


def phone_like(browser: Any, page: Any) -> Any:
    """A new page on a 390 px phone in dark mode, signed in as `page` is."""
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
        storage_state=page.context.storage_state(),
    )
    return phone.new_page()


def follow_nav(page: Any, farm: LocalFarm, link: str, path: str) -> None:
    """Follow the main navigation's `link` and wait until the new page has loaded.

    The page's script is deferred: a click does not wait for it, and a form used before
    it runs is submitted natively, which reloads the page and loses what was typed.
    """
    page.click(f"nav >> text={link}")
    page.wait_for_url(farm.url + path, wait_until="load")


class Dialogs:
    """Answers the page's confirm() dialogs (no by default) and keeps what they asked."""

    def __init__(self, page: Any) -> None:
        self.asked: list[str] = []
        self.accept = False
        page.on("dialog", self._answer)

    def _answer(self, dialog: Any) -> None:
        self.asked.append(dialog.message)
        if self.accept:
            dialog.accept()
        else:
            dialog.dismiss()


@pytest.fixture
def api(farm: LocalFarm) -> Iterator[httpx.Client]:
    """The API as the admin of the module's `farm`; every job and runner is gone after
    each test."""
    admin = {"Authorization": f"Bearer {farm.admin_token}"}
    with httpx.Client(base_url=farm.url, headers=admin, timeout=30) as client:
        yield client
        purge_jobs_and_runners(client)


def expect() -> Any:
    """Playwright's `expect`, imported when a test runs (collection needs no Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def register(api: httpx.Client, farm: LocalFarm, name: str, **capabilities: Any) -> dict[str, str]:
    """A scripted runner's headers (it sends no heartbeats: give the farm a long timeout)."""
    body = {
        "token": farm.runner_token,
        "name": name,
        "capabilities": {"protocol": WORKER_PROTOCOL, **capabilities},
    }
    answer = api.post("/api/runner/register", json=body)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def claim(api: httpx.Client, who: dict[str, str]) -> dict[str, Any]:
    answer = api.get("/api/runner/tasks", params={"wait": 0}, headers=who)
    assert answer.status_code == 200, f"{answer.status_code}: nothing to claim"
    return answer.json()  # type: ignore[no-any-return]


def complete(
    api: httpx.Client,
    who: dict[str, str],
    task: dict[str, Any],
    image: tuple[str, bytes] | None = None,
) -> None:
    """Upload an image for each frame of the task (a PNG, or `image`: suffix and bytes),
    then complete it, as a worker does."""
    suffix, content = image or ("png", png_bytes())
    for frame in task["frames"]:
        answer = api.put(
            f"/api/runner/tasks/{task['task_id']}/frames/{frame}.{suffix}",
            headers=who,
            content=content,
        )
        assert answer.status_code == 201, answer.text
    answer = api.post(
        f"/api/runner/tasks/{task['task_id']}/complete",
        headers=who,
        json={"frames": task["frames"]},
    )
    assert answer.status_code == 200, answer.text


def fail(api: httpx.Client, who: dict[str, str], task: dict[str, Any], reason: str) -> None:
    """Fail the task for `reason`, as a worker whose render failed does."""
    answer = api.post(
        f"/api/runner/tasks/{task['task_id']}/fail", headers=who, json={"reason": reason}
    )
    assert answer.status_code == 200, answer.text


def release(
    api: httpx.Client,
    who: dict[str, str],
    task: dict[str, Any],
    reason: str = "worker shutting down",
) -> None:
    """Give the task back for `reason`, as a worker that stops (or cannot work) does: no
    failure."""
    answer = api.post(
        f"/api/runner/tasks/{task['task_id']}/release", headers=who, json={"reason": reason}
    )
    assert answer.status_code == 200, answer.text


def task_status(api: httpx.Client, job_id: int, task_id: int) -> str:
    tasks = api.get(f"/api/jobs/{job_id}").json()["tasks"]
    return str(next(t["status"] for t in tasks if t["id"] == task_id))


WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def days_away_from_now(zone: str, count: int) -> list[str]:
    """`count` (at most 4) days of the week, in week order, on which no sleep window of
    that day (even one running overnight) holds the present moment in `zone`, however
    long the test runs: neither yesterday, today nor tomorrow there.

    For a test whose runner must not be asleep while it looks at the page: a fixed
    "weekdays 09:00-18:00" puts the runner to sleep whenever the suite runs in office
    hours, and the test then sees another page than the one it was written for.
    """
    assert 1 <= count <= 4
    today = datetime.now(ZoneInfo(zone)).weekday()
    away = {(today + offset) % 7 for offset in range(2, 2 + count)}
    return [day for number, day in enumerate(WEEK) if number in away]


def made_up_blend_info(**fields: Any) -> str:
    """A manager's answer about an uploaded .blend (`/api/blend-info`), as JSON, for a
    page test to fulfil the request with: a 1920x1080 Cycles scene, frames 1-10, saved
    and read by Blender 3.4, but for `fields`."""
    values: dict[str, Any] = {
        "sha256": "0" * 64,
        "file_name": "scene.blend",
        "size": 81,
        "blender_version": "3.4.1",
        "saved_with": "3.4",
        "farm_blenders": ["3.4.1"],
        "scene": "Scene",
        "frame_start": 1,
        "frame_end": 10,
        "resolution_x": 1920,
        "resolution_y": 1080,
        "resolution_percentage": 50,
        "engine": "CYCLES",
        "samples": 16,
        "output_format": "PNG",
        "has_camera": True,
    }
    return BlendInfo(**(values | fields)).model_dump_json()
