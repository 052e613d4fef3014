"""Tracing: a manager started with OpenTelemetry's environment sends a span per request
to an OTLP collector, and its log lines carry the trace they belong to.

The collector here is a few lines of `http.server` that keeps what it is sent and decodes
it with OpenTelemetry's own protobuf classes, as a real collector would.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from farmhand.localfarm import local_farm

pytestmark = pytest.mark.slow


class Collector(http.server.ThreadingHTTPServer):
    spans: list[dict[str, Any]]


class _Receive(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.server.spans.append({  # type: ignore[attr-defined]
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "service": service.get("service.name"),
                            "attributes": {
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            },
                        })  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), _Receive)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_requests_become_spans_and_log_lines_name_their_trace(
    tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "farmhand-manager")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("FARMHAND_LOG_JSON", "1")
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        with httpx.Client(base_url=farm.url, timeout=30) as client:
            assert client.get("/api/jobs", headers=admin).status_code == 200
            assert client.get("/api/jobs").status_code == 401
            registered = client.post(
                "/api/runner/register", json={"token": farm.runner_token, "name": "traced"}
            )
            assert registered.status_code == 201

        def route(path: str, code: int) -> dict[str, Any] | None:
            return next(
                (
                    span
                    for span in collector.spans
                    if span["attributes"].get("http.route") == path
                    and span["attributes"].get("http.response.status_code") == code
                ),
                None,
            )

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            route("/api/jobs", 200)
            and route("/api/jobs", 401)
            and route("/api/runner/register", 201)
        ):
            time.sleep(0.1)
        listed, refused = route("/api/jobs", 200), route("/api/jobs", 401)
        assert listed and refused, collector.spans
        assert listed["service"] == "farmhand-manager"
        assert listed["name"] == "GET /api/jobs", listed
        registered_span = route("/api/runner/register", 201)
        assert registered_span is not None

        # The manager's "runner registered" line names the trace of its request.
        log = farm.logs()
        line = next(line for line in log.splitlines() if '"runner registered"' in line)
        assert f'"trace_id": "{registered_span["trace_id"]}"' in line, line
