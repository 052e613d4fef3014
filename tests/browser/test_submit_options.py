"""The submit page asks for what the API, the CLI and the add-on can: a video of the
frames (codec, container, frame rate, quality), the render device and a cap on the
workers at once. Each choice is checked where it lands: the job's settings in the API.

No render is needed: the .blend is a stand-in, and the manager's answer about its scene
is made up (the stand-in's blob is stored through the API first, so the job can be made).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from farmhand.shared.schemas import MAX_CRF, VIDEO_CONTAINERS, OutputFormat
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    expect,
    made_up_blend_info,
    phone_like,
    shoot,
    sign_in,
)
from tests.integration.conftest import FAKE_BLEND

pytestmark = [
    pytest.mark.browser,
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.xdist_group("browser"),
]

SCENE_FPS = 25
STAND_IN_SHA256 = hashlib.sha256(FAKE_BLEND).hexdigest()


@pytest.fixture
def stand_in(tmp_path: Path, api: httpx.Client) -> Path:
    """A stand-in .blend, already stored on the manager as the page's upload would be."""
    stored = api.put(f"/api/blobs/{STAND_IN_SHA256}", content=FAKE_BLEND)
    assert stored.status_code in (200, 201), stored.text
    blend = tmp_path / "shot-010.blend"
    blend.write_bytes(FAKE_BLEND)
    return blend


def read_as_a_scene(route: Any) -> None:
    """The manager's answer about the upload, as if Blender had read a 12-frame scene at
    `SCENE_FPS` (a stand-in does not open in Blender; its blob is stored already)."""
    info = made_up_blend_info(
        sha256=STAND_IN_SHA256,
        file_name="shot-010.blend",
        size=len(FAKE_BLEND),
        frame_end=12,
        fps=SCENE_FPS,
    )
    route.fulfill(status=200, content_type="application/json", body=info)


def open_form(page: Any, farm: LocalFarm, blend: Path) -> None:
    page.route("**/api/blend-info", read_as_a_scene)
    page.goto(farm.url + "/submit", wait_until="load")
    page.set_input_files("#file", str(blend))
    expect()(page.locator("#submit-form")).to_be_visible(timeout=60_000)
    expect()(page.locator("#frame_end")).to_have_value("12")


def offered(page: Any, selector: str) -> list[str]:
    return list(page.eval_on_selector_all(f"{selector} option", "os => os.map(o => o.value)"))


