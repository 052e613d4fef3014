"""The two job routes that take a .blend in a multipart form refuse what they cannot take
before it is received, as `/api/blend-info` does (`test_blend_info_quota.py`, whose
raw-socket helpers these use): `POST /api/jobs` as multipart (a .blend and its
settings, the one-shot submit) and `POST /api/jobs/{id}/upload` (an input and its
`path`).

Until they read their own form (`form_file.FormFile`), FastAPI received and spooled
every byte of it before the route ran: a student over quota sending a 3 GB .blend sent
all 3 GB before the 413, and an input for a job whose inputs were fixed all of it before
the 409. A real manager and raw sockets: each answer must come while the client still
holds back the rest of its body (`answer_before_the_rest` fails after `HANG` seconds
otherwise; without the fix the manager waits for the body the client never sends).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.shared.blobpaths import blob_path
from tests.integration.conftest import FAKE_BLEND
from tests.integration.test_blend_info_quota import (
    FILE_PART,
    HANG,
    QUOTA,
    answer_before_the_rest,
    served_usage,
    served_user,
)
from tests.integration.test_limits import bearer

DECLARED = 200_000_000
"""A body far over the 800 kB quota (and under the manager's upload limit)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    """A real manager (raw sockets need a server), with the quota."""
    with local_farm(tmp_path_factory.mktemp("jobforms")) as farm:
        farm.start_manager("--user-quota-bytes", str(QUOTA))
        yield farm


def text_part(name: str, value: bytes) -> bytes:
    return b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
        name.encode(),
        value,
    )


