"""The submit form pre-filled from a scene with a Frame Step and a format the farm does
not collect: what the form offers is what Blender would render, and it says what the
frames will be."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from farmhand.worker.blender.discovery import BlenderInstall
from tests.browser.conftest import expect, shoot, sign_in
from tests.browser.test_web_ui import drop_file
from tests.integration.test_unusual_scenes import tweaked_scene

pytestmark = [
    pytest.mark.browser,
    pytest.mark.blender,
    pytest.mark.xdist_group("browser"),
]


def test_the_form_takes_the_scenes_frame_step_and_says_a_targa_scene_renders_png(
    browser: Any, farm: LocalFarm, blender_module: BlenderInstall, tmp_path: Path
) -> None:
    """The step was always 1, so the job rendered the frames the scene skips (1-7: seven
    frames, not 1, 4 and 7); and a Targa scene's facts said TARGA while it got PNG."""
    blend = tweaked_scene(
        blender_module,
        tmp_path / "every-third.blend",
        [
            ("frame_end", 7),
            ("frame_step", 3),
            ("render.image_settings.media_type", "IMAGE"),
            ("render.image_settings.file_format", "TARGA"),
        ],
    )
    page = sign_in(browser, farm)
    page.goto(farm.url + "/submit")
    drop_file(page, "#dropzone", blend)
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    expect()(page.locator("#frame_start")).to_have_value("1")
    expect()(page.locator("#frame_end")).to_have_value("7")
    expect()(page.locator("#frame_step")).to_have_value("3")
    facts = page.inner_text("#scene-facts")
    assert "frames 1\u20137 every 3" in facts, facts
    assert "TARGA (rendered as PNG" in facts, facts
    shoot(page, "submit-form-step-and-format")

    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    job = httpx.get(
        f"{farm.url}/api/jobs/{job_id}?tasks=false",
        headers={"Authorization": f"Bearer {farm.admin_token}"},
    ).json()
    assert job["settings"]["frame_step"] == 3
    assert job["frames_total"] == 3  # 1, 4 and 7
    page.context.close()