def submitted_settings(page: Any, api: httpx.Client) -> dict[str, Any]:
    page.wait_for_url("**/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    answer = api.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["settings"]  # type: ignore[no-any-return]


def test_submit_a_video_on_cpu_with_at_most_two_workers(
    browser: Any, farm: LocalFarm, api: httpx.Client, stand_in: Path
) -> None:
    page = sign_in(browser, farm)
    open_form(page, farm, stand_in)
    video = page.locator("#video-fields")
    expect()(video).to_be_hidden()
    expect()(page.locator("#device")).to_have_value("")  # any worker
    assert offered(page, "#device") == ["", "CPU", "CUDA", "OPTIX", "HIP", "ONEAPI", "METAL"]
    expect()(page.locator("#device option").nth(0)).to_have_text("Any worker")

    # By keyboard: from the last field of the grid to the box, Space opens the video's fields.
    page.focus("#required_tags")
    page.keyboard.press("Tab")
    expect()(page.locator("#make_video")).to_be_focused()
    page.keyboard.press("Space")
    expect()(page.locator("#make_video")).to_be_checked()
    expect()(video).to_be_visible()
    page.keyboard.press("Tab")
    expect()(page.locator("#video_codec")).to_be_focused()
    assert page.evaluate("() => document.activeElement.matches(':focus-visible')")

    # The defaults, and the scene's frame rate as the placeholder.
    expect()(page.locator("#video_codec")).to_have_value("h264")
    expect()(page.locator("#video_container")).to_have_value("mp4")
    expect()(page.locator("#video_fps")).to_have_attribute(
        "placeholder", f"the scene's ({SCENE_FPS})"
    )
    expect()(page.locator("#video_crf")).to_have_attribute("placeholder", "codec default")

    # The containers follow the codec; so does the quality's limit.
    for codec in ("vp9", "h264", "h265"):
        page.select_option("#video_codec", codec)
        assert sorted(offered(page, "#video_container")) == sorted(VIDEO_CONTAINERS[codec])
        expect()(page.locator("#video_crf")).to_have_attribute("max", str(MAX_CRF[codec]))
        expect()(page.locator("#crf-help")).to_contain_text(f"0 to {MAX_CRF[codec]}")
    page.select_option("#video_codec", "vp9")
    assert offered(page, "#video_container") == ["mp4", "mkv", "webm"]
    page.select_option("#video_container", "webm")
    page.select_option("#video_codec", "h265")  # no webm for h265: the first it goes in
    expect()(page.locator("#video_container")).to_have_value("mp4")
    assert "webm" not in offered(page, "#video_container")

    page.select_option("#video_container", "mkv")
    page.fill("#video_fps", "12")
    page.fill("#video_crf", "30")
    page.select_option("#device", "CPU")
    page.fill("#max_workers", "2")
    assert offered(page, "#output_format") == ["", *get_args(OutputFormat)]
    page.select_option("#output_format", "OPEN_EXR_MULTILAYER")
    page.fill("#name", "video on cpu")
    shoot(page, "03e-submit-video-desktop")
    page.click("#submit-button")
    settings = submitted_settings(page, api)
    assert settings["video"] == {"codec": "h265", "container": "mkv", "fps": 12.0, "crf": 30}
    assert settings["device"] == "CPU"
    assert settings["max_workers"] == 2
    assert settings["output_format"] == "OPEN_EXR_MULTILAYER"
    # The job's page says what it asked for.
    line = page.locator("#job-settings")
    expect()(line).to_have_text(
        "CPU workers only · at most 2 workers at once · OpenEXR multilayer · "
        "video: h265 in mkv, 12 fps, crf 30"
    )
    shoot(page, "04b-job-settings-line")
    assert (settings["frame_start"], settings["frame_end"]) == (1, 12)
    page.context.close()


def test_no_video_when_the_box_is_unticked(
    browser: Any, farm: LocalFarm, api: httpx.Client, stand_in: Path
) -> None:
    """Fields filled, then the box unticked: nothing of them is sent, and a value out of
    range in a hidden field does not block the form."""
    page = sign_in(browser, farm)
    open_form(page, farm, stand_in)
    page.check("#make_video")
    page.select_option("#video_codec", "vp9")
    page.fill("#video_fps", "12")
    page.fill("#video_crf", "99")  # beyond any codec's limit
    page.uncheck("#make_video")
    expect()(page.locator("#video-fields")).to_be_hidden()
    page.fill("#name", "frames only")
    page.click("#submit-button")
    settings = submitted_settings(page, api)
    assert settings["video"] is None
    assert settings["device"] is None, "Any worker sends no device"
    assert settings["max_workers"] is None, "an empty Max workers sends no cap"
    page.context.close()


def test_a_refused_video_says_why(
    browser: Any, farm: LocalFarm, api: httpx.Client, stand_in: Path
) -> None:
    """A pair the manager refuses (here forced into the list, as an outdated page might
    hold) is not dropped: the manager's reason shows and the page stays."""
    page = sign_in(browser, farm)
    open_form(page, farm, stand_in)
    page.check("#make_video")
    page.eval_on_selector(
        "#video_container", "s => { s.add(new Option('WebM', 'webm')); s.value = 'webm'; }"
    )
    page.click("#submit-button")
    expect()(page.locator(".toast.error")).to_contain_text(
        "a h264 video goes in mkv, mov, mp4, not webm"
    )
    expect()(page.locator("#submit-button")).to_be_enabled()
    assert page.url.endswith("/submit")
    assert api.get("/api/jobs").json() == [], "no job was made"
    page.context.close()


def test_the_video_fields_on_a_phone(browser: Any, farm: LocalFarm, stand_in: Path) -> None:
    page = sign_in(browser, farm)
    phone = phone_like(browser, page)
    page.context.close()
    open_form(phone, farm, stand_in)
    phone.check("#make_video")
    phone.select_option("#video_codec", "h265")
    phone.select_option("#video_container", "mkv")
    phone.fill("#video_fps", "12")
    phone.select_option("#device", "OPTIX")
    assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the form fits a phone's width"
    box = phone.locator("#video-fields").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    shoot(phone, "03f-submit-video-phone-dark")
    phone.context.close()
