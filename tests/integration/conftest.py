"""A real manager app (real SQLite, real blob store) served in-process for API tests."""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.manager.app import create_app
from farmhand.manager.settings import ManagerSettings
from tests.integration.postgres import postgres_bin, postgres_server
from tests.manager_env import clear_manager_env, forbid_serving


@dataclass
class Farm:
    # To mypy, TestClient's methods answer Any (starlette types its base class as httpx2's
    # Client, which is not installed): a helper that returns an answer names its type.
    client: TestClient
    admin_token: str
    runner_token: str
    data_dir: Path

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def register_runner(self, name: str = "w1") -> dict[str, str]:
        answer = self.client.post(
            "/api/runner/register", json={"token": self.runner_token, "name": name}
        )
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['secret']}"}


def make_settings(data_dir: Path, **overrides: object) -> ManagerSettings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "admin_token": "fh_api_test_" + secrets.token_hex(8),
        "runner_token": "fh_reg_test_" + secrets.token_hex(8),
        "heartbeat_timeout": 30.0,
        "reaper_interval": 0.2,
        "claim_poll_interval": 0.05,
    }
    values.update(overrides)
    return ManagerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def png_bytes(width: int = 8, height: int = 6, colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


FAKE_BLEND = b"BLENDER-v304RENDB" + b"\x00" * 64
"""Starts like a .blend; enough for the manager, which never opens it."""


def post_stand_in(
    client: httpx.Client,
    headers: dict[str, str] | None = None,
    /,
    *,
    blend: bytes = FAKE_BLEND,
    **settings: Any,
) -> httpx.Response:
    """`POST /api/jobs` of a stand-in .blend (`blend`) with these `JobSettings` fields, as
    `client` (a `TestClient`, or an `httpx.Client` on a real manager) sends it with
    `headers` (None: the client's own)."""
    return client.post(
        "/api/jobs",
        headers=headers,
        files={"file": ("scene.blend", blend, "application/octet-stream")},
        data={"settings": json.dumps(settings)},
    )


def submit_stand_in(
    client: httpx.Client,
    headers: dict[str, str] | None = None,
    /,
    *,
    blend: bytes = FAKE_BLEND,
    **settings: Any,
) -> int:
    """Submit a job of a stand-in .blend as `post_stand_in` does; the job's id."""
    answer = post_stand_in(client, headers, blend=blend, **settings)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def login_nonce(client: TestClient) -> str:
    """What a browser that loaded the login page posts back (its cookie is now set)."""
    page = client.get("/login")
    assert page.status_code == 200, page.text
    found = re.search(r'name="login_nonce" value="([^"]+)"', page.text)
    assert found is not None, "the login form carries its nonce"
    return found.group(1)


def upload_frame(
    farm: Farm, runner: dict[str, str], task: dict[str, Any], frame: int, data: bytes
) -> httpx.Response:
    """Upload `data` as frame `frame` of a task the runner holds, as a worker does (the
    raw body; `tests/integration/test_frame_uploads.py` covers the older multipart form)."""
    answer: httpx.Response = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/{frame}.png",
        headers=runner,
        content=data,
    )
    return answer


def upload_frames(farm: Farm, runner: dict[str, str], task: dict[str, Any]) -> None:
    """Upload a PNG for each frame of a task the runner holds, as a worker does."""
    for frame in task["frames"]:
        answer = upload_frame(farm, runner, task, frame, png_bytes())
        assert answer.status_code == 201, answer.text


def purge_jobs_and_runners(api: Any) -> None:
    """Delete every job (outputs too) and runner over the API (an admin's `httpx.Client`),
    so the next test of a shared manager starts from an empty farm."""
    for job in api.get("/api/jobs").json():
        api.delete(f"/api/jobs/{job['id']}", params={"purge": "true"})
    for runner in api.get("/api/admin/runners").json():
        api.delete(f"/api/admin/runners/{runner['id']}")


def metric(name: str, /, **labels: str) -> str:
    """The key of one sample in `scrape_metrics`: `name{a="1",b="2"}`, labels sorted."""
    pairs = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{pairs}}}" if pairs else name


