"""Where a runner is: the address the manager sees its requests come from
(`RunnerInfo.address`, at register and every heartbeat) and the one the worker detects
for itself (`capabilities.address`), in the API and in `farmhand runners`.

Behind a reverse proxy the client's address is the proxy's unless the manager was told
to trust its forwarded headers (`--proxy-headers`, docs/SECURITY.md); a runner reached
directly cannot choose what the manager shows by sending `X-Forwarded-For`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm, local_farm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import Farm, cli_at


def at(farm: Farm, host: str) -> TestClient:
    """The farm's manager as a client at `host` reaches it (no second start-up)."""
    return TestClient(farm.client.app, client=(host, 40000))


def register(client: Any, token: str, name: str, **caps: Any) -> dict[str, str]:
    body = {"token": token, "name": name, "capabilities": {"protocol": WORKER_PROTOCOL, **caps}}
    answer = client.post("/api/runner/register", json=body)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def listed(client: Any, admin: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer = client.get("/api/admin/runners", headers=admin)
    assert answer.status_code == 200, answer.text
    return {r["name"]: r for r in answer.json()}


def test_the_api_says_where_a_runner_is_and_follows_it(farm: Farm) -> None:
    box = register(at(farm, "192.0.2.7"), farm.runner_token, "box", address="10.0.0.7")
    register(farm.client, farm.runner_token, "older", hostname="older-box")
    runners = listed(farm.client, farm.admin)
    assert runners["box"]["address"] == "192.0.2.7", "where its requests come from"
    assert runners["box"]["capabilities"]["address"] == "10.0.0.7", "what it says itself"
    assert runners["older"]["capabilities"]["address"] == "", "a worker that says nothing"

    # A new DHCP lease: the next heartbeat moves it.
    beat = at(farm, "192.0.2.8").post("/api/runner/heartbeat", json={}, headers=box)
    assert beat.status_code == 200, beat.text
    assert listed(farm.client, farm.admin)["box"]["address"] == "192.0.2.8"
    # A dual-stack socket's IPv4 in IPv6 form is shown as the IPv4 it is.
    at(farm, "::ffff:192.0.2.9").post("/api/runner/heartbeat", json={}, headers=box)
    assert listed(farm.client, farm.admin)["box"]["address"] == "192.0.2.9"
    at(farm, "2001:db8::7").post("/api/runner/heartbeat", json={}, headers=box)
    assert listed(farm.client, farm.admin)["box"]["address"] == "2001:db8::7"


def test_a_runner_cannot_say_it_is_somewhere_else(farm: Farm) -> None:
    """The TestClient runs no uvicorn: its client is what the connection says."""
    lying = {"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.66"}
    client = at(farm, "192.0.2.7")
    answer = client.post(
        "/api/runner/register",
        json={"token": farm.runner_token, "name": "liar"},
        headers=lying,
    )
    assert answer.status_code == 201
    assert listed(farm.client, farm.admin)["liar"]["address"] == "192.0.2.7"


FORWARDED = {"X-Forwarded-For": "203.0.113.7"}
"""What a reverse proxy on 127.0.0.1 adds for a worker at 203.0.113.7."""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    """A real manager told to trust the forwarded headers of 127.0.0.1, its proxy."""
    with local_farm(tmp_path_factory.mktemp("proxied"), heartbeat_timeout=600.0) as farm:
        farm.start_manager("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
        yield farm


def register_at(farm: LocalFarm, name: str, headers: dict[str, str], **caps: Any) -> None:
    with httpx.Client(base_url=farm.url, headers=headers, timeout=30) as client:
        register(client, farm.runner_token, name, **caps)


def test_behind_a_trusted_proxy_the_forwarded_address_is_shown(
    proxied: LocalFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cli_at(proxied, monkeypatch) as api:
        register_at(proxied, "remote-box", FORWARDED, address="192.168.1.20")
        register_at(proxied, "proxy-box", {})  # straight to the manager, not proxied
        runners = {r["name"]: r for r in api.get("/api/admin/runners").json()}
        assert runners["remote-box"]["address"] == "203.0.113.7"
        assert runners["proxy-box"]["address"] == "127.0.0.1"

        listing = CliRunner().invoke(app, ["runners"])
        assert listing.exit_code == 0, listing.output
        assert "address" in listing.output.splitlines()[1]
        row = next(line for line in listing.output.splitlines() if " remote-box " in line)
        assert "203.0.113.7 (local 192.168.1.20)" in row, row
        row = next(line for line in listing.output.splitlines() if " proxy-box " in line)
        assert "127.0.0.1" in row and "local" not in row, row


def test_without_proxy_headers_a_forwarded_address_is_not_believed(tmp_path: Path) -> None:
    with local_farm(tmp_path, heartbeat_timeout=600.0) as farm:
        farm.start_manager()  # --proxy-headers is off by default
        register_at(farm, "liar", FORWARDED, address="127.0.0.1")
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        with httpx.Client(base_url=farm.url, headers=admin, timeout=30) as api:
            runners = {r["name"]: r for r in api.get("/api/admin/runners").json()}
        assert runners["liar"]["address"] == "127.0.0.1", "the connection's own peer"
