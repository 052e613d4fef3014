"""What a teacher (an admin) of a class sees, at a phone's width and a laptop's: whose
job each job is, the whole Users table, and a true sentence about garbage collection.

QA, with a class of students on one farm:

- On a 390 px phone the jobs list's cards left the Owner column out (and from 641 to
  899 px the table did too), so an admin, whose list holds everyone's jobs, could not
  tell whose job a card was. Now the owner is under the job's name there ("by stu05");
  a student's list holds only their own jobs and says nothing more.
- On a 1024 px laptop the Users table was wider than its frame: the admin's own row's
  note read "You cannot disable or delete yourse", cut off, and the actions ended
  off-screen. Measured with a locked-out user's `locked (15 min)` badge and Unlock button
  in the table too.
- Between 641 and 799 px (a tablet, a window beside another) the Users table still
  scrolled sideways inside its frame, the actions cut off at its right edge. Now each
  user takes three lines there (the columns, then sign-in and created, then the
  actions), inside the frame.
- The Storage page said every file no job uses goes once unused for 7 days; an upload no
  job ever used goes after the grace period (`blob_grace_seconds`, an hour here).

No Blender: jobs are a stand-in .blend the manager never opens. Screenshots:
`admin-views-*.png`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import NO_SIDEWAYS_SCROLL, expect, manager_farm, shoot, sign_in
from tests.integration.conftest import submit_stand_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

farm = manager_farm(name="admin-views-farm")

PASSWORD = "a long enough password"
# A phone, the middle layouts' edges and a width inside (the Owner column is left out
# below 900 px), laptops, a wide screen.
JOB_WIDTHS = [390, 641, 800, 899, 900, 1024, 1280]
# Laptops (QA's 1024 px), down to 800 px, and between a phone and 800 px (a tablet, a
# window beside another: the frame scrolled sideways there), its edges and a width inside.
ACCOUNT_WIDTHS = [1024, 1280, 1199, 900, 800, 799, 700, 641]

# For `page.evaluate(..., selector)`: in one go, what of the table is not wholly in view
# (a button, a badge or a note past its frame's right edge or the window's), and whether
# the frame scrolls sideways.
OUT_OF_VIEW = """(selector) => {
  const table = document.querySelector(selector), frame = table.closest(".table-wrap");
  const edge = Math.min(frame.getBoundingClientRect().right, window.innerWidth);
  const out = [];
  for (const el of table.querySelectorAll("button, .badge, .actions .muted, td")) {
    const r = el.getBoundingClientRect();
    const what = el.textContent.trim().slice(0, 40);
    if (r.width && r.right > edge + 0.5) out.push(`${what} ends at ${Math.round(r.right)}`);
  }
  return { scrolls: frame.scrollWidth > frame.clientWidth, out };
}"""


def make_user(api: httpx.Client, name: str, **fields: str) -> str:
    """A user's token (role user)."""
    answer = api.post("/api/admin/users", json={"name": name, "role": "user", **fields})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_sees_whose_job_it_is_at_every_width(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    stu05 = make_user(api, "stu05")
    ana = make_user(api, "ana")
    submit_stand_in(api, bearer(ana), name="ana's scene", frame_start=1, frame_end=2)
    submit_stand_in(api, bearer(stu05), name="s3", frame_start=1, frame_end=2)
    admin_job = submit_stand_in(api, name="teacher demo", frame_start=1, frame_end=2)

    page = sign_in(browser, farm)
    for width in JOB_WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(farm.url + "/")
        stu_row = page.locator("#jobs tbody tr", has_text="s3")
        admin_row = page.locator(f'#jobs tbody tr[data-job-id="{admin_job}"]')
        expect()(stu_row).to_be_visible()
        # What the admin reads in each row (inner_text leaves out what is not shown).
        assert "stu05" in stu_row.inner_text(), f"{width} px: stu05's job does not say whose"
        assert "admin" in admin_row.inner_text(), f"{width} px: the admin's job does not say whose"
        # Said once: by the column where it is shown, else under the name.
        assert stu_row.inner_text().count("stu05") == 1, f"{width} px: {stu_row.inner_text()!r}"
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{width} px: the jobs list scrolls sideways"
        if width in (390, 800, 1024):
            shoot(page, f"admin-views-jobs-{width}")

    # Filtered to one student on a phone, as QA had it: each card still says whose.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(farm.url + "/?owner=stu05")
    expect()(page.locator("#jobs tbody tr")).to_have_count(1)
    expect()(page.locator("#jobs tbody tr .job-owner")).to_have_text("by stu05")
    shoot(page, "admin-views-jobs-390-filtered")
    page.context.close()

    # A student's list holds only their own jobs: no "by stu05" on each of them.
    student = sign_in(browser, farm, stu05)
    student.set_viewport_size({"width": 390, "height": 844})
    expect()(student.locator("#jobs tbody tr", has_text="s3")).to_be_visible()
    expect()(student.locator("#jobs .job-owner")).to_have_count(0)
    student.context.close()


def lock_out(farm: LocalFarm, email: str) -> None:
    """Five wrong passwords (the default per-account limit): the account is locked."""
    with httpx.Client(base_url=farm.url, timeout=30) as client:
        for _ in range(5):
            answer = client.post("/api/auth/login", json={"email": email, "password": "wrong"})
            assert answer.status_code == 401, answer.text
        answer = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 429, answer.text


def test_the_users_table_fits_a_laptop(browser: Any, farm: LocalFarm, api: httpx.Client) -> None:
    make_user(api, "stu01", email="stu01@example.com", password=PASSWORD)
    make_user(api, "stu02.with-a-longer-name", email="a.rather.long.address@students.example.org")
    make_user(api, "stu03")
    lock_out(farm, "stu01@example.com")

    page = sign_in(browser, farm)
    for width in ACCOUNT_WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(farm.url + "/account")
        locked = page.locator('#users tr[data-user-name="stu01"]')
        expect()(locked.get_by_role("button", name="Unlock")).to_be_visible()
        expect()(locked.locator(".badge", has_text="locked")).to_be_visible()
        mine = page.locator('#users tr[data-user-name="admin"]')
        expect()(mine).to_contain_text("You cannot disable or delete yourself.")
        seen = page.evaluate(OUT_OF_VIEW, "#users")
        if width in (641, 700, 799, 1024, 1280):
            mine.scroll_into_view_if_needed()
            shoot(page, f"admin-views-account-{width}")
        assert seen["out"] == [], f"{width} px: {seen['out']}"
        assert not seen["scrolls"], f"{width} px: the Users table scrolls sideways in its frame"
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{width} px: the page scrolls sideways"
    page.context.close()


def test_the_storage_page_says_when_each_kind_of_file_goes(
    browser: Any, farm: LocalFarm, api: httpx.Client
) -> None:
    page = sign_in(browser, farm)
    page.goto(farm.url + "/storage")
    retention = page.locator("#retention")
    # An upload no job ever used: the sentence about what no job uses must hold for it.
    content = b"sent, never submitted " * 1000
    sha = hashlib.sha256(content).hexdigest()
    stored = api.put(f"/api/blobs/{sha}", content=content)
    assert stored.status_code in (200, 201), stored.text
    page.reload()
    expect()(retention).to_contain_text("no job uses.")
    for text in (
        "files a job used once unused for 7 days (the retention)",
        "uploads no job ever used after 1h 00m (the grace period)",
    ):
        expect()(retention).to_contain_text(text)
    shoot(page, "admin-views-storage")
    page.context.close()
