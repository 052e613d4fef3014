"""What the web pages show when the manager answers "busy, ask again later" (503 with
Retry-After), and what the submit form says for each way an upload is refused.

A thumbnail the manager was too busy to make (`context.thumbnails`, web/thumbnails.py)
stayed a broken image on the job page for good; the page now says so in the image's
place and asks again after the Retry-After, a bounded number of times. A project zip
refused because the manager was busy unpacking others (`context.unpacks`) said "Choose
another file", though nothing was wrong with the file; it now says the manager is busy,
when to try again, and offers to send the same file again.

The busy answers are the manager's own (its FileReadsBusy message and Retry-After), given
through the browser's request interception: the manager runs in a process of its own, so
its limiters cannot be held from here, and an interception is answered busy exactly when
the test says. Page timers run on Playwright's clock, so "after the Retry-After" is the
test's to decide, never a race. The other upload refusals are the manager's real ones
where a test can cause them (a bad zip, a zip over the upload limit, a signed-out page).
No Blender: a scripted runner and stand-in .blend files.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.manager.context import THUMBNAILS_AT_ONCE, UNPACKS_AT_ONCE
from farmhand.manager.file_reads import RETRY_AFTER_SECONDS, WAIT_SECONDS, FileReadsBusy
from tests.browser.conftest import claim, complete, expect, register, shoot, sign_in
from tests.integration.conftest import FAKE_BLEND, submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

MAX_UPLOAD = 50_000
"""The module's manager takes uploads up to this many bytes (413 above): small, so a
test can send a zip that is too large."""

THUMBNAIL = re.compile(r"/api/jobs/\d+/files/\d+/thumbnail\?")
TRIES = 8
"""How many times in all the job page asks for a preview while the manager is busy."""

SHOWN = "(img) => img.complete && img.naturalWidth > 0 && getComputedStyle(img).display !== 'none'"
NO_BROKEN_IMAGE = (
    "() => [...document.querySelectorAll('img')].every((img) => !img.getAttribute('src')"
    " || getComputedStyle(img).display === 'none' || !img.complete || img.naturalWidth > 0)"
)
"""For `page.evaluate`: true unless an image the page shows failed to load (a browser's
broken-image icon)."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[LocalFarm]:
    # Scripted runners send no heartbeats: a long timeout keeps them online.
    with local_farm(tmp_path_factory.mktemp("busy-farm"), heartbeat_timeout=600.0) as farm:
        farm.start_manager("--max-upload-bytes", str(MAX_UPLOAD))
        yield farm


def busy_answer(route: Any, at_once: int, doing: str) -> None:
    """Answer an intercepted request as the manager does when every turn of heavy work
    stayed taken (api/errors.py's FileReadsBusy handler)."""
    route.fulfill(
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        content_type="application/json",
        body=json.dumps({"detail": str(FileReadsBusy(at_once, WAIT_SECONDS, doing))}),
    )


class BusyThumbnails:
    """Intercepts the page's thumbnail requests: the first one asked for (and, with
    `always`, every later request for that one) is answered busy; the rest go to the
    manager. Counts the requests for each URL."""

    def __init__(self, page: Any, *, always: bool = False, only: str = "") -> None:
        self.busy: str | None = None
        self.asked: dict[str, int] = {}
        self.always = always
        self.only = only
        page.route(THUMBNAIL, self._answer)

    def _answer(self, route: Any) -> None:
        url = route.request.url
        self.asked[url] = self.asked.get(url, 0) + 1
        if self.busy is None and self.only in url:
            self.busy = url
            busy_answer(route, THUMBNAILS_AT_ONCE, "making other thumbnails")
        elif url == self.busy and self.always:
            busy_answer(route, THUMBNAILS_AT_ONCE, "making other thumbnails")
        else:
            route.continue_()

    def times_busy_one_asked(self) -> int:
        assert self.busy is not None, "no thumbnail was asked for"
        return self.asked[self.busy]


def job_page(browser: Any, farm: LocalFarm, job_id: int, **busy: Any) -> tuple[Any, BusyThumbnails]:
    """The job's page on Playwright's clock, with its thumbnails intercepted."""
    page = sign_in(browser, farm)
    thumbnails = BusyThumbnails(page, **busy)
    page.clock.install()
    page.goto(f"{farm.url}/jobs/{job_id}")
    page.clock.run_for(2500)  # the load, and the live stream opening
    return page, thumbnails


def three_frame_job(api: httpx.Client, farm: LocalFarm, name: str) -> int:
    job_id = submit_stand_in(api, name=name, frame_start=1, frame_end=3, chunk_size=3)
    runner = register(api, farm, f"{name}-box")
    complete(api, runner, claim(api, runner))
    return job_id


