"""A job whose frames are TIFF (kept as the scene saves them since 64a59aa): browsers do
not show TIFF, so the job page's last frame and its full-frame view were broken images.
They show the manager's JPEG preview, as for OpenEXR. No Blender: a scripted runner."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import claim, complete, expect, manager_farm, register, shoot, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

LOADED = "(img) => img.complete && img.naturalWidth > 0"


farm = manager_farm(name="tiff-farm", heartbeat_timeout=600.0)


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (230, 120, 20)).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_a_tiff_jobs_last_frame_and_full_view_show_a_picture(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    job_id = submit_stand_in(api, name="tiff shot", frame_start=1, frame_end=2)
    runner = register(api, farm, "tiff-box")
    for _ in range(2):  # one frame a task
        complete(api, runner, claim(api, runner), image=("tif", _tiff()))

    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#job-status")).to_have_text("completed")
    latest = page.locator("figure img").first
    expect()(latest).to_be_visible()
    latest.evaluate("(img) => img.decode()")  # rejects for an image that cannot be shown
    assert latest.evaluate(LOADED), latest.get_attribute("src")

    page.locator("#thumbs button.thumb").first.click()
    big = page.locator("#lightbox-img")
    expect()(big).to_be_visible()
    big.evaluate("(img) => img.decode()")
    assert big.evaluate(LOADED), big.get_attribute("src")
    expect()(page.locator("#lightbox-note")).to_be_visible()
    shoot(page, "tiff-lightbox")
    page.context.close()
