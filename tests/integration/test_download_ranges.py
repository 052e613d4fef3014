"""Single-file downloads answer Range requests, so a cut-off download resumes.

Every download answered `200` with the whole file: a 600 MB video cut off near its end
was fetched again from zero, and `curl -C -`, browsers and download managers could not
resume. Now a job's file, a frame and a runner's input answer `Range` (RFC 9110 §14):
the bytes asked for (`206`), a range past the end refused (`416`, with the size), a
header that does not parse ignored (the whole file), and `If-Range` with another ETag
(the file changed) the whole file, never a part of another one spliced on. A real
manager (SQLite, blob store) in-process, and a 3 MiB input, so that parts cross the
blob store's 1 MiB chunks.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from farmhand.client import FarmhandClient
from farmhand.client.errors import FarmhandError
from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes
from tests.integration.test_storage import put

SIZE = 3 * 1024 * 1024 + 123
BIG = hashlib.shake_256(b"a big input").digest(SIZE)
FRAME = png_bytes(width=64, height=48, colour="green")


@dataclass
class Downloads:
    farm: Farm
    runner: dict[str, str]
    job_id: int
    file_url: str
    """The big input's `GET /api/jobs/{id}/files/{file_id}/download`."""
    frame_url: str
    input_url: str
    """The big input, as a runner holding the job's task fetches it."""


@pytest.fixture
def downloads(farm: Farm) -> Downloads:
    blend, big = put(farm, FAKE_BLEND), put(farm, BIG)
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={
            "main_file": "scene.blend",
            "files": {"scene.blend": blend, "cache/big.bin": big},
            "frame_start": 1,
            "frame_end": 1,
            "name": "Ranges",
        },
    )
    assert answer.status_code == 202, answer.text
    job_id = int(answer.json()["id"])
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
    sent = farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("0001.png", FRAME, "image/png")},
    )
    assert sent.status_code == 201, sent.text
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    (file_id,) = [f["id"] for f in files if f["path"] == "cache/big.bin"]
    return Downloads(
        farm,
        runner,
        job_id,
        f"/api/jobs/{job_id}/files/{file_id}/download",
        f"/api/jobs/{job_id}/outputs/1",
        f"/api/runner/files/{job_id}/cache/big.bin",
    )


def get(downloads: Downloads, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    auth = downloads.runner if url.startswith("/api/runner/") else downloads.farm.admin
    answer = downloads.farm.client.get(url, headers={**auth, **headers})
    return answer.status_code, dict(answer.headers), answer.content


ETAG = f'"{hashlib.sha256(BIG).hexdigest()}"'


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        ("bytes=1000-2099999", 1000, 2099999),  # across two of the store's 1 MiB chunks
        ("bytes=0-0", 0, 0),
        (f"bytes={SIZE - 10}-", SIZE - 10, SIZE - 1),  # a resume: from here to the end
        (f"bytes=5-{SIZE + 1000}", 5, SIZE - 1),  # an end past the file's is its end
        ("bytes=-100", SIZE - 100, SIZE - 1),  # the last 100 bytes
        (f"bytes=-{SIZE + 1}", 0, SIZE - 1),  # a suffix longer than the file: all of it
        ("BYTES = 7 - 9", 7, 9),
    ],
)
def test_a_range_of_a_file_is_those_bytes(
    downloads: Downloads, asked: str, first: int, last: int
) -> None:
    code, headers, body = get(downloads, downloads.file_url, Range=asked)
    assert code == 206
    assert body == BIG[first : last + 1]
    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert headers["content-length"] == str(last - first + 1)
    assert headers["etag"] == ETAG
    assert headers["content-disposition"].startswith("attachment")


def test_the_whole_file_says_ranges_are_accepted(downloads: Downloads) -> None:
    code, headers, body = get(downloads, downloads.file_url)
    assert (code, body) == (200, BIG)
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"] == ETAG
    assert headers["content-length"] == str(SIZE)
    assert "content-range" not in headers


