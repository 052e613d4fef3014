"""The job page offers the job's video once a worker with ffmpeg has made it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from farmhand.localfarm import LocalFarm
from farmhand.shared.schemas import JobSettings, VideoSettings
from tests.browser.conftest import shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian ffmpeg)"),
]


def test_the_job_page_links_the_video_when_there_is_one(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    from playwright.sync_api import expect

    with farm.client() as client:
        plain = client.submit_blend(
            scenes["quick"], JobSettings(name="no video", frame_start=1, frame_end=1)
        ).id
        with_video = client.submit_blend(
            scenes["quick"],
            JobSettings(name="with video", frame_start=1, frame_end=3, video=VideoSettings()),
        ).id
    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/jobs/{with_video}")
    expect(page.locator("#job-status")).to_have_text("completed", timeout=240_000)
    link = page.get_by_role("link", name="Download video")
    expect(link).to_be_visible()
    shoot(page, "20-job-with-video")
    # The video task holds no frames: its row says what it is, not "undefined (0/0)".
    expect(page.locator('#tasks tbody tr td[data-label="Frames"]').last).to_have_text("video")
    video = page.request.get(farm.url + str(link.get_attribute("href")))
    assert video.ok
    assert video.body()[4:8] == b"ftyp", "an mp4 comes back"

    page.goto(f"{farm.url}/jobs/{plain}")
    expect(page.locator("#job-status")).to_have_text("completed", timeout=240_000)
    expect(page.get_by_role("link", name="Download video")).to_have_count(0)
    page.context.close()
