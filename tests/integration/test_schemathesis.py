"""Property-based fuzzing of the whole API from its own OpenAPI schema: no 5xx, ever.

Schemathesis generates requests (valid and not) for every operation and sends them, as
an admin (the caller who may reach the most code; runner routes as a runner holding a
task), to a real `farmhand manager`
process on 127.0.0.1, the one place where lifespan, middleware and the error handlers
are all exactly as in production. Any 500 fails the operation's test; the manager's
log (printed on failure) has the traceback.

Examples are bounded (and derandomized, so a failure reproduces) to keep the run
around a minute. Left out: the live event stream (it never ends), and revoking API
tokens (it could revoke the very token the run uses, leaving nothing but 401s).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from farmhand.localfarm import LocalFarm
from farmhand.manager.app import create_app
from tests.integration.conftest import make_settings, submit_stand_in

EXCLUDED = (
    ("GET", "/api/events"),
    ("DELETE", "/api/tokens/{token_id}"),
)


@pytest.fixture(scope="module")
def live_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFarm, str]]:
    """A real manager, and the secret of a runner that holds a task on it."""
    farm = LocalFarm(tmp_path_factory.mktemp("schemathesis"))
    farm.start_manager()
    try:
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        # Something to find: a job with tasks, a runner holding one, a registration token.
        with httpx.Client(base_url=farm.url, timeout=30) as client:
            submit_stand_in(client, admin, frame_start=1, frame_end=4)
            registered = client.post(
                "/api/runner/register", json={"token": farm.runner_token, "name": "r1"}
            )
            secret = registered.json()["secret"]
            client.get(
                "/api/runner/tasks",
                params={"wait": 0},
                headers={"Authorization": f"Bearer {secret}"},
            )
            client.post("/api/admin/runner-tokens", headers=admin, json={})
        yield farm, secret
    except BaseException:
        print(farm.logs(200), file=sys.stderr)
        raise
    finally:
        farm.stop()


def _load_schema() -> schemathesis.BaseSchema:
    """The schema of this code's app, at collection time (an app on a throwaway dir)."""
    with tempfile.TemporaryDirectory() as directory:
        app = create_app(make_settings(Path(directory) / "data"))
        document = app.openapi()
        app.state.farm.db.dispose()
    schema: schemathesis.BaseSchema = schemathesis.openapi.from_dict(document)
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    return schema


def _operations(schema: schemathesis.BaseSchema) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation, sorted; a schema error raised as it is."""
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append((result.ok().method.upper(), result.ok().path))
    return sorted(found)


SCHEMA = _load_schema()
OPERATIONS = _operations(SCHEMA)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_makes_the_manager_fail(
    method: str, path: str, live_farm: tuple[LocalFarm, str]
) -> None:
    farm, runner_secret = live_farm
    operation = SCHEMA[path][method]
    # Runner routes are fuzzed as the runner (an admin would only ever get 401 there).
    token = runner_secret if path.startswith("/api/runner/") else farm.admin_token
    headers = {"Authorization": f"Bearer {token}"}
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

    @given(case=strategy)
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def probe(case: schemathesis.Case[Any]) -> None:
        if (method, path) == ("GET", "/api/runner/tasks"):
            # The claim long-polls (20 s by default) when no task is free: keep the wait
            # short so twenty examples take seconds, not minutes. Junk values of `wait`
            # (negative mode) are still sent as generated.
            query = dict(case.query or {})
            wait = query.get("wait")
            if wait is None or (isinstance(wait, int | float) and not isinstance(wait, bool)):
                query["wait"] = min(wait or 0, 0.2)
                case.query = query
        response = case.call(base_url=farm.url, headers=headers, timeout=30)
        if response.status_code >= 500:
            print(farm.logs(80), file=sys.stderr)
        case.validate_response(response, checks=[not_a_server_error])

    probe()


def test_the_schema_is_fuzzed_at_all() -> None:
    """Guards against a filter or loader change that would leave nothing to test."""
    assert len(OPERATIONS) > 30
    assert ("POST", "/api/jobs") in OPERATIONS


def test_no_part_of_the_schema_is_skipped() -> None:
    """Schemathesis leaves out a body or parameter whose `$ref` it cannot resolve, and
    the operation's test then passes without it: `POST /api/jobs` was fuzzed with
    multipart bodies only while its JSON body pointed at a missing `JobCreate`."""
    skipped = {
        f"{method} {path}": [
            f"{part.location}: {part.reference}" for part in SCHEMA[path][method].skipped_parameters
        ]
        for method, path in OPERATIONS
        if SCHEMA[path][method].skipped_parameters
    }
    assert skipped == {}


@pytest.mark.parametrize(
    ("kind", "keys"),
    [("JobCreate", {"main_file", "files"}), ("SharedJobCreate", {"storage", "blend_path"})],
)
def test_job_submission_is_fuzzed_with_json_jobs(kind: str, keys: set[str]) -> None:
    """The fuzzer's valid cases for `POST /api/jobs` include JSON jobs of each kind,
    with what makes them one (not just any JSON object)."""
    strategy = SCHEMA["/api/jobs"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE)

    def is_a_json_job(case: schemathesis.Case[Any]) -> bool:
        body = case.body
        return (
            case.media_type == "application/json"
            and isinstance(body, dict)
            and keys <= body.keys()
            and (kind == "JobCreate") != (body.get("storage") == "shared")
        )

    found = find(
        strategy,
        is_a_json_job,
        settings=settings(max_examples=500, database=None, suppress_health_check=list(HealthCheck)),
    )
    assert found.media_type == "application/json"
