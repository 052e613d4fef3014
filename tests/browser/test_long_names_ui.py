"""Long names people choose (runners, jobs, the worker of a task) wrap where a person
would break them, at a 1280 px laptop and on a 390 px phone, and never widen a table.

On the runners page a laptop squeezed the name column to a few letters (its names could
break anywhere, so the table gave it almost no width): `render-node-studio-b-workstation-
0042` read `workstati` / `on-0042` and `gpu.box.studio.lan` read `gpu.box.s` / `tudio.lan`.
Names now break after their hyphens, dots and underscores (app.js `breakable`, one CSS
class `.breakable`), and a name without any (60 letters) in pieces of a dozen letters,
on the runners, jobs and job pages alike.

No Blender here: scripted runners register and claim tasks of a stand-in job.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import (
    NO_SIDEWAYS_SCROLL,
    claim,
    expect,
    manager_farm,
    phone_like,
    register,
    shoot,
    sign_in,
)
from tests.browser.test_runner_controls import FITS_ITS_FRAME, WORKSTATION
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

# Scripted runners send no heartbeats: a long timeout keeps them online.
farm = manager_farm(name="long-names-farm", heartbeat_timeout=600.0)

HYPHENATED = "render-node-studio-b-workstation-0042"
DOTTED = "gpu.box.studio.lan"
UNBROKEN = "Renderstationnumber" * 3 + "abc"  # 60 characters, nothing to break at
NAMES = [HYPHENATED, DOTTED, UNBROKEN]
JOB_NAME = "sequence-0042_render-node-studio-b-workstation-0042-lighting-pass"
SEPARATORS = "-._/:@ "

LINES = """(element) => {
    const lines = [];
    let top = null;
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.data.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const rect = range.getClientRects()[0];
            if (!rect) continue;
            if (top === null || rect.top > top + 2) { lines.push(""); top = rect.top; }
            lines[lines.length - 1] += node.data[i];
        }
    }
    return lines;
}"""
"""For `evaluate` on an element: its text as the browser laid it out, line by line."""

INSIDE_ITS_CELL = """(element) => {
    const cell = element.closest("td");
    const box = element.getBoundingClientRect(), frame = cell.getBoundingClientRect();
    return cell.scrollWidth <= cell.clientWidth && box.right <= frame.right + 0.5;
}"""


def assert_breaks_sensibly(element: Any, name: str, where: str) -> None:
    """The name is shown whole, inside its cell, broken only after a separator; one with
    none is broken into pieces of a dozen letters or so, not a handful."""
    lines = [line.strip() for line in element.evaluate(LINES)]
    assert "".join(lines) == name.replace(" ", ""), f"{where}: {name} is shown whole: {lines}"
    assert element.evaluate(INSIDE_ITS_CELL), f"{where}: {name} sticks out of its cell"
    if any(separator in name for separator in SEPARATORS):
        mid_word = [line for line in lines[:-1] if line[-1] not in SEPARATORS]
        assert not mid_word, f"{where}: {name} breaks mid-word: {lines}"
    else:
        assert len(lines) <= 6, f"{where}: {name} breaks every few letters: {lines}"


def test_long_runner_job_and_worker_names_wrap_at_their_separators(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    runners = {name: register(api, farm, name, **WORKSTATION) for name in NAMES}
    for number in range(8):  # many rows, as a farm has
        register(api, farm, f"{HYPHENATED}-{number}", **WORKSTATION)
    job_id = submit_stand_in(api, name=JOB_NAME, frame_start=1, frame_end=6, chunk_size=1)
    for name in NAMES:  # each is the worker of one of the job's tasks
        claim(api, runners[name])

    page = sign_in(browser, farm)
    phone = phone_like(browser, page)
    for screen, width in ((page, 1280), (phone, 390)):
        screen.goto(f"{farm.url}/runners")
        for name in NAMES:
            row = screen.locator(f'#runners tr[data-runner-name="{name}"]')
            expect()(row.locator("td.current a")).to_have_text(JOB_NAME)
            assert_breaks_sensibly(row.locator("td.name strong"), name, f"runners at {width} px")
            assert_breaks_sensibly(row.locator("td.current a"), JOB_NAME, f"runners at {width} px")
        shoot(screen, f"long-names-runners-{width}")
        if width == 1280:
            assert screen.evaluate(FITS_ITS_FRAME, "#runners"), "the runners scroll in their frame"
        else:
            assert screen.evaluate(NO_SIDEWAYS_SCROLL), "the runners page scrolls sideways"

        screen.goto(f"{farm.url}/")
        link = screen.locator(f'#jobs tr[data-job-id="{job_id}"] a')
        expect()(link).to_have_text(JOB_NAME)
        assert_breaks_sensibly(link, JOB_NAME, f"jobs at {width} px")
        shoot(screen, f"long-names-jobs-{width}")
        assert screen.evaluate(FITS_ITS_FRAME, "#jobs"), "the jobs scroll in their frame"

        screen.goto(f"{farm.url}/jobs/{job_id}")
        for name in NAMES:
            worker = screen.locator("#tasks td.worker", has_text=name)
            expect()(worker).to_have_count(1)
            assert_breaks_sensibly(worker, name, f"tasks at {width} px")
        shoot(screen, f"long-names-tasks-{width}")
        assert screen.evaluate(FITS_ITS_FRAME, "#tasks"), "the tasks scroll in their frame"
    phone.context.close()
    page.context.close()