@pytest.mark.parametrize("asked", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(downloads: Downloads, asked: str) -> None:
    code, headers, body = get(downloads, downloads.file_url, Range=asked)
    assert code == 416
    assert headers["content-range"] == f"bytes */{SIZE}"
    assert b"past the end" in body


@pytest.mark.parametrize(
    "asked",
    [
        "bytes=9-2",  # last before first: invalid
        "bytes=-",
        "bytes=abc",
        "bytes 0-10",
        "pages=0-10",  # a unit the manager does not know
        "bytes=0-1,5-6",  # several ranges: answered whole (RFC 9110 allows it)
    ],
)
def test_a_range_that_does_not_parse_is_ignored(downloads: Downloads, asked: str) -> None:
    code, headers, body = get(downloads, downloads.file_url, Range=asked)
    assert (code, body) == (200, BIG)
    assert headers["accept-ranges"] == "bytes"


def test_an_enormous_number_is_past_the_end_not_an_error(downloads: Downloads) -> None:
    code, headers, _ = get(downloads, downloads.file_url, Range="bytes=1" + "0" * 5000 + "-")
    assert (code, headers["content-range"]) == (416, f"bytes */{SIZE}")
    code, _, body = get(downloads, downloads.file_url, Range="bytes=10-1" + "0" * 5000)
    assert (code, body) == (206, BIG[10:])


def test_if_range_resumes_only_the_same_file(downloads: Downloads) -> None:
    same = get(downloads, downloads.file_url, Range="bytes=100-", **{"If-Range": ETAG})
    assert (same[0], same[2]) == (206, BIG[100:])
    for validator in (
        f'"{hashlib.sha256(b"other bytes").hexdigest()}"',  # the file was replaced
        f"W/{ETAG}",  # weak: never good for a range
        "Wed, 21 Oct 2015 07:28:00 GMT",  # a date: these answers have no Last-Modified
    ):
        code, headers, body = get(
            downloads, downloads.file_url, Range="bytes=100-", **{"If-Range": validator}
        )
        assert (code, body) == (200, BIG), validator
        assert "content-range" not in headers


def test_a_frame_answers_ranges(downloads: Downloads) -> None:
    code, headers, body = get(downloads, downloads.frame_url, Range="bytes=-20")
    assert (code, body) == (206, FRAME[-20:])
    assert headers["content-range"] == f"bytes {len(FRAME) - 20}-{len(FRAME) - 1}/{len(FRAME)}"
    assert headers["x-output-name"] == "frames/0001.png"
    code, headers, body = get(downloads, downloads.frame_url, Range=f"bytes={len(FRAME)}-")
    assert (code, headers["content-range"]) == (416, f"bytes */{len(FRAME)}")
    code, headers, body = get(downloads, downloads.frame_url)
    assert (code, body, headers["accept-ranges"]) == (200, FRAME, "bytes")


def test_a_runners_input_answers_ranges(downloads: Downloads) -> None:
    code, headers, body = get(downloads, downloads.input_url, Range="bytes=2000000-")
    assert (code, body) == (206, BIG[2000000:])
    assert headers["x-content-sha256"] == hashlib.sha256(BIG).hexdigest()
    code, _, body = get(downloads, downloads.input_url, Range="bytes=2000000-", **{"If-Range": "x"})
    assert (code, body) == (200, BIG)


# ------------------------------------------------------------ a job's zips too

PIECES = [hashlib.shake_256(f"input {n}".encode()).digest(700_000 + n) for n in range(3)]
"""Three inputs of a zip (`a.bin`, `b.bin`, `c.bin`: its first three files)."""


@pytest.fixture
def zipped(downloads: Downloads) -> tuple[Downloads, int]:
    """`downloads`, and a job whose inputs.zip holds a.bin, b.bin, c.bin, scene.blend."""
    files = {name: put(downloads.farm, data) for name, data in zip("abc", PIECES, strict=True)}
    answer = downloads.farm.client.post(
        "/api/jobs",
        headers=downloads.farm.admin,
        json={
            "main_file": "scene.blend",
            "files": {"scene.blend": put(downloads.farm, FAKE_BLEND)}
            | {f"{name}.bin": sha for name, sha in files.items()},
            "frame_start": 1,
            "frame_end": 1,
        },
    )
    assert answer.status_code == 202, answer.text
    return downloads, int(answer.json()["id"])


def blob_file(farm: Farm, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]


def test_a_zip_whole_or_in_pieces_is_one_valid_zip(
    zipped: tuple[Downloads, int], tmp_path: Path
) -> None:
    """A 30 GB outputs.zip cut off at 29 GB started again from zero: a zip was built as
    it was sent, never the same bytes twice. Now its length and ETag are known up front
    and any range of it is served; the pieces put together are the whole, byte for
    byte, and a zip that zipfile and `unzip -t` accept."""
    downloads, job_id = zipped
    url = f"/api/jobs/{job_id}/inputs.zip"
    code, headers, whole = get(downloads, url)
    assert code == 200
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-length"] == str(len(whole))
    etag = headers["etag"]
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert archive.testzip() is None
        assert {info.filename: archive.read(info) for info in archive.infolist()} == {
            "a.bin": PIECES[0], "b.bin": PIECES[1], "c.bin": PIECES[2], "scene.blend": FAKE_BLEND
        }  # fmt: skip
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    pieces, start = [], 0
    for step in (1, 29, 700_000, 1_048_576, 3):  # across headers, files and chunks
        code, headers, body = get(downloads, url, Range=f"bytes={start}-{start + step - 1}")
        assert (code, headers["etag"], len(body)) == (206, etag, step)
        assert headers["content-range"] == f"bytes {start}-{start + step - 1}/{len(whole)}"
        pieces.append(body)
        start += step
    code, _, rest = get(downloads, url, Range=f"bytes={start}-", **{"If-Range": etag})
    assert code == 206
    assert b"".join(pieces) + rest == whole
    assert get(downloads, url)[2] == whole  # the same bytes every time
    (tmp_path / "inputs.zip").write_bytes(whole)
    tested = subprocess.run(["unzip", "-t", str(tmp_path / "inputs.zip")], capture_output=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_range_of_a_zip_reads_only_the_files_it_touches(zipped: tuple[Downloads, int]) -> None:
    """A range in the middle of the third file is served with the first two files gone
    from disk: only what the range needs is read (a resume at 29 GB of 30 does not read
    the first 29). The whole zip then is cut off, never a complete-looking one."""
    downloads, job_id = zipped
    url = f"/api/jobs/{job_id}/inputs.zip"
    whole = get(downloads, url)[2]
    middle = whole.index(PIECES[2]) + len(PIECES[2]) // 2
    blob_file(downloads.farm, PIECES[0]).unlink()
    blob_file(downloads.farm, PIECES[1]).unlink()
    code, _, body = get(downloads, url, Range=f"bytes={middle}-{middle + 99}")
    assert (code, body) == (206, whole[middle : middle + 100])
    code, _, body = get(downloads, url, Range=f"bytes={middle}-")  # to the zip's end
    assert (code, body) == (206, whole[middle:])
    code, _, body = get(downloads, url)  # cut off at a.bin (in-process: no error)
    assert code == 200
    assert len(body) < len(whole)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(body))


def test_a_zip_answers_if_range_and_416(downloads: Downloads) -> None:
    url = f"/api/jobs/{downloads.job_id}/outputs.zip"
    code, headers, whole = get(downloads, url)
    etag = headers["etag"]
    code, headers, body = get(downloads, url, Range="bytes=10-", **{"If-Range": etag})
    assert (code, body) == (206, whole[10:])
    # Another zip's ETag (this job's zip under another template, whose names differ):
    # its part must not be spliced on; the whole zip comes instead.
    templated = f"{url}?template=shot-{{frame:04d}}.{{ext}}"
    other = get(downloads, templated)[1]["etag"]
    assert other != etag
    code, headers, body = get(downloads, url, Range="bytes=10-", **{"If-Range": other})
    assert (code, body) == (200, whole)
    assert "content-range" not in headers
    code, headers, body = get(downloads, url, Range=f"bytes={len(whole)}-")
    assert (code, headers["content-range"]) == (416, f"bytes */{len(whole)}")


def test_a_blob_keeps_its_crc32_and_an_old_one_gets_it(downloads: Downloads) -> None:
    """A frame's CRC-32 is stored with its blob as it is uploaded; a blob stored before
    CRC-32s were kept (null) has it taken by its first zip and stored, so no later zip
    reads its file before sending it."""
    sha = hashlib.sha256(FRAME).hexdigest()
    database = sqlite3.connect(downloads.farm.data_dir / "farmhand.sqlite3")
    try:
        query = "SELECT crc32 FROM blobs WHERE sha256 = ?"
        assert database.execute(query, (sha,)).fetchone() == (zlib.crc32(FRAME),)
        with database:
            database.execute("UPDATE blobs SET crc32 = NULL WHERE sha256 = ?", (sha,))
        code, _, body = get(downloads, f"/api/jobs/{downloads.job_id}/outputs.zip")
        assert code == 200
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.read("frames/0001.png") == FRAME  # its CRC checked
        assert database.execute(query, (sha,)).fetchone() == (zlib.crc32(FRAME),)
    finally:
        database.close()


# ---------------------------------------------------------------- the client resumes


class Manager(httpx.BaseTransport):
    """The in-process manager as a `FarmhandClient`'s transport, which can cut its next
    answer off after `cut_after` bytes (a dropped connection), and notes each request's
    range headers and each answer's status."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.cut_after: int | None = None
        self.seen: list[tuple[str | None, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.farm.client.request(
            request.method, request.url.raw_path.decode(), headers=dict(request.headers)
        )
        self.seen.append(
            (request.headers.get("range"), request.headers.get("if-range"), answer.status_code)
        )
        headers = {k: v for k, v in answer.headers.items() if k != "content-length"}
        if self.cut_after is None:
            return httpx.Response(answer.status_code, headers=headers, content=answer.content)
        cut, self.cut_after = self.cut_after, None
        return httpx.Response(answer.status_code, headers=headers, stream=Cut(answer.content, cut))


class Cut(httpx.SyncByteStream):
    def __init__(self, content: bytes, after: int) -> None:
        self.content, self.after = content, after

    def __iter__(self) -> Iterator[bytes]:
        yield self.content[: self.after]
        raise httpx.ReadError("connection reset by peer")


def test_a_cut_off_download_resumes_where_it_stopped(downloads: Downloads, tmp_path: Path) -> None:
    manager = Manager(downloads.farm)
    dest = tmp_path / "out" / "big.bin"
    file_id = int(downloads.file_url.split("/")[-2])
    sha = hashlib.sha256(BIG).hexdigest()
    progress: list[int] = []
    with FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as client:
        manager.cut_after = 1_500_000
        with pytest.raises(FarmhandError):
            client.download_file(downloads.job_id, file_id, dest, sha256=sha)
        part = dest.with_name("big.bin.part")
        held = part.stat().st_size  # kept, for the next try (what had been written)
        assert 0 < held <= 1_500_000
        assert part.read_bytes() == BIG[:held]
        assert not dest.exists()
        client.download_file(downloads.job_id, file_id, dest, progress.append, sha256=sha)
    assert dest.read_bytes() == BIG
    assert not part.exists()
    assert manager.seen[-1] == (f"bytes={held}-", ETAG, 206)  # only the rest was sent
    assert sum(progress) == SIZE  # the part's bytes count as done


def test_a_part_of_another_file_is_not_spliced_on(downloads: Downloads, tmp_path: Path) -> None:
    """A `.part` left by a file that had this path before (a frame rendered again): the
    manager sends the rest of its file, which does not make it, so it is fetched whole."""
    manager = Manager(downloads.farm)
    dest = tmp_path / "big.bin"
    dest.with_name("big.bin.part").write_bytes(b"\0" * 5000)
    file_id = int(downloads.file_url.split("/")[-2])
    sha = hashlib.sha256(BIG).hexdigest()
    progress: list[int] = []
    with FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as client:
        client.download_file(downloads.job_id, file_id, dest, progress.append, sha256=sha)
    assert dest.read_bytes() == BIG
    assert manager.seen == [("bytes=5000-", ETAG, 206), (None, None, 200)]
    # The spliced bytes are taken back out of the progress: not twice SIZE (a bar at 200%).
    assert sum(progress) == SIZE
    running = [sum(progress[: n + 1]) for n in range(len(progress))]
    assert running[-1] == max(running)


def test_a_finished_part_is_kept_without_fetching(downloads: Downloads, tmp_path: Path) -> None:
    """Cut off between its last byte and its rename: the manager says there is no more
    (416), the part is the file, and is renamed."""
    manager = Manager(downloads.farm)
    dest = tmp_path / "big.bin"
    dest.with_name("big.bin.part").write_bytes(BIG)
    file_id = int(downloads.file_url.split("/")[-2])
    with FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as client:
        client.download_file(
            downloads.job_id, file_id, dest, sha256=hashlib.sha256(BIG).hexdigest()
        )
    assert dest.read_bytes() == BIG
    assert manager.seen == [(f"bytes={SIZE}-", ETAG, 416)]


def test_bytes_that_are_not_the_file_are_not_kept(downloads: Downloads, tmp_path: Path) -> None:
    """A file fetched whole is hashed too: bytes that are not the listed SHA-256 (the
    file changed while it was fetched) fail the file, and leave neither it nor a part."""
    dest = tmp_path / "out" / "big.bin"
    file_id = int(downloads.file_url.split("/")[-2])
    transport = Manager(downloads.farm)
    with (
        FarmhandClient("http://manager", downloads.farm.admin_token, transport=transport) as client,
        pytest.raises(FarmhandError, match="not the manager's file"),
    ):
        client.download_file(downloads.job_id, file_id, dest, sha256="ab" * 32)
    assert list(dest.parent.iterdir()) == []


class Held(httpx.SyncByteStream):
    """An answer that sends its first `after` bytes, sets `sent`, and sends the rest
    only once `go` is set: a download caught in the middle (a slow link)."""

    def __init__(
        self, content: bytes, after: int, sent: threading.Event, go: threading.Event
    ) -> None:
        self.content, self.after, self.sent, self.go = content, after, sent, go

    def __iter__(self) -> Iterator[bytes]:
        yield self.content[: self.after]
        self.sent.set()
        assert self.go.wait(30), "never let go"
        yield self.content[self.after :]


class Slow(Manager):
    """The manager, whose answers are `Held`."""

    def __init__(self, farm: Farm, after: int) -> None:
        super().__init__(farm)
        self.after = after
        self.sent, self.go = threading.Event(), threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = super().handle_request(request)
        held = Held(answer.read(), self.after, self.sent, self.go)
        return httpx.Response(answer.status_code, headers=answer.headers, stream=held)


def test_a_second_download_at_once_leaves_the_first_ones_part_alone(
    downloads: Downloads, tmp_path: Path
) -> None:
    """Two `farmhand download`s into one folder at once: the second took the first's
    growing `.part` for a cut-off one and appended to it, and one of them renamed bytes
    that were not the file. The second now fails that file with one line, and the first
    finishes with the file's bytes."""
    dest = tmp_path / "big.bin"
    file_id = int(downloads.file_url.split("/")[-2])
    sha = hashlib.sha256(BIG).hexdigest()
    slow = Slow(downloads.farm, 1_000_000)
    failed: list[BaseException] = []

    def first() -> None:
        with FarmhandClient("http://manager", downloads.farm.admin_token, transport=slow) as c:
            try:
                c.download_file(downloads.job_id, file_id, dest, sha256=sha)
            except BaseException as exc:
                failed.append(exc)

    writing = threading.Thread(target=first)
    writing.start()
    try:
        assert slow.sent.wait(30), failed  # the first download is under way
        second = Manager(downloads.farm)
        with (
            FarmhandClient("http://manager", downloads.farm.admin_token, transport=second) as c,
            pytest.raises(FarmhandError) as refused,
        ):
            c.download_file(downloads.job_id, file_id, dest, sha256=sha)
        assert str(refused.value) == (
            f"another download is writing {dest}.part: let it finish (or stop it), then "
            "download again"
        )
        assert second.seen == [], "the second asked nothing"
        assert not dest.exists()
    finally:
        slow.go.set()
        writing.join(30)
    assert not writing.is_alive()
    assert failed == []
    assert dest.read_bytes() == BIG
    assert not dest.with_name("big.bin.part").exists()


@pytest.mark.parametrize("resuming", [True, False], ids=["resuming", "whole"])
def test_a_part_that_is_a_link_is_not_followed(
    downloads: Downloads, tmp_path: Path, resuming: bool
) -> None:
    """In a shared output folder, a `.part` planted as a link to another file made the
    download overwrite that file and rename the link into the frame's place. Now the
    file fails with one line; the linked file is untouched and nothing is asked."""
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"precious data")
    dest = tmp_path / "out" / "big.bin"
    dest.parent.mkdir()
    dest.with_name("big.bin.part").symlink_to(victim)
    file_id = int(downloads.file_url.split("/")[-2])
    manager = Manager(downloads.farm)
    sha = hashlib.sha256(BIG).hexdigest() if resuming else None
    with (
        FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as c,
        pytest.raises(FarmhandError) as refused,
    ):
        c.download_file(downloads.job_id, file_id, dest, sha256=sha)
    assert "is a symbolic link, not a download's part: not followed" in str(refused.value)
    assert victim.read_bytes() == b"precious data"
    assert not dest.exists() and dest.with_name("big.bin.part").is_symlink()


