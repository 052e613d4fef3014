"""The admins' Storage page in a real browser: what the farm's disk and blob store hold,
who uses how much of the quota, and garbage collection on demand.

The farm keeps unused blobs for no time at all (retention and grace 0, no periodic
pass), so a blob no job names is garbage the moment the admin asks; a user quota of
four times the scene's size makes the other user's share a round 25 %.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.client.client import FarmhandClient
from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_scene
from farmhand.shared.schemas import JobSettings
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    expect,
    follow_nav,
    phone_like,
    shoot,
    sign_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.xdist_group("browser"),
]

ORPHAN_BYTES = 300 * 1024  # shown as "300.0 KiB"
SETTLED = "() => document.getAnimations().length === 0"  # bars have slid to their width
NONE = "\u2013"  # the en dash of a figure that is not there (no unfinished uploads)


def human(size: int) -> str:
    """What a person reads on the page for `size` bytes (binary units, one decimal)."""
    value, units = float(size), ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


@dataclass
class StorageFarm(LocalFarm):
    """A farm whose manager collects unused blobs at once, and only when asked."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            FARMHAND_BLOB_RETENTION_DAYS="0",
            FARMHAND_BLOB_GRACE_SECONDS="0",
            FARMHAND_GC_INTERVAL="0",
        )
        return env


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("storage-scenes")
    return make_scene(root / "storage-cube.blend", "animated", frames="1-2", samples=2)


@pytest.fixture(scope="module")
def farm(
    tmp_path_factory: pytest.TempPathFactory, browser: Any, scene: Path
) -> Iterator[StorageFarm]:
    farm = StorageFarm(tmp_path_factory.mktemp("storage-farm"))
    try:
        farm.start_manager("--user-quota-bytes", str(4 * scene.stat().st_size))
        yield farm
    except BaseException:
        print(farm.logs())
        raise
    finally:
        farm.stop()


def count_loads(page: Any) -> list[str]:
    """The usage answers the page gets from now on (a list that grows)."""
    loads: list[str] = []
    page.on("response", lambda r: loads.append(r.url) if "/api/admin/usage" in r.url else None)
    return loads


def wait_settled(page: Any, loads: list[str]) -> None:
    """The page loads the figures, then again once the live stream is open: after both,
    any later load is the doing of an event or the timer."""
    expect()(page.locator("#live")).to_have_attribute("data-state", "live")
    deadline = time.monotonic() + 30  # a bounded wait, generous for a loaded machine
    while len(loads) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(loads) == 2, loads


