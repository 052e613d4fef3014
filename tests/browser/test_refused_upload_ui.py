"""What the Submit page shows when the manager refuses a .blend over the sender's storage
quota (a 413), on a phone, a tablet and a laptop (375, 800 and 1280 px).

A tester saw, after such a refusal, the file's name broken mid-word ("big.blen" / "d":
the refusal beside it took the row and squeezed the name to a few letters) and a red bar
only partly filled, which looked like an upload that had stalled: the manager refuses
such a file before reading its body, so the bar was where the upload stopped (a few
per cent) and slid from there to full width in red. The name is now shown whole, beside
the status or on a line of its own, broken only where `breakable` marks a long one; a
refused upload's bar is red across its width at once.

The manager closes a refused upload's connection while the browser is still sending. A
browser may then see only the connection reset, not the 413 before it (Chromium here
reads the answer; behind other networks or proxies the answer can be lost): the page said
"network error". It now asks the manager whether it is there, and if it is, says the
manager refused the upload. A proxy in front of the manager loses the 413 to show it.

A real manager with a small per-user quota, a user who is not an admin (admins have no
quota), and sparse stand-in .blend files (the manager refuses them unread; no Blender).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm
from tests.browser.conftest import NO_SIDEWAYS_SCROLL, expect, manager_farm, shoot, sign_in
from tests.browser.test_long_names_ui import LINES
from tests.integration.conftest import FAKE_BLEND

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

QUOTA = 1_000_000
BIG = 256 * 1024**2
"""The files' size: far over the quota, so the manager refuses them by their declared
length, before the browser can have sent them whole (a sparse file: no disk used)."""

farm = manager_farm("--user-quota-bytes", str(QUOTA), name="refused-upload-farm")

NAMES = {
    "short": "big.blend",
    "long": "Renderstationnumber" * 6 + "_final.blend",  # 120 characters, no space
    "accented": "Größenänderung_Überblick_façade_Ščřž_сцена-финал.blend",
}
WIDTHS = (375, 800, 1280)
PIECE = re.compile(r"[^-._/:@]{1,12}[-._/:@]*|[-._/:@]+")
"""Where app.js `breakable` lets a name break: after each - . _ / : @, and every 12
characters of a longer run without one."""

ON_REFUSAL = """() => {
    window.refusal = null;
    const text = document.querySelector("#upload-text");
    new MutationObserver(() => {
        if (window.refusal || !text.classList.contains("error")) return;
        const bar = document.querySelector("#upload-bar");
        window.refusal = {
            bar: bar.getBoundingClientRect().width,
            fill: parseFloat(getComputedStyle(bar.firstElementChild).width),
        };
    }).observe(text, { attributes: true, childList: true, characterData: true, subtree: true });
}"""
"""For `evaluate` before an upload: `window.refusal` gets the bar's width and its fill's
as they are when the status line turns red, before any transition could run on."""

QUOTA_REFUSAL = re.compile(
    r"^Failed: storage quota exceeded: .* more than your whole quota: "
    r"ask an admin for a larger quota\.$"
)
CUT_OFF = (
    "Failed: the manager refused the upload. It closed the connection before the whole "
    "file was sent, as it does for a file over your storage quota or its upload limit, "
    "and its reason did not reach the browser. Try again to see it."
)


def sparse_blend(folder: Path, name: str) -> Path:
    path = folder / name
    with path.open("wb") as handle:
        handle.write(FAKE_BLEND)
        handle.truncate(BIG)
    return path


@pytest.fixture(scope="module")
def student(farm: LocalFarm) -> str:
    """The API token of a user who is not an admin: the quota holds them."""
    answer = httpx.post(
        farm.url + "/api/admin/users",
        headers={"Authorization": f"Bearer {farm.admin_token}"},
        json={"name": "student", "role": "user"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def breaks_only_between_pieces(name: str, lines: list[str]) -> bool:
    """True when each line ends where `breakable` allows a break."""
    ends, at = set(), 0
    for piece in PIECE.findall(name):
        at += len(piece)
        ends.add(at)
    at = 0
    for line in lines:
        at += len(line)
        if at not in ends:
            return False
    return True


def assert_refused_plainly(page: Any, key: str, width: int) -> None:
    """The refusal's text, the name whole and broken only between pieces, inside the
    page, and a bar red across its width from the moment the refusal shows."""
    name = NAMES[key]
    text, shown = page.locator("#upload-text"), page.locator("#upload-name")
    # This file's refusal, not the one before it, whose words are the same and may still
    # be shown while this upload begins (under load, the checks below read that one).
    page.wait_for_function("() => window.refusal !== null")
    expect()(text).to_have_text(QUOTA_REFUSAL)
    lines = [line.strip() for line in shown.evaluate(LINES)]
    where = f"{name} at {width} px"
    assert "".join(lines) == name, f"{where}: the name is shown whole: {lines}"
    if len(name) * 9 < width - 40:  # room on a line: not broken at all
        assert len(lines) == 1, f"{where}: broken though it fits a line: {lines}"
    assert breaks_only_between_pieces(name, lines), f"{where}: broken mid-word: {lines}"
    inside = shown.evaluate(
        "(el) => el.getBoundingClientRect().right"
        " <= el.closest('#upload').getBoundingClientRect().right + 0.5"
    )
    assert inside, f"{where}: the name sticks out of the page"
    assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{where}: the page scrolls sideways"
    refusal = page.evaluate("window.refusal")
    assert refusal["fill"] == pytest.approx(refusal["bar"], abs=1), (
        f"{where}: the refused upload's bar is not red across its width: {refusal}"
    )
    bar = page.locator("#upload-bar")
    expect()(bar).to_have_class(re.compile(r"\bbad\b"))
    expect()(bar).to_have_attribute("aria-valuetext", "failed")


def test_a_blend_over_the_quota_is_refused_with_its_name_whole_and_a_red_bar(
    browser: Any, farm: LocalFarm, student: str, tmp_path: Path
) -> None:
    files = {key: sparse_blend(tmp_path, name) for key, name in NAMES.items()}
    page = sign_in(browser, farm, student)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(farm.url + "/submit")
        for key, path in files.items():
            page.evaluate(ON_REFUSAL)
            page.set_input_files("#file", str(path))
            assert_refused_plainly(page, key, width)
            shoot(page, f"refused-upload-{key}-{width}")
    page.context.close()


class LosingProxy:
    """Forwards connections to the manager, except that the answer to an upload to
    `/api/blend-info` is lost: once the manager answers it (a refusal, while the browser
    is still sending), the browser's connection is reset instead, as a browser may see
    a manager that closes a refused upload's connection."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lost = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        uploading = threading.Event()

        def to_manager() -> None:
            try:
                while data := client.recv(65536):
                    if b"POST /api/blend-info " in data:
                        uploading.set()
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=to_manager, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if uploading.is_set():
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.lost.set()
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


