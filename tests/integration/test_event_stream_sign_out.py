"""An open live-event stream ends when its caller's credentials stop being valid.

A browser's shared worker keeps one stream open across its tabs; if it went on after
sign-out, the next person at that browser would see the previous user's events. The
stream must end (the browser then reconnects, gets 401 and shows the login page) once
its user signs out, is disabled, or revokes the token it was opened with.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm
from tests.integration.conftest import submit_stand_in

PASSWORD = "correct horse battery staple"
ENDED = "(stream ended)"
WAIT = 20.0
"""Bounded wait for the stream to end: several times the manager's recheck interval."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with local_farm(tmp_path_factory.mktemp("events")) as farm:
        farm.start_manager()
        yield farm


def admin(farm: LocalFarm) -> httpx.Client:
    return httpx.Client(
        base_url=farm.url, headers={"Authorization": f"Bearer {farm.admin_token}"}, timeout=30
    )


def new_user(farm: LocalFarm, name: str) -> tuple[int, str]:
    """A user with a password; their id and first API token."""
    with admin(farm) as client:
        answer = client.post(
            "/api/admin/users",
            json={"name": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["user"]["id"]), str(answer.json()["token"])


def read_stream(client: httpx.Client, lines: queue.Queue[str], opened: threading.Event) -> None:
    try:
        with client.stream("GET", "/api/events", timeout=httpx.Timeout(30, read=None)) as stream:
            assert stream.status_code == 200, stream.read()
            opened.set()
            for line in stream.iter_lines():
                lines.put(line)
    finally:
        lines.put(ENDED)


def watch(client: httpx.Client) -> queue.Queue[str]:
    """Open the stream in the background; its lines arrive on the queue, ENDED last."""
    lines: queue.Queue[str] = queue.Queue()
    opened = threading.Event()
    threading.Thread(target=read_stream, args=(client, lines, opened), daemon=True).start()
    assert opened.wait(WAIT), "the stream did not open"
    # Its first line is sent once it listens for changes.
    assert lines.get(timeout=WAIT).startswith("retry:")
    return lines


def pause(farm: LocalFarm, job_id: int) -> None:
    with admin(farm) as client:
        answer = client.post(f"/api/jobs/{job_id}/actions", json={"action": "pause"})
    assert answer.status_code == 200, answer.text


def events_until_the_end(lines: queue.Queue[str]) -> list[str]:
    """The event lines the stream delivers before it ends; fails if it does not end."""
    events: list[str] = []
    deadline = time.monotonic() + WAIT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"the stream was still open {WAIT} s after the credentials ended")
        if line == ENDED:
            return events
        if line.startswith("event:"):
            events.append(line)


def check_stream_ends(
    farm: LocalFarm, client: httpx.Client, job_id: int, revoke: Callable[[], None]
) -> None:
    lines = watch(client)
    pause(farm, job_id)  # while signed in, the user sees their job change
    seen: list[str] = []
    while not seen:
        line = lines.get(timeout=WAIT)
        assert line != ENDED, "the stream ended while the user was still signed in"
        if line.startswith("event:"):
            seen.append(line)
    revoke()
    assert client.get("/api/jobs").status_code == 401
    events_until_the_end(lines)
    assert lines.empty()


def test_signing_out_ends_the_stream(farm: LocalFarm) -> None:
    new_user(farm, "ana")
    with httpx.Client(base_url=farm.url, timeout=30) as browser:
        signed_in = browser.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        csrf = {"X-CSRF-Token": signed_in.json()["csrf"]}
        job_id = submit_stand_in(browser, csrf)

        def sign_out() -> None:
            assert browser.post("/api/auth/logout", headers=csrf).status_code == 204

        check_stream_ends(farm, browser, job_id, sign_out)


def test_disabling_the_user_ends_their_token_stream(farm: LocalFarm) -> None:
    user_id, token = new_user(farm, "bea")
    with httpx.Client(
        base_url=farm.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as script:
        job_id = submit_stand_in(script)

        def disable() -> None:
            with admin(farm) as client:
                answer = client.patch(f"/api/admin/users/{user_id}", json={"disabled": True})
            assert answer.status_code == 200, answer.text

        check_stream_ends(farm, script, job_id, disable)


def test_revoking_the_token_ends_its_stream(farm: LocalFarm) -> None:
    _, first = new_user(farm, "cai")
    with httpx.Client(
        base_url=farm.url, headers={"Authorization": f"Bearer {first}"}, timeout=30
    ) as owner:
        made = owner.post("/api/tokens", json={"name": "stream"})
        assert made.status_code == 201, made.text
        token_id, secret = made.json()["token"]["id"], made.json()["secret"]
        job_id = submit_stand_in(owner)
    with httpx.Client(
        base_url=farm.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as script:

        def revoke() -> None:
            with httpx.Client(
                base_url=farm.url, headers={"Authorization": f"Bearer {first}"}, timeout=30
            ) as owner:
                assert owner.delete(f"/api/tokens/{token_id}").status_code == 200

        check_stream_ends(farm, script, job_id, revoke)