def make_user(farm: LocalFarm, name: str) -> str:
    answer = httpx.post(
        farm.url + "/api/admin/users",
        headers={"Authorization": f"Bearer {farm.admin_token}"},
        json={"name": name, "role": "user"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_storage_page_shows_usage_and_collects_garbage(
    browser: Any, farm: StorageFarm, scene: Path, tmp_path: Path
) -> None:
    blend = scene.stat().st_size
    bob = make_user(farm, "bob")
    with farm.client() as admin:
        admins_job = admin.submit_blend(scene, JobSettings(name="admin shot", frame_end=2)).id
        orphan = tmp_path / "abandoned-upload.bin"
        orphan.write_bytes(os.urandom(ORPHAN_BYTES))
        admin.upload_blob(orphan, hashlib.sha256(orphan.read_bytes()).hexdigest())
    with FarmhandClient(farm.url, bob) as client:
        client.submit_blend(scene, JobSettings(name="bob's shot", frame_end=2))

    page = sign_in(browser, farm)
    loads = count_loads(page)
    follow_nav(page, farm, "Storage", "/storage")
    expect()(page.locator('nav a[aria-current="page"]')).to_have_text("Storage")
    users = page.locator("#storage-users")
    admin_row = users.locator('tr[data-user-name="admin"]')
    bob_row = users.locator('tr[data-user-name="bob"]')
    # The admin's job uses the scene, and the admin's abandoned upload is theirs until
    # garbage collection: their bytes, in human units; one job.
    mine = blend + ORPHAN_BYTES
    expect()(admin_row.locator("td[data-bytes]")).to_have_attribute("data-bytes", str(mine))
    expect()(admin_row).to_contain_text(human(mine))
    expect()(admin_row.locator("td").nth(1)).to_have_text("1")
    expect()(admin_row.locator("td.quota")).to_have_text("no quota (admin)")
    # Bob's share of his quota (four times the scene) is a quarter, with a bar.
    expect()(bob_row.locator(".pct")).to_have_text("25 %")
    expect()(bob_row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "25")
    expect()(page.locator("#quota-note")).to_contain_text(human(4 * blend))
    # The blob store: the scene once (shared by both jobs) and the abandoned upload.
    expect()(page.locator("#blob-count")).to_have_text("2")
    expect()(page.locator("#blob-total")).to_have_text(human(blend + ORPHAN_BYTES))
    expect()(page.locator("#blob-referenced")).to_have_text(human(blend))
    expect()(page.locator("#blob-unreferenced")).to_have_text("300.0 KiB")
    expect()(page.locator("#retention")).to_contain_text("0 days")
    disk = page.locator("#disk-bar")
    assert 0 < int(disk.get_attribute("aria-valuenow") or "0") <= 100
    assert page.inner_text("#disk-total").endswith("iB")
    expect()(page.locator("#disk-note")).to_contain_text(f"takes {human(blend + ORPHAN_BYTES)}")
    page.wait_for_function(SETTLED)
    shoot(page, "storage-01-desktop")

    # Deleting a job shows at once (the live event stream, not the 30 s timer): the
    # admin now uses only their abandoned upload, bob still shares the scene's blob.
    wait_settled(page, loads)
    deleted = httpx.delete(
        f"{farm.url}/api/jobs/{admins_job}?purge=true",
        headers={"Authorization": f"Bearer {farm.admin_token}"},
    )
    assert deleted.status_code == 204, deleted.text
    expect()(admin_row.locator("td[data-bytes]")).to_have_attribute(
        "data-bytes", str(ORPHAN_BYTES), timeout=10_000
    )
    expect()(admin_row).to_contain_text("300.0 KiB")
    expect()(bob_row.locator(".pct")).to_have_text("25 %")

    # Saying no to the confirmation collects nothing.
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    button = page.locator("#gc-button")
    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    page.wait_for_timeout(500)
    assert not [url for url in posts if url.endswith("/api/admin/gc")]
    expect()(page.locator("#blob-unreferenced")).to_have_text("300.0 KiB")

    # With the keyboard, and the answer held back: the button says it is busy.
    held: list[Any] = []
    page.route("**/api/admin/gc", lambda route: held.append(route))
    button.focus()
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Enter")
    expect()(button).to_have_text("Collecting…")
    expect()(button).to_be_disabled()
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the page asked the manager to collect garbage"
    held[0].continue_()
    page.unroute("**/api/admin/gc")

    toast = page.locator("#toasts .toast")
    expect()(toast).to_contain_text("Freed 300.0 KiB: 1 file removed")
    expect()(page.locator("#gc-result")).to_contain_text("Freed 300.0 KiB")
    expect()(button).to_have_text("Collect garbage now")
    expect()(button).to_be_enabled()
    assert page.evaluate("document.activeElement.id") == "gc-button", "focus comes back"
    # The figures reload: the abandoned upload is gone, the scene stays for bob.
    expect()(page.locator("#blob-unreferenced")).to_have_text("0 B")
    expect()(admin_row.locator("td[data-bytes]")).to_have_attribute("data-bytes", "0")
    expect()(page.locator("#blob-count")).to_have_text("1")
    expect()(page.locator("#blob-total")).to_have_text(human(blend))
    page.wait_for_function(SETTLED)
    shoot(page, "storage-02-after-gc")

    # A phone, in dark mode: everything fits without sideways scrolling.
    mobile = phone_like(browser, page)
    mobile.goto(farm.url + "/storage")
    expect()(mobile.locator('#storage-users tr[data-user-name="bob"] .pct')).to_have_text("25 %")
    expect()(mobile.locator("#gc-button")).to_be_visible()
    mobile.wait_for_function(SETTLED)
    shoot(mobile, "storage-03-phone-dark")
    assert mobile.evaluate(NO_SIDEWAYS_SCROLL), "the page scrolls sideways on a phone"
    tops = mobile.evaluate("[...document.querySelectorAll('nav.main a')].map(a => a.offsetTop)")
    assert len(tops) == 5 and len(set(tops)) == 1, "the admin's five links fit on one line"
    mobile.context.close()
    page.context.close()


def test_people_do_not_get_the_storage_page(browser: Any, farm: StorageFarm) -> None:
    page = sign_in(browser, farm, make_user(farm, "carol"))
    expect()(page.locator("nav.main")).not_to_contain_text("Storage")
    answer = page.goto(farm.url + "/storage")
    assert answer is not None and answer.status == 403
    expect()(page.locator("h1")).to_have_text("Admins only")
    page.context.close()


def test_the_figures_refresh_on_their_own(browser: Any, farm: StorageFarm, tmp_path: Path) -> None:
    """An upload sends no live event: the page's 30 s timer brings it in, no reload."""
    page = sign_in(browser, farm)
    loads = count_loads(page)
    page.clock.install()
    page.goto(farm.url + "/storage")
    figure = page.locator("#blob-unreferenced")
    expect()(figure).not_to_have_text("\u2013")  # the placeholder before the first load
    page.clock.run_for(2500)  # the load when the live stream opens
    wait_settled(page, loads)
    before = figure.inner_text()
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

    orphan = tmp_path / "another-abandoned-upload.bin"
    orphan.write_bytes(os.urandom(123 * 1024))
    with farm.client() as admin:
        admin.upload_blob(orphan, hashlib.sha256(orphan.read_bytes()).hexdigest())
        unreferenced = admin.storage_usage().unreferenced_bytes
    page.wait_for_timeout(1000)
    expect()(figure).to_have_text(before)  # nothing tells the page before its timer

    assert len(loads) == 2
    page.clock.fast_forward("00:31")
    expect()(figure).to_have_text(human(unreferenced))
    assert len(loads) == 3
    assert page.evaluate("window.sameDocument === true"), "no reload"
    page.context.close()


def test_unfinished_uploads_show_per_user(browser: Any, farm: StorageFarm, scene: Path) -> None:
    """Bytes held by an upload that never finished are on the page: in the blob store's
    figures, in the disk note and in their owner's row, whose share of the quota counts
    the size the upload announced (as the quota does)."""
    dave = make_user(farm, "dave")
    announced, received = 200 * 1024, 100 * 1024  # within dave's quota (about 350 KiB)
    data = os.urandom(announced)
    with FarmhandClient(farm.url, dave) as client:
        upload = client.start_upload(hashlib.sha256(data).hexdigest(), announced)
    sent = httpx.patch(
        f"{farm.url}/api/uploads/{upload.id}",
        headers={
            "Authorization": f"Bearer {dave}",
            "Upload-Offset": "0",
            "Content-Type": "application/octet-stream",
        },
        content=data[:received],
    )
    assert sent.status_code == 200, sent.text

    page = sign_in(browser, farm)
    page.goto(farm.url + "/storage")
    row = page.locator('#storage-users tr[data-user-name="dave"]')
    uploads = row.locator("td.uploads")
    expect()(uploads).to_have_text("100.0 KiB in 1 upload")
    expect()(uploads).to_have_attribute("data-upload-bytes", str(received))
    expect()(row.locator("td[data-bytes]")).to_have_text("0 B")  # no jobs
    share = round(100 * announced / (4 * scene.stat().st_size))
    expect()(row.locator(".pct")).to_have_text(f"{share} %")
    expect()(page.locator("#open-uploads")).to_have_text("100.0 KiB")
    expect()(page.locator("#disk-note")).to_contain_text("unfinished uploads 100.0 KiB more")
    admin_row = page.locator('#storage-users tr[data-user-name="admin"]')
    expect()(admin_row.locator("td.uploads")).to_have_text(NONE)
    page.wait_for_function(SETTLED)
    shoot(page, "storage-04-unfinished-upload")

    aborted = httpx.delete(
        f"{farm.url}/api/uploads/{upload.id}", headers={"Authorization": f"Bearer {dave}"}
    )
    assert aborted.status_code == 204, aborted.text
    page.reload()
    expect()(uploads).to_have_text(NONE)
    expect()(page.locator("#open-uploads")).to_have_text("0 B")
    expect()(row.locator(".pct")).to_have_text("0 %")
    page.context.close()
