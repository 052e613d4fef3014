"""The web UI in a real browser, on a real farm: what a person does, end to end.

Nothing here reloads a page to see a change: progress, thumbnails, runners and their
status arrive through the live event stream.
"""

from __future__ import annotations

import re
import shlex
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from farmhand.localfarm import Child, LocalFarm
from farmhand.shared.blendfile import read_saved_version
from farmhand.shared.schemas import JobSettings
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    SCREENSHOTS,
    expect,
    follow_nav,
    made_up_blend_info,
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

RENDER_TIMEOUT = 240_000  # ms; generous for a loaded CI machine, never a timing assertion
THUMBS_LOADED = (
    "() => [...document.querySelectorAll('#thumbs img')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def drop_file(page: Any, selector: str, path: Path) -> None:
    """Drag-and-drop a file from disk onto an element, as a person would."""
    data = list(path.read_bytes())
    transfer = page.evaluate_handle(
        """([bytes, name]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name));
            return transfer;
        }""",
        [data, path.name],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_submit_by_drag_and_drop_and_watch_it_render(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path], tmp_path: Path
) -> None:
    page = sign_in(browser, farm)
    shoot(page, "01-jobs-empty")
    follow_nav(page, farm, "Submit", "/submit")
    shoot(page, "02-submit-empty")

    drop_file(page, "#dropzone", scenes["quick"])
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    # Pre-filled from the file's own scene, read by Blender on the manager.
    expect()(page.locator("#frame_start")).to_have_value("1")
    expect()(page.locator("#frame_end")).to_have_value("6")
    expect()(page.locator("#samples")).to_have_value("2")
    expect()(page.locator("#name")).to_have_value("spinning-cube")
    expect()(page.locator("#upload-bar")).to_have_attribute("aria-valuenow", "100")
    assert "64\u00d748" in page.inner_text("#scene-facts")  # 64 by 48
    # Which Blender saved the file (its header) and which one read it here; the farm
    # has one that new, so no warning.
    with scenes["quick"].open("rb") as handle:
        saved = read_saved_version(handle)
    assert saved is not None
    facts = page.inner_text("#scene-facts")
    assert re.search(rf"saved with Blender {re.escape(saved)}, read with Blender \d", facts), facts
    expect()(page.locator("#blend-notice")).to_be_hidden()
    shoot(page, "03-submit-filled")

    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    shoot(page, "04-job-started")

    # The progress bar reaches 100 % and six thumbnails appear, without a reload.
    expect()(page.locator("#job-progress")).to_have_attribute(
        "aria-valuenow", "100", timeout=RENDER_TIMEOUT
    )
    expect()(page.locator("#job-status")).to_have_text("completed", timeout=30_000)
    thumbs = page.locator("#thumbs button.thumb img")
    expect()(thumbs).to_have_count(6, timeout=30_000)
    page.wait_for_function(THUMBS_LOADED)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"
    shoot(page, "05-job-completed")

    page.locator("#thumbs button.thumb").first.click()
    dialog = page.locator("#lightbox")
    expect()(dialog).to_be_visible()
    expect()(page.locator("#lightbox-title")).to_have_text("Frame 1")
    page.wait_for_function(
        "() => { const i = document.querySelector('#lightbox-img');"
        " return i.complete && i.naturalWidth === 64; }"
    )
    page.keyboard.press("ArrowRight")
    expect()(page.locator("#lightbox-title")).to_have_text("Frame 2")
    shoot(page, "06-frame-lightbox")
    page.keyboard.press("Escape")
    expect()(dialog).to_be_hidden()

    page.click("#tasks [data-log]")
    expect()(page.locator("#tasks pre.log")).to_contain_text("frame", ignore_case=True)

    with page.expect_download() as info:
        page.click("#download-zip")
    target = tmp_path / "frames.zip"
    info.value.save_as(target)
    with zipfile.ZipFile(target) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
    assert len(names) == 6, names

    follow_nav(page, farm, "Jobs", "/")
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect()(row).to_contain_text("completed")
    expect()(row).to_contain_text("6/6")
    shoot(page, "07-jobs-list")

    # The same pages on a phone, in dark mode.
    mobile = phone_like(browser, page)
    mobile.goto(f"{farm.url}/jobs/{job_id}")
    expect()(mobile.locator("#thumbs button.thumb img")).to_have_count(6)
    mobile.wait_for_function(THUMBS_LOADED)
    shoot(mobile, "08-job-phone-dark")
    mobile.goto(farm.url + "/")
    expect()(mobile.locator(f'#jobs tr[data-job-id="{job_id}"]')).to_be_visible()
    shoot(mobile, "09-jobs-phone-dark")
    mobile.context.close()
    page.context.close()


def test_submit_frames_in_tiles_and_see_each_tile(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    """Frames 2-3 in 2x1 tiles: the range and step stay, frames per task is greyed out
    (a task is one tile of one frame), and each frame is its tiles then its merge."""
    page = sign_in(browser, farm)
    follow_nav(page, farm, "Submit", "/submit")
    drop_file(page, "#dropzone", scenes["quick"])
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    page.fill("#name", "poster")
    page.fill("#frame_start", "2")
    page.fill("#frame_end", "3")
    page.fill("#tile_columns", "2")
    page.fill("#tile_rows", "1")
    expect()(page.locator("#chunk_size")).to_be_disabled()
    for kept in ("#frame_end", "#frame_step"):  # each frame of the range in tiles
        expect()(page.locator(kept)).to_be_enabled()
    expect()(page.locator("#tiles-help")).to_contain_text("each frame of the range")
    shoot(page, "03d-submit-tiles")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    expect()(page.locator("#job-status")).to_have_text("completed", timeout=RENDER_TIMEOUT)
    frames = page.locator('#tasks tbody td[data-label="Frames"]')
    expect()(frames).to_have_text(
        ["2 tile 1 of 2", "2 tile 2 of 2", "2 merge", "3 tile 1 of 2", "3 tile 2 of 2", "3 merge"]
    )
    expect()(page.locator("#thumbs button.thumb img")).to_have_count(2, timeout=30_000)
    expect()(page.locator("#stat-frames")).to_have_text("2/2")
    shoot(page, "05b-job-tiles-completed")
    with farm.client() as client:
        settings = client.get_job(job_id).settings
    assert (settings.frame_start, settings.frame_end, settings.frame_step) == (2, 3, 1)
    assert settings.tiles is not None and (settings.tiles.columns, settings.tiles.rows) == (2, 1)
    page.context.close()


def test_submit_a_zip_of_a_packed_project(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path], tmp_path: Path
) -> None:
    project = tmp_path / "packed-shot.zip"
    blend = scenes["quick"].read_bytes()
    with zipfile.ZipFile(project, "w") as archive:
        archive.writestr("shot/spinning-cube.blend", blend)
        archive.writestr("shot/library/props.blend", blend)
        archive.writestr("shot/textures/readme.txt", "a texture would be here")
    page = sign_in(browser, farm)
    page.goto(farm.url + "/submit")
    drop_file(page, "#dropzone", project)
    expect()(page.locator("#submit-form")).to_be_visible(timeout=120_000)
    expect()(page.locator("#upload-text")).to_contain_text("3 files")
    # Two .blend files: the shallowest is chosen, the other can be picked instead.
    expect()(page.locator("#main-file-field")).to_be_visible()
    expect()(page.locator("#main_file")).to_have_value("shot/spinning-cube.blend")
    expect()(page.locator("#frame_end")).to_have_value("6")
    page.fill("#frame_end", "2")
    shoot(page, "03b-submit-zip")
    # On a phone the form is one column with the .blend choice (which spans two columns
    # on wider screens, and made two narrow ones here): nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate(NO_SIDEWAYS_SCROLL), "the form fits a phone's width"
    widths = page.evaluate(
        "() => ['#main_file', '#name'].map(s => document.querySelector(s).offsetWidth)"
    )
    assert widths[0] == widths[1], f"one column: the job name as wide as the .blend: {widths}"
    shoot(page, "03b-submit-zip-phone")
    page.set_viewport_size({"width": 1280, "height": 860})
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    expect()(page.locator("#job-status")).to_have_text("completed", timeout=RENDER_TIMEOUT)
    expect()(page.locator("#thumbs button.thumb img")).to_have_count(2, timeout=30_000)
    with farm.client() as client:
        inputs = {f.path for f in client.list_files(job_id) if f.kind == "input"}
    assert inputs == {
        "shot/spinning-cube.blend",
        "shot/library/props.blend",
        "shot/textures/readme.txt",
    }, "every file of the project travels with the job"
    page.context.close()


def test_submit_warns_of_a_file_saved_by_a_newer_blender(
    browser: Any, farm: LocalFarm, tmp_path: Path
) -> None:
    """The page's part: the manager's answer is made up (no Blender newer than the
    farm's exists here), the warning and the two versions are the page's own."""

    def answer(saved: str, farm_blenders: list[str]) -> str:
        return made_up_blend_info(
            file_name="future.blend",
            blender_version="5.0.1",
            saved_with=saved,
            farm_blenders=farm_blenders,
        )

    def fulfil_with(body: str) -> Any:
        return lambda route: route.fulfill(status=200, content_type="application/json", body=body)

    page = sign_in(browser, farm)
    follow_nav(page, farm, "Submit", "/submit")
    notice, facts = page.locator("#blend-notice"), page.locator("#scene-facts")
    for saved, farm_blenders, warned in (
        ("6.0", ["3.4.1", "5.0.1"], True),  # newer than the manager's and the workers'
        ("5.0", ["3.4.1", "5.0.1"], False),
        ("5.1", [], True),  # not looked up: newer than the Blender that read it
        ("4.2", [], False),
    ):
        page.route("**/api/blend-info", fulfil_with(answer(saved, farm_blenders)))
        # A new file each time: choosing the same one again is no change.
        blend = tmp_path / f"saved-with-{saved}.blend"
        blend.write_bytes(b"BLENDER17-01v0600" + bytes(64))
        page.set_input_files("#file", str(blend))
        expect()(page.locator("#submit-form")).to_be_visible()
        expect()(facts).to_contain_text(f"saved with Blender {saved}, read with Blender 5.0.1")
        if warned:
            expect()(notice).to_be_visible()
            expect()(notice).to_contain_text(
                f"saved with Blender {saved}, newer than any Blender on this farm "
                "(the newest is 5.0.1)"
            )
            if saved == "6.0":
                shoot(page, "03c-submit-newer-blender")
        else:
            expect()(notice).to_be_hidden()
        page.unroute("**/api/blend-info")
    page.context.close()


def test_cancel_a_running_job_and_the_runner_goes_idle(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    with farm.client() as client:
        job_id = client.submit_blend(
            scenes["slow"],
            JobSettings(name="long shot", frame_start=1, frame_end=40, chunk_size=20),
        ).id
    page = sign_in(browser, farm)
    page.goto(f"{farm.url}/jobs/{job_id}")
    expect()(page.locator("#job-status")).to_have_text("active", timeout=RENDER_TIMEOUT)
    expect()(page.locator("#tasks tbody")).to_contain_text("w1")
    shoot(page, "10-job-running")

    # The runners page names what w1 renders from the runner list alone: fetching the
    # job would pull every task of a big job on each refresh.
    fetched: list[str] = []
    page.on(
        "request",
        lambda request: (
            fetched.append(request.url)
            if request.headers.get("referer", "").endswith("/runners")
            else None
        ),
    )
    follow_nav(page, farm, "Runners", "/runners")
    busy = page.locator('#runners tr[data-runner-name="w1"] .current')
    expect()(busy).to_contain_text("long shot")
    expect()(busy).to_contain_text(re.compile(r"task [01] · \d+/20 frames"))
    shoot(page, "10b-runners-busy")
    assert any(url.endswith("/api/admin/runners") for url in fetched), fetched
    assert not [url for url in fetched if f"/api/jobs/{job_id}" in url], fetched
    page.goto(f"{farm.url}/jobs/{job_id}")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    expect()(page.locator("#job-status")).to_have_text("canceled")
    expect()(page.locator("#cancel-button")).to_be_hidden()

    follow_nav(page, farm, "Runners", "/runners")
    row = page.locator('#runners tr[data-runner-name="w1"]')
    expect()(row.locator(".status")).to_have_text("idle", timeout=60_000)
    expect()(row.locator(".current")).to_have_text("idle")
    shoot(page, "11-runners-idle")

    # Runner control: disable, then enable again; the row follows without a reload.
    row.get_by_role("button", name="Disable", exact=True).click()
    expect()(row.locator(".status")).to_have_text("disabled")
    # A disabled runner is offered Enable alone: nothing that would change nothing.
    expect()(row.get_by_role("button", name="Disable", exact=True)).to_have_count(0)
    expect()(row.get_by_role("button", name="Finish task, then disable")).to_have_count(0)
    shoot(page, "11b-runners-disabled")
    row.get_by_role("button", name="Enable").click()
    expect()(row.locator(".status")).to_have_text("idle")
    page.context.close()


def test_a_worker_started_with_a_new_token_appears_live(
    browser: Any, farm: LocalFarm, tmp_path: Path
) -> None:
    page = sign_in(browser, farm)
    follow_nav(page, farm, "Runners", "/runners")
    page.select_option("#token-uses", "1")  # single use: spent once the worker joins
    page.click("#new-runner-token")
    command = page.locator("#runner-token-command")
    expect()(command).to_contain_text("farmhand worker --manager")
    shoot(page, "12-runners-new-token")
    words = shlex.split(command.inner_text())
    assert words[:4] == ["farmhand", "worker", "--manager", farm.url]
    # Run exactly the command the page shows (as this venv's farmhand), plus a name.
    args = [sys.executable, "-m", "farmhand", *words[1:]]
    args += ["--name", "fresh-box", "--work-dir", str(tmp_path / "w"), "--blender", "bpy"]
    args += ["--heartbeat-interval", "1"]
    worker = Child("fresh-box", args, farm.log_dir / "fresh-box.log", farm.env()).start()
    farm.children.append(worker)

    row = page.locator('#runners tr[data-runner-name="fresh-box"]')
    expect()(row).to_be_visible(timeout=120_000)
    expect()(row.locator(".status")).to_have_text("idle")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"
    token_row = page.locator("#runner-tokens tbody tr").first
    expect()(token_row).to_contain_text("spent")
    expect()(token_row.locator("td").nth(3)).to_have_text("1 / 1")  # its use shows up live too
    shoot(page, "13-runners-new-worker")
    worker.stop()
    page.context.close()


def test_a_user_cannot_see_someone_elses_job(
    browser: Any, farm: LocalFarm, scenes: dict[str, Path]
) -> None:
    with farm.client() as client:
        admins_job = client.submit_blend(
            scenes["quick"], JobSettings(name="admin secret", frame_start=1, frame_end=1)
        ).id
    admin = sign_in(browser, farm)
    follow_nav(admin, farm, "Account", "/account")
    admin.fill("#user-name", "bob")
    admin.click("#new-user-form button[type=submit]")
    expect()(admin.locator("#user-result")).to_be_visible()
    bobs_token = admin.inner_text("#user-token").strip()
    expect()(admin.locator("#users tbody")).to_contain_text("bob")
    admin.fill("#token-name", "laptop")
    admin.click("#new-token-form button[type=submit]")
    expect()(admin.locator("#token-secret")).to_contain_text("fh_api_")
    shoot(admin, "14-account-admin")
    admin.context.close()

    bob = sign_in(browser, farm, bobs_token)
    expect()(bob.locator("#jobs tbody")).to_contain_text("No jobs yet")
    assert "admin secret" not in bob.content()
    expect()(bob.locator("nav >> text=Runners")).to_have_count(0)
    shoot(bob, "15-jobs-as-bob")
    answer = bob.goto(f"{farm.url}/jobs/{admins_job}")
    assert answer is not None and answer.status == 404
    expect()(bob.locator("h1")).to_have_text("Job not found")
    assert "admin secret" not in bob.content()
    status = bob.evaluate(f"fetch('/api/jobs/{admins_job}').then(r => r.status)")
    assert status == 404
    forbidden = bob.goto(farm.url + "/runners")
    assert forbidden is not None and forbidden.status == 403
    shoot(bob, "16-runners-forbidden")
    bob.context.close()


def test_login_page_and_a_wrong_token(browser: Any, farm: LocalFarm) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(farm.url + "/login")
    shoot(page, "00-login")
    page.fill("#token", "fh_api_wrong")
    page.press("#token", "Enter")
    expect()(page.locator("[role=alert]")).to_contain_text("not valid")
    shoot(page, "00-login-error")
    context.close()
    assert SCREENSHOTS.is_dir()