def test_a_part_that_is_a_hard_link_is_not_written(downloads: Downloads, tmp_path: Path) -> None:
    """A `.part` hard-linked to a file elsewhere (a snapshot made with `cp -al`, say)
    was written through, changing that file too; it is now refused like a symlink."""
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"precious data")
    dest = tmp_path / "out" / "big.bin"
    dest.parent.mkdir()
    os.link(victim, dest.with_name("big.bin.part"))
    file_id = int(downloads.file_url.split("/")[-2])
    manager = Manager(downloads.farm)
    with (
        FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as c,
        pytest.raises(FarmhandError) as refused,
    ):
        c.download_file(downloads.job_id, file_id, dest, sha256=hashlib.sha256(BIG).hexdigest())
    assert "is a hard link to another file" in str(refused.value)
    assert victim.read_bytes() == b"precious data"
    assert not dest.exists()


# ---------------------------------------------------------- the client resumes zips


def test_a_cut_off_zip_download_resumes_where_it_stopped(
    zipped: tuple[Downloads, int], tmp_path: Path
) -> None:
    """`farmhand download --zip` (a zip into a folder, named by the manager) cut off
    keeps its part and the zip's ETag next to it, and the next one asks for the rest
    only (`Range` and `If-Range`): the same file as one download whole."""
    downloads, job_id = zipped
    whole = get(downloads, f"/api/jobs/{job_id}/inputs.zip")
    etag = whole[1]["etag"]
    manager = Manager(downloads.farm)
    out = tmp_path / "out"
    progress: list[int] = []
    sizes: list[int] = []
    with FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as client:
        manager.cut_after = 1_500_000  # in a.bin's middle, past the client's first chunk
        with pytest.raises(FarmhandError):
            client.download_inputs_zip(job_id, out, into=True)
        (part,) = out.glob("*.part")
        held = part.stat().st_size
        assert 0 < held <= 1_500_000
        assert part.read_bytes() == whole[2][:held]
        assert part.with_name(part.name + ".etag").read_text().strip() == etag
        path = client.download_inputs_zip(
            job_id, out, into=True, on_chunk=progress.append, on_size=sizes.append
        )
    assert path.read_bytes() == whole[2]
    assert path.name == part.name.removesuffix(".part")
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no part, no tag left
    assert manager.seen[-1] == (f"bytes={held}-", etag, 206)  # only the rest was sent
    assert sum(progress) == len(whole[2])  # the part's bytes count as done
    assert sizes == [len(whole[2])]  # the bar's total: the whole zip, not the rest


