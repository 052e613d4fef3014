"""The manager's downloads answer `HEAD` as they answer `GET`, without a body.

Every download (a job's file, a frame, outputs.zip, inputs.zip, a runner's input)
answered `HEAD` with `405`: `curl -I`, a download manager, or a script checking a file's
size and ETag before fetching it could not. Now a `HEAD` gets the `GET`'s status and
headers (`206` and `Content-Range` for a `Range`, `416` past the end) and no body,
without a blob opened or a zip built, and is refused as the `GET` is (someone else's
job: `404`). A real manager (SQLite, blob store) in-process, as test_download_ranges.py.
"""

# ruff: noqa: F811  (the fixtures `downloads` and `zipped`, imported, are parameters)

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import pytest

from farmhand.manager.storage.blobs import BlobStore
from farmhand.manager.storage.zipplan import ZipPlan
from tests.integration.test_download_ranges import (  # noqa: F401 (fixtures)
    BIG,
    FRAME,
    SIZE,
    Downloads,
    downloads,
    get,
    zipped,
)


def head(downloads: Downloads, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    auth = downloads.runner if url.startswith("/api/runner/") else downloads.farm.admin
    answer = downloads.farm.client.head(url, headers={**auth, **headers})
    return answer.status_code, dict(answer.headers), answer.content


def urls(downloads: Downloads) -> dict[str, str]:
    job = f"/api/jobs/{downloads.job_id}"
    return {
        "file": downloads.file_url,
        "frame": downloads.frame_url,
        "templated frame": f"{downloads.frame_url}?template=shot-{{frame:03d}}.{{ext}}",
        "outputs.zip": f"{job}/outputs.zip",
        "inputs.zip": f"{job}/inputs.zip",
        "runner's input": downloads.input_url,
    }


def refuse_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any read of a blob or of a zip's bytes: a HEAD must not make one."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a HEAD read a download's bytes")

    monkeypatch.setattr(BlobStore, "iter_bytes", refused)
    monkeypatch.setattr(BlobStore, "open", refused)
    monkeypatch.setattr(ZipPlan, "iter_bytes", refused)


@pytest.mark.parametrize("asked", [None, "bytes=100-", "bytes=-5", "bytes=0-0"])
def test_head_answers_the_gets_status_and_headers_without_a_body(
    downloads: Downloads, asked: str | None
) -> None:
    """Whole (`200`) or a range (`206` with its `Content-Range` and that part's
    `Content-Length`): the headers are the GET's, to the byte, and there is no body."""
    ranged = {} if asked is None else {"Range": asked}
    answers = {name: get(downloads, url, **ranged) for name, url in urls(downloads).items()}
    for name, url in urls(downloads).items():
        code, headers, body = head(downloads, url, **ranged)
        got_code, got_headers, got_body = answers[name]
        assert code == (200 if asked is None else 206), name
        assert (code, headers) == (got_code, got_headers), name
        assert headers["content-length"] == str(len(got_body)), name
        assert body == b"", name
    if asked is None:  # what `curl -I` shows of a 3 MiB file
        headers = head(downloads, downloads.file_url)[1]
        assert headers["content-length"] == str(SIZE)
        assert headers["etag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
        assert headers["accept-ranges"] == "bytes"
        assert (
            headers["content-disposition"]
            == """attachment; filename="big.bin"; filename*=UTF-8''big.bin"""
        )


def test_head_reads_no_blob_and_builds_no_zip(
    downloads: Downloads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked of a 30 GB zip, a HEAD would otherwise read (and send) it all."""
    refuse_reads(monkeypatch)
    for name, url in urls(downloads).items():
        code, headers, body = head(downloads, url)
        assert (code, body) == (200, b""), name
        assert int(headers["content-length"]) > 0, name
    code, headers, _ = head(downloads, downloads.frame_url, Range="bytes=10-")
    assert (code, headers["content-length"]) == (206, str(len(FRAME) - 10))


def test_a_zip_head_takes_no_crc32(zipped: tuple[Downloads, int]) -> None:
    """A blob stored before CRC-32s were kept has its CRC-32 taken by its first zip's
    GET, which reads the whole file; a HEAD needs only the zip's length and ETag, which
    do not depend on it, so it reads nothing (the CRC-32 stays untaken) and still
    answers the GET's Content-Length and ETag."""
    downloads, job_id = zipped
    url = f"/api/jobs/{job_id}/inputs.zip"
    database = sqlite3.connect(downloads.farm.data_dir / "farmhand.sqlite3")
    try:
        with database:
            database.execute("UPDATE blobs SET crc32 = NULL")
        with pytest.MonkeyPatch.context() as monkeypatch:
            refuse_reads(monkeypatch)
            code, headers, body = head(downloads, url)
        assert (code, body) == (200, b"")
        untaken = database.execute("SELECT count(*) FROM blobs WHERE crc32 IS NULL").fetchone()
        assert untaken[0] > 0
    finally:
        database.close()
    expected = downloads.farm.client.get(url, headers=downloads.farm.admin)
    assert headers["etag"] == expected.headers["etag"]
    assert headers["content-length"] == str(len(expected.content))


def test_head_past_the_end_is_416_with_the_size(downloads: Downloads) -> None:
    for name, url in urls(downloads).items():
        whole = int(head(downloads, url)[1]["content-length"])
        code, headers, _ = head(downloads, url, Range=f"bytes={whole}-")
        assert (code, headers["content-range"]) == (416, f"bytes */{whole}"), name


def test_head_is_refused_as_get_is(downloads: Downloads) -> None:
    """Someone else's job, a job or file that does not exist, no token: the GET's
    answer, so a HEAD tells nobody whether a job or a file exists."""
    farm = downloads.farm
    made = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": "mallory"})
    assert made.status_code == 201, made.text
    mallory = {"Authorization": f"Bearer {made.json()['token']}"}
    job = f"/api/jobs/{downloads.job_id}"
    missing = f"/api/jobs/{downloads.job_id + 1000}"
    asked = [
        (mallory, downloads.file_url),
        (mallory, downloads.frame_url),
        (mallory, f"{job}/outputs.zip"),
        (mallory, f"{job}/inputs.zip"),
        (mallory, f"{missing}/outputs.zip"),
        (farm.admin, f"{job}/outputs/999"),
        (farm.admin, f"{job}/files/999999/download"),
        ({}, f"{job}/outputs.zip"),
        (mallory, downloads.input_url),  # a person is not a runner
        (downloads.runner, f"/api/runner/files/{downloads.job_id}/no-such-file"),
    ]
    for who, url in asked:
        got = farm.client.get(url, headers=who)
        headed = farm.client.head(url, headers=who)
        assert got.status_code in (401, 404), (url, got.status_code)
        assert headed.status_code == got.status_code, url
        assert headed.content == b"" or headed.content == got.content, url
    assert farm.client.head(f"{job}/outputs.zip", headers=mallory).status_code == 404