def scrape_metrics(client: Any, headers: dict[str, str] | None = None) -> dict[str, float]:
    """`GET /metrics` read with Prometheus' own parser, so a malformed line fails as it
    would fail a scrape; samples by `metric(name, **labels)`."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        metric(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def upload_input(farm: Farm, job_id: int, path: str, data: bytes) -> httpx.Response:
    """`POST /api/jobs/{id}/upload`: add or replace one input file of a job."""
    answer: httpx.Response = farm.client.post(
        f"/api/jobs/{job_id}/upload",
        headers=farm.admin,
        files={"file": ("upload.bin", data, "application/octet-stream")},
        data={"path": path},
    )
    return answer


def inputs(farm: Farm, job_id: int) -> dict[str, str]:
    """A job's input files: path → content hash."""
    listed = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    return {f["path"]: f["sha256"] for f in listed if f["kind"] == "input"}


@contextmanager
def cli_at(farm: LocalFarm, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """The CLI pointed at `farm` as its admin, and the API as the admin; the farm's jobs
    and runners purged afterwards, so a module-scoped farm starts each test empty."""
    from farmhand.cli import jobs_cmd

    monkeypatch.setenv("FARMHAND_URL", farm.url)
    monkeypatch.setenv("FARMHAND_TOKEN", farm.admin_token)
    monkeypatch.setenv("FARMHAND_CONFIG", str(farm.root / "no-config.toml"))
    # Whole table rows, one per line. The consoles were made (and read COLUMNS) when the
    # CLI was imported, at collection: setting the variable now would be too late.
    monkeypatch.setattr(jobs_cmd.console, "width", 200)
    monkeypatch.setattr(jobs_cmd.err, "width", 200)
    admin = {"Authorization": f"Bearer {farm.admin_token}"}
    with httpx.Client(base_url=farm.url, headers=admin, timeout=30) as client:
        yield client
        purge_jobs_and_runners(client)


def cli_api_fixture() -> Callable[..., object]:
    """An `api` fixture for a module (`api = cli_api_fixture()`) with a `farm` of its own:
    for each test, `cli_at` that farm (the API as the admin, the in-process CLI pointed
    at the same manager; every job and runner purged afterwards)."""

    @pytest.fixture
    def api(farm: LocalFarm, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
        with cli_at(farm, monkeypatch) as client:
            yield client

    return api


def farm_fixture(
    *manager_args: str,
    name: str = "farm",
    first: tuple[str, ...] = (),
    projects_share: bool = False,
    **options: object,
) -> Callable[..., object]:
    """A `farm` fixture for a module (`farm = farm_fixture(...)`: its manager's options
    stand where its tests are read, and a made fixture, unlike an imported one, is not
    shadowed by the tests' `farm` arguments): one real manager process, no worker, that
    every test of the module shares (module-scoped), started with `manager_args` on a
    `LocalFarm` made with `options` in a temporary folder named `name`. Scripted runners
    send no heartbeats: `heartbeat_timeout=600.0` keeps them online.

    `first`: fixtures set up before the manager starts (and torn down after it stops).
    `projects_share`: the manager knows the module's `nas` as the `{projects}` share on
    Linux (FARMHAND_PATH_VARIABLES, set while the farm runs).
    """

    @pytest.fixture(scope="module")
    def farm(
        tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
    ) -> Iterator[LocalFarm]:
        for fixture in first:
            request.getfixturevalue(fixture)
        with pytest.MonkeyPatch.context() as env:
            if projects_share:
                nas = request.getfixturevalue("nas")
                env.setenv("FARMHAND_PATH_VARIABLES", json.dumps({"projects": {"linux": str(nas)}}))
            with local_farm(tmp_path_factory.mktemp(name), **options) as farm:
                farm.start_manager(*manager_args)
                yield farm

    return farm


@pytest.fixture
def no_manager_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For `farmhand manager` refused at start, in this process (`CliRunner`): the
    options under test, not whatever manager this shell points at; a manager that gets
    as far as serving fails the test instead of blocking it."""
    clear_manager_env(monkeypatch)
    forbid_serving(monkeypatch)
    yield
    structlog.reset_defaults()  # the CLI left it writing to CliRunner's closed stderr


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[LocalFarm]:
    """A real `farmhand manager` process on its own data dir, for what crosses the wire
    (a module may define its own `manager`, which then wins)."""
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        yield farm


@pytest.fixture(scope="module")
def nas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's stand-in for a studio's file server (a folder every process sees)."""
    return tmp_path_factory.mktemp("nas")


def stored_blobs(farm: LocalFarm | Farm) -> list[Path]:
    """The blob files in the farm's store."""
    return [p for p in (farm.data_dir / "blobs" / "sha256").rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server for the module's tests (`fresh_database` gives each
    test its own database on it); skipped without Debian's postgresql."""
    if postgres_bin() is None:
        pytest.skip("Debian's postgresql is not installed")
    with postgres_server() as url:
        yield url
