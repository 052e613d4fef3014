"""A worker detects its own address towards the manager and reports it with its
capabilities (`worker/hardware.local_address`), as the manager's runners list shows."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from farmhand.worker import hardware
from farmhand.worker.agent import RenderJob, RenderOutcome, run_worker
from tests.unit.test_worker_agent import FakeManager, _settings


def test_the_address_is_the_local_end_of_the_route_to_the_manager() -> None:
    assert hardware.local_address("http://127.0.0.1:8080") == "127.0.0.1"
    assert hardware.local_address("https://localhost") in ("127.0.0.1", "::1")
    # A route out (a documentation address: connecting a UDP socket sends nothing).
    routed = hardware.local_address("http://192.0.2.1:8080")
    if routed:  # a machine with no route out says nothing
        assert routed != "0.0.0.0" and socket.inet_aton(routed)


@pytest.mark.parametrize(
    "url", ["", "not a url", "http://no-such-host.invalid:8080", "http://h:99999"]
)
def test_an_address_it_cannot_tell_is_empty(url: str) -> None:
    assert hardware.local_address(url) == ""


def test_ipv6(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("::1", 9))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert hardware.local_address("http://[::1]:8080") == "::1"


def test_capabilities_carry_it_only_when_asked() -> None:
    assert hardware.capabilities(["4.2.0"]).address == ""
    caps = hardware.capabilities(["4.2.0"], manager_url="http://127.0.0.1:8080")
    assert caps.address == "127.0.0.1"
    assert caps.hostname == socket.gethostname()


def test_a_worker_registers_with_its_address(tmp_path: Path) -> None:
    manager = FakeManager([])
    manager.tasks = []
    settings = replace(_settings(tmp_path), manager_url="http://127.0.0.1:9")
    stop = threading.Event()
    done: list[int] = []

    def renderer(job: RenderJob) -> RenderOutcome:
        return RenderOutcome(ok=True)

    thread = threading.Thread(
        target=lambda: done.append(
            run_worker(
                settings,
                renderer=renderer,
                blender_versions=["4.2.0"],
                transport=httpx.MockTransport(manager.handler),
                stop=stop,
            )
        ),
        daemon=True,
    )
    thread.start()
    try:
        manager.wait_for("register")
    finally:
        stop.set()
        thread.join(10)
    assert done == [0]
    assert manager.body("register")["capabilities"]["address"] == "127.0.0.1"
