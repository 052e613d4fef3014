"""FARMHAND_ADMIN_TOKEN / FARMHAND_RUNNER_TOKEN across restarts: a new preset replaces the
one in its file, which stops working; what was made with the old ones keeps working."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import make_settings


def started(data_dir: Path, admin: str, runner: str) -> TestClient:
    return TestClient(create_app(make_settings(data_dir, admin_token=admin, runner_token=runner)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: TestClient, token: str, name: str) -> int:
    answer: httpx.Response = client.post(
        "/api/runner/register", json={"token": token, "name": name}
    )
    return answer.status_code


def test_a_changed_preset_retires_the_old_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with started(data, "fh_api_first", "fh_reg_first") as client:
        assert client.get("/api/jobs", headers=bearer("fh_api_first")).status_code == 200
        made = client.post("/api/tokens", json={"name": "script"}, headers=bearer("fh_api_first"))
        assert made.status_code == 201, made.text
        script = made.json()["secret"]
        answer = client.post(
            "/api/runner/register", json={"token": "fh_reg_first", "name": "early"}
        )
        assert answer.status_code == 201, answer.text
        early = bearer(answer.json()["secret"])

    # Rotated: the variables now hold new secrets (a leak, a routine change).
    with started(data, "fh_api_second", "fh_reg_second") as client:
        assert client.get("/api/jobs", headers=bearer("fh_api_first")).status_code == 401
        assert client.get("/api/jobs", headers=bearer("fh_api_second")).status_code == 200
        assert client.get("/api/jobs", headers=bearer(script)).status_code == 200, (
            "a token made through the API is not a preset's to retire"
        )
        assert register(client, "fh_reg_first", "late") in (401, 403)
        assert register(client, "fh_reg_second", "new") == 201
        beat = client.post("/api/runner/heartbeat", headers=early, json={})
        assert beat.status_code == 200, "a worker registered with the old token keeps working"
    assert (data / "admin-token").read_text().strip() == "fh_api_second"

    # Set back: a preset works at every start, even one retired before.
    with started(data, "fh_api_first", "fh_reg_first") as client:
        assert client.get("/api/jobs", headers=bearer("fh_api_first")).status_code == 200
        assert client.get("/api/jobs", headers=bearer("fh_api_second")).status_code == 401
        assert register(client, "fh_reg_first", "again") == 201


def test_the_same_preset_at_every_start_revokes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        with started(data, "fh_api_same", "fh_reg_same") as client:
            assert client.get("/api/jobs", headers=bearer("fh_api_same")).status_code == 200
            assert register(client, "fh_reg_same", "w") == 201
