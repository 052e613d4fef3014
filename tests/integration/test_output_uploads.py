"""A frame's extra files' way in: `PUT /api/runner/tasks/{task}/frames/{frame}/{kind}/{name}`
(the raw body, what workers send: a File Output node's `pass`, Blender's `preview`) and
the multipart `POST /api/runner/files/{job}/extra` that workers before it send. Both
refuse the same hostile names, bodies and callers with a 4xx and store nothing; what
they store is listed and downloaded alike. The tile's raw-body PUT is covered in
`test_tiles_protocol.py`; its body limit here, with the extras'."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.client import RunnerClient
from farmhand.manager.app import create_app
from tests.integration.conftest import Farm, make_settings, png_bytes, submit_stand_in
from tests.integration.test_tiles_protocol import exr_bytes

LIMIT = 64 * 1024


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """Uploads up to 64 KiB, other bodies (JSON) up to 4 KiB: a raw upload must get the
    upload's limit, not the small one."""
    settings = make_settings(tmp_path / "data", max_upload_bytes=LIMIT, max_body_bytes=4096)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def jpeg_bytes(colour: str = "green") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def held_task(farm: Farm) -> tuple[dict[str, str], Any]:
    """A job of frames 1-2 in one task, and a runner holding it."""
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner("w1")
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    return runner, task


def put_extra(
    farm: Farm,
    runner: dict[str, str],
    task: Any,
    frame: int,
    kind: str,
    name: str,
    body: bytes | Iterator[bytes],
) -> httpx.Response:
    """`name` goes into the URL as given (percent-escapes and all); a `body` of chunks
    goes without a Content-Length."""
    answer: httpx.Response = farm.client.put(
        f"/api/runner/tasks/{task['task_id']}/frames/{frame}/{kind}/{name}",
        headers=runner,
        content=body,
    )
    return answer


def post_extra(
    farm: Farm, runner: dict[str, str], task: Any, frame: int, kind: str, name: str, body: bytes
) -> httpx.Response:
    answer: httpx.Response = farm.client.post(
        f"/api/runner/files/{task['job_id']}/extra",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": str(frame), "kind": kind, "name": name},
        files={"file": (name.rsplit("/", 1)[-1], body, "application/octet-stream")},
    )
    return answer


def extras(farm: Farm, job_id: int) -> dict[str, dict[str, Any]]:
    """The job's previews and passes, by path."""
    files = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    return {f["path"]: f for f in files if f["kind"] in ("preview", "pass")}


def download(farm: Farm, job_id: int, file_id: int) -> bytes:
    answer: httpx.Response = farm.client.get(
        f"/api/jobs/{job_id}/files/{file_id}/download", headers=farm.admin
    )
    assert answer.status_code == 200, answer.text
    return answer.content


def stored_blobs(farm: Farm) -> set[str]:
    root = farm.data_dir / "blobs" / "sha256"
    return {p.parent.name + p.name for p in root.glob("*/*")}