def test_a_thumbnail_the_manager_was_too_busy_to_make_appears_after_its_retry_after(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = three_frame_job(api, farm, "busy-thumbs")
    page, thumbnails = job_page(browser, farm, job_id)
    expect()(page.locator("#job-status")).to_have_text("completed")

    # The one the manager was too busy for says so where its image goes; the others show.
    waiting = page.locator("#thumbs .thumb:has(img[data-state='busy'])")
    expect()(waiting).to_have_count(1)
    expect()(waiting.locator(".image-state")).to_have_text("Manager busy: trying again…")
    expect()(waiting.locator(".image-state")).to_have_attribute(
        "title", re.compile(rf"making other thumbnails.*Asked again in {RETRY_AFTER_SECONDS} s")
    )
    expect()(waiting.locator("img")).to_be_hidden()
    shown = page.locator("#thumbs .thumb:not(:has(img[data-state])) img")
    expect()(shown).to_have_count(2)
    for img in shown.all():
        assert img.evaluate(SHOWN)
    assert page.evaluate(NO_BROKEN_IMAGE), "a broken image on the job page"
    shoot(page, "busy-thumbnail-waiting")

    # Not asked again before its Retry-After has passed...
    page.clock.run_for((RETRY_AFTER_SECONDS - 1) * 1000)
    page.wait_for_timeout(300)  # a retry sent too early would have reached the route
    assert thumbnails.times_busy_one_asked() == 1
    expect()(waiting.locator(".image-state")).to_have_text("Manager busy: trying again…")

    # ...then asked again, and the manager, no longer busy, makes it: the image shows.
    frame = waiting.get_attribute("data-frame")
    page.clock.run_for(1000)
    image = page.locator(f'#thumbs .thumb[data-frame="{frame}"] img')
    expect()(image).to_be_visible()
    assert image.evaluate(SHOWN)
    expect()(page.locator(f'#thumbs .thumb[data-frame="{frame}"] .image-state')).to_have_count(0)
    assert thumbnails.times_busy_one_asked() == 2
    assert page.evaluate(NO_BROKEN_IMAGE), "a broken image on the job page"
    shoot(page, "busy-thumbnail-shown")
    page.context.close()


def test_a_thumbnail_asked_for_while_the_manager_stays_busy_ends_as_no_preview(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """The page does not ask for ever: after TRIES answers of busy it stops, and says there
    is no preview (the reason in its title), not a broken image."""
    job_id = three_frame_job(api, farm, "always-busy")
    page, thumbnails = job_page(browser, farm, job_id, always=True)
    waiting = page.locator("#thumbs .thumb:has(img[data-state])")
    expect()(waiting).to_have_count(1)
    note = waiting.locator(".image-state")
    for tries in range(2, TRIES + 1):
        expect()(note).to_have_attribute("title", re.compile(rf"\(try {tries} of {TRIES}\)"))
        page.clock.run_for(RETRY_AFTER_SECONDS * 1000)
    expect()(note).to_have_text("No preview")
    expect()(note).to_have_attribute(
        "title", re.compile(rf"the manager stayed busy: asked {TRIES} times")
    )
    assert thumbnails.times_busy_one_asked() == TRIES
    page.clock.run_for(10 * RETRY_AFTER_SECONDS * 1000)
    page.wait_for_timeout(300)  # one more try would have reached the route
    assert thumbnails.times_busy_one_asked() == TRIES
    assert page.evaluate(NO_BROKEN_IMAGE), "a broken image on the job page"
    shoot(page, "busy-thumbnail-given-up")
    page.context.close()


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (230, 120, 20)).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_the_full_view_of_a_frame_waits_for_a_busy_manager_too(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    """A TIFF frame's full view is the manager's large preview (browsers show no TIFF):
    the most costly to make, so the likeliest to be refused while the manager is busy."""
    job_id = submit_stand_in(api, name="tiff-busy", frame_start=1, frame_end=1)
    runner = register(api, farm, "tiff-busy-box")
    complete(api, runner, claim(api, runner), image=("tif", _tiff()))
    page, thumbnails = job_page(browser, farm, job_id, only="size=1600")
    expect()(page.locator("#job-status")).to_have_text("completed")
    expect()(page.locator("#latest img")).to_be_visible()
    page.locator("#thumbs button.thumb").first.click()
    big = page.locator("#lightbox-img")
    note = page.locator("#lightbox .image-state")
    expect()(note).to_have_text("Manager busy: trying again…")
    expect()(big).to_be_hidden()
    assert page.evaluate(NO_BROKEN_IMAGE), "a broken image in the full view"
    shoot(page, "busy-full-view-waiting")

    page.clock.run_for(RETRY_AFTER_SECONDS * 1000)
    expect()(big).to_be_visible()
    assert big.evaluate(SHOWN)
    expect()(note).to_have_count(0)
    assert thumbnails.times_busy_one_asked() == 2
    shoot(page, "busy-full-view-shown")
    page.context.close()


def project_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def submit_page(browser: Any, farm: LocalFarm) -> Any:
    page = sign_in(browser, farm)
    page.clock.install()
    page.goto(farm.url + "/submit")
    return page


def test_a_project_zip_refused_while_the_manager_is_busy_can_be_sent_again(
    browser: Any, farm: LocalFarm, api: httpx.Client, tmp_path: Path
) -> None:
    shot = project_zip(tmp_path / "shot.zip", {"shot.blend": FAKE_BLEND})
    page = submit_page(browser, farm)
    sent: list[str] = []

    def first_busy(route: Any) -> None:
        sent.append(route.request.url)
        if len(sent) == 1:
            busy_answer(route, UNPACKS_AT_ONCE, "unpacking other projects")
        else:
            route.continue_()

    page.route("**/api/projects", first_busy)
    page.set_input_files("#file", str(shot))

    text = page.locator("#upload-text")
    expect()(text).to_have_text(
        "The manager is busy and did not take the file (nothing is wrong with it). "
        f"Try again in {RETRY_AFTER_SECONDS} s."
    )
    expect()(text).not_to_have_class(re.compile(r"\berror\b"))
    again = page.locator("#upload-again")
    expect()(again).to_be_visible()
    expect()(again).to_be_disabled()  # until the Retry-After has passed
    expect()(page.locator("#submit-form")).to_be_hidden()
    shoot(page, "busy-upload-refused")

    page.clock.run_for(RETRY_AFTER_SECONDS * 1000)
    expect()(again).to_be_enabled()
    expect()(text).to_have_text(
        "The manager is busy and did not take the file (nothing is wrong with it). Try again now."
    )
    again.click()
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    expect()(text).to_have_text("Uploaded: 1 file.")
    expect()(page.locator("#name")).to_have_value("shot")
    expect()(again).to_be_hidden()
    assert len(sent) == 2, sent
    shoot(page, "busy-upload-sent-again")
    page.context.close()


def test_what_the_submit_form_says_for_each_refused_upload(
    browser: Any, farm: LocalFarm, api: httpx.Client, tmp_path: Path
) -> None:
    """Only a file at fault is told to be another; a full disk offers to try again; a
    signed-out page goes to the sign-in."""
    page = submit_page(browser, farm)
    text = page.locator("#upload-text")
    again = page.locator("#upload-again")

    # 400, the manager's own: the zip holds no .blend. Another file is wanted.
    page.set_input_files("#file", str(project_zip(tmp_path / "notes.zip", {"notes.txt": b"hi"})))
    expect()(text).to_have_text("Failed: the zip holds no .blend file. Choose another file.")
    expect()(text).to_have_class(re.compile(r"\berror\b"))
    expect()(again).to_be_hidden()
    shoot(page, "refused-upload-400")

    # 413, the manager's own: over its upload limit. What is too large, said once.
    large = project_zip(
        tmp_path / "large.zip", {"large.blend": FAKE_BLEND + bytes(range(256)) * 400}
    )
    assert large.stat().st_size > MAX_UPLOAD
    page.set_input_files("#file", str(large))
    expect()(text).to_have_text(
        f"Failed: the zip is too large: upload is larger than the limit of {MAX_UPLOAD} bytes."
    )
    expect()(again).to_be_hidden()

    # 507: the manager's disk is full. Not the file's fault: the same file may be sent
    # again once space is freed.
    full = (
        "the manager's storage is full; nothing was stored. "
        "Try again once an administrator has freed space."
    )

    def storage_full(route: Any) -> None:
        route.fulfill(
            status=507, content_type="application/json", body=json.dumps({"detail": full})
        )

    page.route("**/api/projects", storage_full)
    shot = project_zip(tmp_path / "shot.zip", {"shot.blend": FAKE_BLEND})
    page.set_input_files("#file", str(shot))
    expect()(text).to_have_text(f"Failed: {full}")
    expect()(again).to_be_visible()
    expect()(again).to_be_enabled()
    shoot(page, "refused-upload-507")
    page.unroute("**/api/projects")

    # 401, the manager's own: signed out meanwhile. To the sign-in, back here after it.
    page.context.clear_cookies()
    again.click()
    page.wait_for_url(re.compile(r"/login\?error=session-ended&next=%2Fsubmit$"))
    page.context.close()
