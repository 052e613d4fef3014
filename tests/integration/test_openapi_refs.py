"""Every `$ref` in the published OpenAPI schemas names something the schema defines.

A dangling reference is invisible in `/docs` but breaks every client generator and
validator that reads `/openapi.json`, and fuzzers skip what it should describe: the
manager's `POST /api/jobs` pointed its JSON body at a `JobCreate` component nothing
defined, so the route with the most validation had no body schema at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from farmhand.node import NodeSettings, create_node_app
from farmhand.orchestrator import OrchestratorSettings, create_orchestrator_app
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import Farm


def references(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """(where it is, what it names) for every `$ref` in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from references(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from references(item, f"{where}/{index}")


def resolve(document: Any, ref: str) -> bool:
    """Whether `ref`, a reference within `document` (`#/a/b`), names something there."""
    if not ref.startswith("#"):
        return False  # the schemas are self-contained: nothing is fetched from elsewhere
    node = document
    for raw in ref.removeprefix("#").split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdecimal() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def dangling(document: dict[str, Any]) -> list[str]:
    return [f"{where}: {ref}" for where, ref in references(document) if not resolve(document, ref)]


def test_the_walk_finds_a_dangling_reference() -> None:
    document = {
        "paths": {"/a": {"schema": {"$ref": "#/components/schemas/JobCreate"}}},
        "components": {"schemas": {"Job": {"properties": {"x": {"$ref": "#/components"}}}}},
    }
    assert dangling(document) == ["#/paths//a/schema: #/components/schemas/JobCreate"]


def test_every_reference_in_the_managers_schema_resolves(farm: Farm) -> None:
    answer = farm.client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert len(list(references(document))) > 50, "the walk sees the schema's references"
    assert dangling(document) == []


def test_the_managers_job_submission_describes_its_json_body(farm: Farm) -> None:
    """Both kinds of JSON job, each with the keys it cannot do without."""
    document = farm.client.get("/openapi.json").json()
    body = document["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    kinds = {branch["title"]: branch for branch in schema["anyOf"]}
    assert set(kinds["JobCreate"]["required"]) == {"main_file", "files"}
    assert set(kinds["SharedJobCreate"]["required"]) == {"blend_path", "storage"}
    assert kinds["SharedJobCreate"]["properties"]["storage"]["enum"] == ["shared"]
    assert "multipart/form-data" in body


def other_servers(tmp_path: Path) -> dict[str, FastAPI]:
    node = NodeSettings(
        blend=tmp_path / "scene.blend",
        output=tmp_path / "out",
        install=BlenderInstall("executable", "/nonexistent/blender", "0.0-fake"),
    )
    orchestrator = OrchestratorSettings(nodes=("http://node-a:3000",))
    return {
        "node": create_node_app(node, run=lambda _job: None),
        "orchestrator": create_orchestrator_app(
            orchestrator, httpx.MockTransport(lambda _request: httpx.Response(503))
        ),
    }


@pytest.mark.parametrize("server", ["node", "orchestrator"])
def test_every_reference_in_the_node_and_orchestrator_schemas_resolves(
    tmp_path: Path, server: str
) -> None:
    with TestClient(other_servers(tmp_path)[server]) as client:
        document = client.get("/openapi.json").json()
    assert document["paths"]
    assert dangling(document) == []