def test_a_pass_and_a_preview_put_as_the_raw_body_are_stored_as_the_forms_are(
    farm: Farm,
) -> None:
    runner, task = held_task(farm)
    depth = exr_bytes(value=0.25)
    answer = put_extra(farm, runner, task, 1, "pass", "00-File_Output/Depth0001.exr", depth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["frame"] == 1 and answer.json()["size"] == len(depth)
    preview = put_extra(farm, runner, task, 1, "preview", "0001.JPG", jpeg_bytes())
    assert preview.status_code == 201, preview.text
    older = post_extra(farm, runner, task, 2, "pass", "00-File_Output/Depth0002.png", png_bytes())
    assert older.status_code == 201, older.text

    stored = extras(farm, task["job_id"])
    assert {path: f["kind"] for path, f in stored.items()} == {
        "passes/00-File_Output/Depth0001.exr": "pass",
        "passes/00-File_Output/Depth0002.png": "pass",
        "previews/0001.jpg": "preview",
    }
    assert stored["passes/00-File_Output/Depth0001.exr"]["frame"] == 1
    job = task["job_id"]
    assert download(farm, job, stored["passes/00-File_Output/Depth0001.exr"]["id"]) == depth
    assert download(farm, job, stored["previews/0001.jpg"]["id"]) == jpeg_bytes()
    assert download(farm, job, stored["passes/00-File_Output/Depth0002.png"]["id"]) == png_bytes()

    # A retried task sends them again: the last one is the one kept, whichever way.
    again = put_extra(farm, runner, task, 2, "pass", "00-File_Output/Depth0002.png",
                      png_bytes(colour="blue"))  # fmt: skip
    assert again.status_code == 201, again.text
    [kept] = [f for p, f in extras(farm, job).items() if p.endswith("Depth0002.png")]
    assert download(farm, job, kept["id"]) == png_bytes(colour="blue")


HOSTILE = [
    ("pass", "..%2F..%2Fescape.png"),
    ("pass", "sub/%2E%2E/%2E%2E/escape.png"),
    ("pass", "%2Fetc%2Fescape.png"),
    ("pass", "a%5Cb.png"),
    ("pass", "nul%00.png"),
    ("pass", "C:escape.png"),
    ("pass", "aux.png"),
    ("pass", "x" * 1100 + ".png"),
    ("preview", "..%2Fpreview.jpg"),
    ("preview", "nul%00.jpg"),
]


@pytest.mark.parametrize(("kind", "name"), HOSTILE, ids=[n[:24] for _, n in HOSTILE])
def test_a_hostile_name_is_a_400_and_stores_nothing(farm: Farm, kind: str, name: str) -> None:
    runner, task = held_task(farm)
    before = stored_blobs(farm)
    body = png_bytes() if kind == "pass" else jpeg_bytes()
    answer = put_extra(farm, runner, task, 1, kind, name, body)
    assert answer.status_code == 400, answer.text
    assert stored_blobs(farm) == before, "refused before a byte is stored"
    assert extras(farm, task["job_id"]) == {}


def test_the_form_refuses_the_same_hostile_names(farm: Farm) -> None:
    """The names of `HOSTILE`, unescaped, as a form field (no URL to normalise them)."""
    runner, task = held_task(farm)
    before = stored_blobs(farm)
    for kind, name in HOSTILE:
        body = png_bytes() if kind == "pass" else jpeg_bytes()
        raw = unquote(name)
        answer = farm.client.post(
            f"/api/runner/files/{task['job_id']}/extra",
            headers=runner,
            data={"task_id": str(task["task_id"]), "frame": "1", "kind": kind, "name": raw},
            files={"file": ("plain.png" if kind == "pass" else "plain.jpg", body)},
        )
        assert answer.status_code == 400, (name, answer.text)
    assert stored_blobs(farm) == before
    assert extras(farm, task["job_id"]) == {}


@pytest.mark.parametrize("send", [put_extra, post_extra], ids=["put", "post"])
@pytest.mark.parametrize(
    ("kind", "name", "body", "says"),
    [
        ("pass", "depth.exr", png_bytes(), "it is a PNG image, not .exr"),
        ("pass", "depth.png", b"not an image", "is not an image"),
        ("pass", "depth.txt", png_bytes(), "a pass cannot be a .txt file"),
        ("pass", "depth", png_bytes(), "a pass cannot be a suffix-less file"),
        ("preview", "0001.png", png_bytes(), "a preview cannot be a .png file"),
        ("preview", "0001.jpg", png_bytes(), "it is a PNG image, not .jpg"),
    ],
    ids=["png-as-exr", "not-an-image", "txt", "no-suffix", "png-preview", "png-as-jpg"],
)
def test_a_file_not_the_image_its_name_says_is_refused_either_way(
    farm: Farm, send: Any, kind: str, name: str, body: bytes, says: str
) -> None:
    runner, task = held_task(farm)
    before = stored_blobs(farm)
    answer = send(farm, runner, task, 1, kind, name, body)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["detail"]
    assert stored_blobs(farm) == before
    assert extras(farm, task["job_id"]) == {}


@pytest.mark.parametrize("send", [put_extra, post_extra], ids=["put", "post"])
def test_only_the_runner_holding_the_task_may_send_its_frames_extras(farm: Farm, send: Any) -> None:
    runner, task = held_task(farm)
    late = send(farm, farm.register_runner("w2"), task, 1, "pass", "depth.png", png_bytes())
    assert late.status_code == 409, late.text
    foreign = send(farm, runner, task, 7, "pass", "depth.png", png_bytes())
    assert foreign.status_code == 400 and "not part of task" in foreign.text
    person = send(farm, farm.admin, task, 1, "pass", "depth.png", png_bytes())
    assert person.status_code == 401, "a person's token is not a runner's secret"
    nobody = send(farm, {}, task, 1, "pass", "depth.png", png_bytes())
    assert nobody.status_code == 401
    assert extras(farm, task["job_id"]) == {}


def test_a_raw_upload_gets_the_upload_limit_and_no_more(farm: Farm) -> None:
    """Both new routes: past the small JSON limit is fine, past the upload limit a 413
    (from the declared length, before a byte is read, and from a chunked body)."""
    runner, task = held_task(farm)
    big = png_bytes(96, 96) + b"\x00" * 8192  # a PNG may end in trailing bytes
    assert 4096 < len(big) < LIMIT
    answer = put_extra(farm, runner, task, 1, "pass", "big.png", big)
    assert answer.status_code == 201, answer.text

    huge = png_bytes() + b"\x00" * LIMIT
    declared = put_extra(farm, runner, task, 1, "pass", "huge.png", huge)
    assert declared.status_code == 413, declared.text
    assert "the upload is larger" in declared.json()["detail"]
    pieces = iter([huge[:1000], huge[1000:]])  # no Content-Length: cut off on the way
    chunked = put_extra(farm, runner, task, 1, "pass", "huge.png", pieces)
    assert chunked.status_code == 413, chunked.text
    tile = farm.client.put(f"/api/runner/tasks/{task['task_id']}/tile.png", headers=runner,
                           content=huge)  # fmt: skip
    assert tile.status_code == 413, tile.text
    assert list(extras(farm, task["job_id"])) == ["passes/big.png"]


def test_the_runner_client_puts_passes_and_previews(farm: Farm, tmp_path: Path) -> None:
    """What the worker calls: a pass under a name with a folder and characters a URL
    must escape, and a preview, both end up where the form put them."""
    runner, task = held_task(farm)
    (tmp_path / "out").mkdir()
    depth = tmp_path / "out" / "Depth #1 50%.exr"
    depth.write_bytes(exr_bytes())
    preview = tmp_path / "out" / "0002.jpg"
    preview.write_bytes(jpeg_bytes())

    secret = runner["Authorization"].removeprefix("Bearer ")
    through = Through(farm.client)
    with RunnerClient("http://testserver", secret, transport=through) as client:
        name = "File Output/Depth #1 50%.exr"
        sent = client.upload_extra(task["job_id"], task["task_id"], 2, "pass", name, depth)
        assert sent.frame == 2
        client.upload_extra(task["job_id"], task["task_id"], 2, "preview", preview.name, preview)

    assert [method for method, _ in through.sent] == ["PUT", "PUT"], "the raw body"
    stored = extras(farm, task["job_id"])
    assert sorted(stored) == ["passes/File Output/Depth #1 50%.exr", "previews/0002.jpg"]
    assert download(farm, task["job_id"], stored["previews/0002.jpg"]["id"]) == jpeg_bytes()


class Through(httpx.BaseTransport):
    """An httpx transport that hands each request to the app's `TestClient`, so the
    real client's requests (its URLs, headers and streamed bodies) reach the real app."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        answer = self.client.request(
            request.method,
            request.url.raw_path.decode("ascii"),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            content=request.read(),
        )
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-encoding"}
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)
