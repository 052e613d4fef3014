"""A worker newer than its manager says so in one line, rather than quoting the manager's
schema error ("capabilities.address: Extra inputs are not permitted (HTTP 400)"), which
reads like a bug of the worker."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from farmhand import __version__
from farmhand.client import FarmhandError
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.worker.agent import RenderJob, RenderOutcome, older_manager, run_worker
from tests.unit.test_worker_agent import _settings

URL = "http://manager:8080"
SCHEMA_REFUSAL = FarmhandError("capabilities.address: Extra inputs are not permitted", 400)
OURS = f"{__version__}, worker protocol {WORKER_PROTOCOL}"


def test_an_older_version_says_which_side_to_upgrade() -> None:
    assert older_manager(URL, "0.0.9", SCHEMA_REFUSAL) == (
        f"the manager at {URL} runs farmhand 0.0.9, older than this worker ({OURS}): "
        "upgrade the manager (or run a worker of 0.0.9)"
    )
    # Any refusal from an older manager: what it refuses may not name the capabilities.
    other = FarmhandError("name: String should match pattern", 400)
    assert older_manager(URL, "0.0.9", other) is not None


def test_a_refusal_of_the_capabilities_by_the_same_version_is_an_older_build() -> None:
    said = older_manager(URL, __version__, SCHEMA_REFUSAL)
    assert said is not None
    assert said.startswith(f"the manager at {URL} runs an older build of farmhand {__version__}")
    assert "upgrade the manager" in said
    unknown = older_manager(URL, None, SCHEMA_REFUSAL)
    assert unknown is not None and "runs an older build of farmhand than" in unknown


def test_other_refusals_are_not_blamed_on_the_version() -> None:
    token = FarmhandError("invalid registration token", 401)
    assert older_manager(URL, __version__, token) is None
    assert older_manager(URL, None, FarmhandError("cannot reach the manager")) is None
    assert older_manager(URL, "9.0.0", SCHEMA_REFUSAL) is not None, "still about capabilities"
    assert older_manager(URL, "9.0.0", token) is None
    assert older_manager(URL, "0.0.9", token) is None, "a token it does not know is not a version"


def test_the_worker_stops_with_that_line(tmp_path: Path) -> None:
    """Against a manager that refuses the registration as an older farmhand does."""

    def manager(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/runner/register":
            detail = "capabilities.protocol: Extra inputs are not permitted"
            return httpx.Response(400, json={"detail": detail})
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "0.0.9", "database": "x"})
        return httpx.Response(404, json={"detail": "not here"})

    settings = replace(_settings(tmp_path), manager_url=URL)

    def renderer(job: RenderJob) -> RenderOutcome:
        raise AssertionError("nothing is rendered")

    with capture_logs() as logs:
        code = run_worker(
            settings,
            renderer=renderer,
            blender_versions=["4.2.0"],
            transport=httpx.MockTransport(manager),
            stop=threading.Event(),
        )

    assert code == 2
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in errors] == [
        f"the manager at {URL} runs farmhand 0.0.9, older than this worker ({OURS}): "
        "upgrade the manager (or run a worker of 0.0.9)"
    ], json.dumps(logs, default=str)