def test_a_part_of_another_zip_is_not_spliced_on(downloads: Downloads, tmp_path: Path) -> None:
    """A part left by a zip that is not the manager's any more (another template, a
    frame rendered again: another ETag) is replaced by the whole zip."""
    url = f"/api/jobs/{downloads.job_id}/outputs.zip"
    whole = get(downloads, url)[2]
    dest = tmp_path / "zips" / "outputs.zip"
    dest.parent.mkdir()
    part = dest.with_name("outputs.zip.part")
    part.write_bytes(b"PK" + b"x" * 98)
    part.with_name("outputs.zip.part.etag").write_text('"zip-another"\n')
    manager = Manager(downloads.farm)
    sizes: list[int] = []
    with FarmhandClient("http://manager", downloads.farm.admin_token, transport=manager) as client:
        client.download_outputs_zip(downloads.job_id, dest, on_size=sizes.append)
    assert dest.read_bytes() == whole
    assert sizes == [len(whole)]
    assert manager.seen == [("bytes=100-", '"zip-another"', 200)]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["outputs.zip"]


def test_a_runners_input_deleted_before_its_answer_began_is_a_404(downloads: Downloads) -> None:
    """A runner's input is opened before its answer begins, as a person's download is:
    one whose blob went meanwhile (the job purged; removed here to stand for that) is a
    404 saying so, for GET and HEAD alike, not a 500 (GET) beside a 200 (HEAD)."""
    sha = hashlib.sha256(BIG).hexdigest()
    (downloads.farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]).unlink()
    url = f"/api/runner/files/{downloads.job_id}/cache/big.bin"
    answer = downloads.farm.client.get(url, headers=downloads.runner)
    assert answer.status_code == 404, answer.text
    assert "cache/big.bin' was deleted meanwhile" in answer.json()["detail"]
    assert downloads.farm.client.head(url, headers=downloads.runner).status_code == 404
