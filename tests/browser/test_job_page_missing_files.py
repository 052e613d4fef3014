"""The job page says what a job was submitted without (`farmhand submit --allow-missing`):
its frames show those files magenta, and a completed job would not otherwise admit it."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import expect, manager_farm, sign_in
from tests.integration.conftest import FAKE_BLEND

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


farm = manager_farm(name="missing-farm")


def submit(api: httpx.Client, **fields: Any) -> int:
    """A JSON job of an uploaded stand-in .blend, as `farmhand submit` sends one."""
    sha = hashlib.sha256(FAKE_BLEND).hexdigest()
    assert api.put(f"/api/blobs/{sha}", content=FAKE_BLEND).status_code in (200, 201)
    body = {"main_file": "shot.blend", "files": {"shot.blend": sha}, **fields}
    answer = api.post("/api/jobs", json=body)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def test_the_job_page_names_the_missing_files(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    names = [f"seq/f.{n:04d}.png" for n in range(1, 8)]
    without = submit(api, missing_files=["<b>udim/tex.1002.png</b>", *names])
    complete = submit(api)
    page = sign_in(browser, farm)

    page.goto(f"{farm.url}/jobs/{without}")
    notice = page.locator("#job-missing")
    expect()(notice).to_be_visible()
    expect()(notice).to_have_text(
        "Submitted without 8 missing files: <b>udim/tex.1002.png</b>, seq/f.0001.png, "
        "seq/f.0002.png, seq/f.0003.png, seq/f.0004.png and 3 more"
    )

    page.goto(f"{farm.url}/jobs/{complete}")
    expect()(page.locator("#job-status")).not_to_be_empty()
    expect()(page.locator("#job-missing")).to_be_hidden()
    page.context.close()
