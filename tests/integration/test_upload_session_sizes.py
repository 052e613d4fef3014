"""Resumable uploads and sizes: what a claimed size is checked against, and what a chunk
with too many bytes costs (only itself)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings

DATA = os.urandom(50_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Uploads of at most 100 kB."""
    settings = make_settings(tmp_path / "data", max_upload_bytes=100_000)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def start(farm: Farm, sha: str, size: int) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        "/api/uploads", headers=farm.admin, json={"sha256": sha, "size": size}
    )
    return answer


def patch(farm: Farm, upload_id: str, offset: int, body: bytes | Iterator[bytes]) -> httpx.Response:
    answer: httpx.Response = farm.client.patch(
        f"/api/uploads/{upload_id}",
        headers={
            **farm.admin,
            "Upload-Offset": str(offset),
            "Content-Type": "application/octet-stream",
        },
        content=body,
    )
    return answer


def store(farm: Farm) -> None:
    answer = farm.client.put(f"/api/blobs/{SHA}", content=DATA, headers=farm.admin)
    assert answer.status_code == 201, answer.text


def test_a_stored_blob_with_a_claimed_size_that_disagrees_is_a_400(farm: Farm) -> None:
    store(farm)
    for wrong in (len(DATA) + 1, len(DATA) - 1, 0):
        answer = start(farm, SHA, wrong)
        assert answer.status_code == 400, answer.text
        assert f"stored with {len(DATA)} bytes, not {wrong}" in answer.json()["detail"]


def test_a_stored_blob_with_its_size_is_complete_at_once(farm: Farm) -> None:
    store(farm)
    answer = start(farm, SHA, len(DATA))
    assert answer.status_code == 200, answer.text
    assert answer.json()["complete"] is True and answer.json()["size"] == len(DATA)
    assert answer.headers["Upload-Offset"] == str(len(DATA))


@pytest.mark.parametrize("stored", [True, False], ids=["blob-stored", "blob-new"])
def test_a_size_over_the_limit_is_a_413_whether_or_not_the_blob_is_stored(
    farm: Farm, stored: bool
) -> None:
    if stored:
        store(farm)
    for size in (100_001, 10**20):
        answer = start(farm, SHA, size)
        assert answer.status_code == 413, answer.text
        assert "limit of 100000 bytes" in answer.json()["detail"]


def _pieces(data: bytes) -> Iterator[bytes]:
    """A body sent chunked: no Content-Length says beforehand how long it is."""
    yield data[: len(data) // 2]
    yield data[len(data) // 2 :]


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_chunk_past_the_announced_size_is_refused_and_the_upload_resumes(
    farm: Farm, how: str
) -> None:
    created = start(farm, SHA, len(DATA))
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    assert patch(farm, upload_id, 0, DATA[:20_000]).json()["offset"] == 20_000

    too_much = DATA[20_000:] + b"extra bytes"
    answer = patch(
        farm, upload_id, 20_000, too_much if how == "content-length" else _pieces(too_much)
    )
    assert answer.status_code == 413, answer.text
    assert "still at byte 20000" in answer.json()["detail"]
    assert answer.headers["Upload-Offset"] == "20000"

    status = farm.client.get(f"/api/uploads/{upload_id}", headers=farm.admin)
    assert status.status_code == 200, "the upload is still there"
    assert status.json()["offset"] == 20_000, "with the bytes it had before"
    done = patch(farm, upload_id, 20_000, DATA[20_000:])
    assert done.status_code == 200, done.text
    assert done.json()["complete"] is True
    assert (farm.data_dir / "blobs" / "sha256" / SHA[:2] / SHA[2:]).read_bytes() == DATA