@pytest.fixture
def losing_proxy(farm: LocalFarm) -> Iterator[LosingProxy]:
    proxy = LosingProxy(int(farm.url.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_an_upload_whose_refusal_is_lost_says_the_manager_refused_it(
    browser: Any, farm: LocalFarm, student: str, tmp_path: Path, losing_proxy: LosingProxy
) -> None:
    """Not "network error": the manager is there, and closed the connection on a file
    it would not take."""
    page = sign_in(browser, farm, student)  # the cookie holds for every port of the host
    page.goto(losing_proxy.url + "/submit")
    page.evaluate(ON_REFUSAL)
    page.set_input_files("#file", str(sparse_blend(tmp_path, "big.blend")))
    text = page.locator("#upload-text")
    expect()(text).to_have_text(CUT_OFF)
    assert losing_proxy.lost.is_set(), "the manager's answer reached the browser"
    expect()(text).to_have_class(re.compile(r"\berror\b"))
    expect()(page.locator("#upload-again")).to_be_visible()
    refusal = page.evaluate("window.refusal")
    assert refusal["fill"] == pytest.approx(refusal["bar"], abs=1), refusal
    shoot(page, "refused-upload-answer-lost")
    page.context.close()


def test_a_page_signed_out_whose_refusal_is_lost_goes_to_the_sign_in(
    browser: Any, farm: LocalFarm, student: str, tmp_path: Path, losing_proxy: LosingProxy
) -> None:
    """Signed out meanwhile (another tab, an admin), the upload is refused as
    unauthenticated, and that answer too can be lost: the page's question to the
    manager must be one that answers 401 then, so the page goes to the sign-in. It
    asked `/api/me`, which does not exist: a 404, and the page blamed the file's size."""
    page = sign_in(browser, farm, student)
    page.goto(losing_proxy.url + "/submit")
    page.context.clear_cookies()
    page.set_input_files("#file", str(sparse_blend(tmp_path, "big.blend")))
    page.wait_for_url(re.compile(r"/login\?error=session-ended"))
    assert losing_proxy.lost.is_set(), "the manager's answer reached the browser"
    page.context.close()