def send_head(
    farm: LocalFarm, path: str, token: str, first: bytes, declared: int | None
) -> socket.socket:
    """A POST of a multipart body to `path`: its head (a `Content-Length` of `declared`,
    else chunked) and `first` (as one chunk when chunked); the rest is never sent."""
    length = f"Content-Length: {declared}" if declared else "Transfer-Encoding: chunked"
    head = [
        f"POST {path} HTTP/1.1",
        "Host: farm",
        f"Authorization: Bearer {token}",
        "Content-Type: multipart/form-data; boundary=b",
        length,
    ]
    sock = socket.create_connection((farm.host, farm.port), timeout=HANG)
    sock.sendall("\r\n".join([*head, "", ""]).encode() + (first if declared else chunk(first)))
    return sock


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def send_past_the_quota(sock: socket.socket) -> None:
    """Chunks of file past the quota; 20 MB more would follow."""
    for _ in range(QUOTA // 65536 + 2):
        sock.sendall(chunk(os.urandom(65536)))


def jobs_of(farm: LocalFarm, token: str) -> list[object]:
    listed = httpx.get(farm.url + "/api/jobs", headers=bearer(token), timeout=30)
    assert listed.status_code == 200, listed.text
    jobs: list[object] = listed.json()
    return jobs


def paused_job(farm: LocalFarm, token: str) -> int:
    """A job of a small .blend the user sent as multipart (well within the quota), paused:
    its inputs may change."""
    answer = httpx.post(
        farm.url + "/api/jobs",
        headers=bearer(token),
        files={"file": ("scene.blend", FAKE_BLEND, "application/octet-stream")},
        data={"settings": json.dumps({"frame_end": 2})},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job_id = int(answer.json()["id"])
    paused = httpx.post(
        f"{farm.url}/api/jobs/{job_id}/actions",
        headers=bearer(token),
        json={"action": "pause"},
        timeout=30,
    )
    assert paused.status_code == 200, paused.text
    return job_id


def inputs_of(farm: LocalFarm, token: str, job_id: int) -> dict[str, str]:
    files = httpx.get(f"{farm.url}/api/jobs/{job_id}/files", headers=bearer(token), timeout=30)
    return {f["path"]: f["sha256"] for f in files.json() if f["kind"] == "input"}


def no_temporary_files(farm: LocalFarm) -> bool:
    return not list((farm.data_dir / "blobs" / "tmp").glob("upload-*"))


# ----------------------------------------------------------- POST /api/jobs, multipart

SETTINGS = text_part("settings", b'{"frame_end": 10}')


def test_a_submit_declared_over_the_quota_is_refused_before_its_body(served: LocalFarm) -> None:
    """The tutorial's one-shot submit of a 200 MB .blend for an 800 kB quota: the 413
    (the submit's own: no "submit the job" advice) comes after the headers and the
    settings, while the .blend is still unsent; no job, no usage."""
    token = served_user(served, "fay")
    sock = send_head(served, "/api/jobs", token, SETTINGS + FILE_PART, DECLARED)
    status, detail, head = answer_before_the_rest(sock)
    assert status == 413, detail
    assert detail.startswith("storage quota exceeded: this would bring your usage to at least")
    assert "ask an admin for a larger quota" in detail
    assert b"connection: close" in head.lower()
    assert served_usage(served, "fay") == 0
    assert jobs_of(served, token) == []


def test_a_chunked_submit_is_cut_off_where_it_passes_the_quota(served: LocalFarm) -> None:
    """No declared length: the 413 comes once the file passes the quota, while most of
    it is still to come, and nothing is kept: no job, no usage, no temporary file."""
    token = served_user(served, "gus")
    sock = send_head(served, "/api/jobs", token, SETTINGS + FILE_PART, None)
    send_past_the_quota(sock)
    status, detail, _ = answer_before_the_rest(sock)
    assert status == 413, detail
    assert detail.startswith("storage quota exceeded")
    assert served_usage(served, "gus") == 0
    assert jobs_of(served, token) == []
    assert no_temporary_files(served)


def test_a_huge_settings_field_is_refused_without_being_received(served: LocalFarm) -> None:
    """A "settings" field that never ends (hostile, or a file sent in the wrong field) is
    a 400 at its first bytes past the field's cap, not gathered in memory until the
    body's end; an admin, so no quota decides it first."""
    token = served.admin_token
    start = b'--b\r\nContent-Disposition: form-data; name="settings"\r\n\r\n'
    sock = send_head(served, "/api/jobs", token, start + b"{" * 65536, None)
    try:
        for _ in range(4):  # 256 kB of the "1 GB" field
            sock.sendall(chunk(b" " * 65536))
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed already, as it should be: its answer is read below
    status, detail, _ = answer_before_the_rest(sock)
    assert status == 400, detail
    assert "'settings'" in detail and "bytes" in detail


def test_settings_sent_after_the_file_still_apply(served: LocalFarm) -> None:
    """Clients send the settings first (httpx, browsers, the docs' curl); one that sends
    them after the file (curl with `-F file=@… -F settings=…`) gets its job as before."""
    body = (
        FILE_PART
        + b"\r\n"
        + text_part("settings", b'{"frame_end": 7, "name": "late"}')
        + b"--b--\r\n"
    )
    answer = httpx.post(
        served.url + "/api/jobs",
        headers={**bearer(served.admin_token), "Content-Type": "multipart/form-data; boundary=b"},
        content=body,
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job = httpx.get(
        f"{served.url}/api/jobs/{answer.json()['id']}",
        headers=bearer(served.admin_token),
        timeout=30,
    ).json()
    assert (job["settings"]["frame_end"], job["settings"]["name"]) == (7, "late")


# ------------------------------------------------------- POST /api/jobs/{id}/upload


def test_an_input_declared_over_the_quota_is_refused_before_its_body(served: LocalFarm) -> None:
    """A 200 MB input for a job of a user with an 800 kB quota: 413 before the file is
    received, and the job's inputs are as they were."""
    token = served_user(served, "hal")
    job_id = paused_job(served, token)
    before, usage = inputs_of(served, token, job_id), served_usage(served, "hal")
    path = f"/api/jobs/{job_id}/upload"
    sock = send_head(served, path, token, text_part("path", b"tex/huge.exr") + FILE_PART, DECLARED)
    status, detail, head = answer_before_the_rest(sock)
    assert status == 413, detail
    assert detail.startswith("storage quota exceeded: this would bring your usage to at least")
    assert b"connection: close" in head.lower()
    assert inputs_of(served, token, job_id) == before
    assert served_usage(served, "hal") == usage


def test_a_chunked_input_is_cut_off_where_it_passes_the_quota(served: LocalFarm) -> None:
    token = served_user(served, "ivy")
    job_id = paused_job(served, token)
    before, usage = inputs_of(served, token, job_id), served_usage(served, "ivy")
    path = f"/api/jobs/{job_id}/upload"
    sock = send_head(served, path, token, text_part("path", b"tex/huge.exr") + FILE_PART, None)
    send_past_the_quota(sock)
    status, detail, _ = answer_before_the_rest(sock)
    assert status == 413, detail
    assert detail.startswith("storage quota exceeded")
    assert inputs_of(served, token, job_id) == before
    assert served_usage(served, "ivy") == usage
    assert no_temporary_files(served)


def test_an_input_for_a_job_it_cannot_join_is_refused_before_its_body(
    served: LocalFarm,
) -> None:
    """The job is looked at before the body is read (its docstring said so; FastAPI read
    the whole form first): a job that is not the caller's is 404, one whose inputs are
    fixed (canceled) 409, and a `path` sent before the file that is not a safe relative
    path 400, each while the file is still unsent. The 409 to an admin, whom no quota
    refuses first; the 400 for a file that fits the quota."""
    token = served_user(served, "joe")
    job_id = paused_job(served, token)
    stranger = served_user(served, "kim")
    upload = f"/api/jobs/{job_id}/upload"
    form = text_part("path", b"extra.blend") + FILE_PART

    status, detail, _ = answer_before_the_rest(send_head(served, upload, stranger, form, DECLARED))
    assert status == 404, detail

    bad_path = text_part("path", b"../../etc/passwd") + FILE_PART
    # A file that fits the quota (half of it), so that the path decides.
    sock = send_head(served, upload, token, bad_path, QUOTA // 2)
    status, detail, _ = answer_before_the_rest(sock)
    assert status == 400, detail

    canceled = httpx.delete(f"{served.url}/api/jobs/{job_id}", headers=bearer(token), timeout=30)
    assert canceled.is_success, canceled.text
    status, detail, _ = answer_before_the_rest(
        send_head(served, upload, served.admin_token, form, DECLARED)
    )
    assert status == 409, detail
    assert "is canceled" in detail


def test_a_path_sent_after_the_file_still_places_it(served: LocalFarm) -> None:
    """`path` after the file (curl's `-F file=@… -F path=…`): the file is checked and
    placed once it is in, as before."""
    token = served_user(served, "liz")
    job_id = paused_job(served, token)
    body = FILE_PART + b"\r\n" + text_part("path", b"tex/late.blend") + b"--b--\r\n"
    answer = httpx.post(
        f"{served.url}/api/jobs/{job_id}/upload",
        headers={**bearer(token), "Content-Type": "multipart/form-data; boundary=b"},
        content=body,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    placed = inputs_of(served, token, job_id)
    assert "tex/late.blend" in placed
    assert stored(served, placed["tex/late.blend"]), "the helper below sees a stored blob"


# ------------------------------------------- refused once stored: nothing of it kept


def unique_blend() -> tuple[bytes, str]:
    """A form's file part of a .blend no one has sent before, and its SHA-256: larger
    than one read of the body, so that what follows it arrives after it is stored (a
    small body is parsed whole before the file is, and refused before it is stored)."""
    data = FAKE_BLEND + os.urandom(300_000)
    part = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="file"; filename="once.blend"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    ) + data
    return part, hashlib.sha256(data).hexdigest()


def stored(farm: LocalFarm, sha256: str) -> bool:
    """Whether the blob store holds these bytes (a file on the manager's disk)."""
    return blob_path(farm.data_dir / "blobs", sha256).exists()


def post_form(farm: LocalFarm, path: str, token: str, body: bytes) -> httpx.Response:
    return httpx.post(
        farm.url + path,
        headers={**bearer(token), "Content-Type": "multipart/form-data; boundary=b"},
        content=body,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (b'{"frame_end": "bad"}', "invalid settings: frame_end"),
        (b'{"frame_start": 5, "frame_end": 2}', "frame"),
    ],
    ids=["not-a-number", "backwards"],
)
def test_a_submit_refused_for_settings_after_its_file_keeps_nothing(
    served: LocalFarm, settings: bytes, said: str
) -> None:
    """curl's order (`-F file=@… -F settings=…`): the .blend is in before its settings
    are read. Settings that are wrong were a 400 that left the .blend on the disk,
    counted in no one's quota, so a loop of such submits filled the disk (QA round 13)."""
    token = served_user(served, f"ned-{len(settings)}")
    part, sha = unique_blend()
    body = part + b"\r\n" + text_part("settings", settings) + b"--b--\r\n"
    answer = post_form(served, "/api/jobs", token, body)
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["detail"]
    assert not stored(served, sha), "the refused .blend stayed on the manager's disk"
    assert served_usage(served, f"ned-{len(settings)}") == 0


@pytest.mark.parametrize("path", [b"../../c.png", b"x" * 1025], ids=["escaping", "too-long"])
def test_an_input_refused_for_its_path_after_the_file_keeps_nothing(
    served: LocalFarm, path: bytes
) -> None:
    """`path` after the file, and wrong: a 400, and the file is not left behind."""
    token = served_user(served, f"pip-{len(path)}")
    job_id = paused_job(served, token)
    before = inputs_of(served, token, job_id)
    part, sha = unique_blend()
    body = part + b"\r\n" + text_part("path", path) + b"--b--\r\n"
    answer = post_form(served, f"/api/jobs/{job_id}/upload", token, body)
    assert answer.status_code == 400, answer.text
    assert not stored(served, sha), "the refused input stayed on the manager's disk"
    assert inputs_of(served, token, job_id) == before
