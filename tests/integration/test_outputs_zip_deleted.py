"""A job deleted while its outputs.zip is downloaded ends that download cleanly.

QA round 7: purging a job (`DELETE /api/jobs/{id}?purge=true`) while 20 clients
downloaded its outputs.zip left 22 tracebacks of an "unhandled error" in the manager's
log (the next frame's blob was gone, `FileNotFoundError`, after the answer had begun),
and the clients a cut-off download with nothing said. Now the manager logs one WARNING
line naming the job and the file that went, with no traceback, and closes the connection
without the answer's end: the client sees an incomplete download, never a complete zip
of fewer frames, and the manager goes on serving.

A real manager, a job of five 6 MB frames (random pixels: nothing to compress), and a
client that reads the answer's first bytes and then stops, so that the manager is held
in the zip's first frames (the buffers between them hold a few MB) while the job is
deleted; then it reads on.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from farmhand.localfarm import LocalFarm, local_farm
from tests.integration.conftest import FAKE_BLEND, Farm
from tests.integration.test_storage import rendered_job as stored_frames_job

FRAMES = 5
SIDE = 1450
"""Pixels a side: a frame of random RGB pixels is about 6 MB as a PNG."""
VANISHED = "download cut off: a file of it was deleted meanwhile"
WAIT = 60.0
"""Generous: what has not happened this long after it should have never will."""


@dataclass
class Served:
    farm: LocalFarm
    admin: dict[str, str]
    runner: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with local_farm(tmp_path_factory.mktemp("zipdeleted")) as farm:
        farm.start_manager()
        admin = {"Authorization": f"Bearer {farm.admin_token}"}
        with httpx.Client(base_url=farm.url, timeout=WAIT) as api:
            registered = api.post(
                "/api/runner/register", json={"token": farm.runner_token, "name": "w1"}
            )
            assert registered.status_code == 201, registered.text
            runner = {"Authorization": f"Bearer {registered.json()['secret']}"}
        yield Served(farm, admin, runner)


def noise_png(seed: int) -> bytes:
    pixels = hashlib.shake_256(seed.to_bytes(4, "big")).digest(SIDE * SIDE * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (SIDE, SIDE), pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def rendered_job(served: Served, api: httpx.Client) -> tuple[int, list[str]]:
    """A job whose FRAMES frames came back from a (scripted) runner; its id and the
    frames' blob hashes, in the zip's order."""
    blend = hashlib.sha256(FAKE_BLEND).hexdigest()
    assert api.put(f"/api/blobs/{blend}", headers=served.admin, content=FAKE_BLEND).is_success
    created = api.post(
        "/api/jobs",
        headers=served.admin,
        json={
            "main_file": "scene.blend",
            "files": {"scene.blend": blend},
            "frame_start": 1,
            "frame_end": FRAMES,
            "chunk_size": FRAMES,
        },
    )
    assert created.status_code == 202, created.text
    job_id = int(created.json()["id"])
    task = api.get("/api/runner/tasks?wait=0", headers=served.runner).json()
    shas = []
    for frame in range(1, FRAMES + 1):
        data = noise_png(job_id * 100 + frame)
        shas.append(hashlib.sha256(data).hexdigest())
        sent = api.post(
            f"/api/runner/files/{job_id}/upload",
            headers=served.runner,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": (f"{frame:04d}.png", data, "image/png")},
        )
        assert sent.status_code == 201, sent.text
    return job_id, shas


def manager_log(farm: LocalFarm) -> str:
    assert farm.manager is not None
    return farm.manager.log_path.read_text(encoding="utf-8", errors="replace")


def open_blob_files(farm: LocalFarm, sha: str) -> list[str]:
    """The manager's open files that are the blob `sha` (Linux's /proc)."""
    assert farm.manager is not None and farm.manager.process is not None
    found = []
    for fd in Path(f"/proc/{farm.manager.process.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.endswith(sha[2:]) or target.endswith(sha[2:] + " (deleted)"):
            found.append(target)
    return found


def wait_for(what: str, condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {WAIT:g} s"
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_a_job_purged_mid_download_cuts_the_zip_off_with_one_line(served: Served) -> None:
    farm = served.farm

    def tracebacks() -> bool:
        return "Traceback" in manager_log(farm)[since:]

    with httpx.Client(base_url=farm.url, timeout=WAIT) as api:
        job_id, shas = rendered_job(served, api)
        path = f"/api/jobs/{job_id}/outputs.zip"
        since = len(manager_log(farm))
        received = bytearray()
        with api.stream("GET", path, headers=served.admin) as answer:
            assert answer.status_code == 200
            chunks = answer.iter_raw()
            received += next(chunks)
            # The zip is under way, its first frame open; the client reads no more for
            # now, so the manager cannot get far (a few MB of buffers, 30 MB to send).
            wait_for("the first frame opened", lambda: open_blob_files(farm, shas[0]))
            assert not open_blob_files(farm, shas[-1])
            deleted = api.delete(f"/api/jobs/{job_id}?purge=true", headers=served.admin)
            assert deleted.status_code == 204, deleted.text
            last = farm.data_dir / "blobs" / "sha256" / shas[-1][:2] / shas[-1][2:]
            wait_for("the last frame's blob removed", lambda: not last.exists())
            with pytest.raises(httpx.RemoteProtocolError):  # the answer never ends
                for chunk in chunks:
                    received += chunk

    assert 0 < len(received) < FRAMES * 6_000_000
    with pytest.raises(zipfile.BadZipFile):  # no zip's end: not a zip of fewer frames
        zipfile.ZipFile(io.BytesIO(received))

    wait_for("the cut-off logged", lambda: VANISHED in manager_log(farm)[since:] or tracebacks())
    logged = manager_log(farm)[since:]
    lines = [line for line in logged.splitlines() if VANISHED in line]
    assert len(lines) == 1, logged
    (line,) = lines
    assert "[warning" in line and f"job={job_id}" in line and "file=frames/" in line, line
    for alarm in ("Traceback", "[error", "ERROR", "unhandled error", "Exception in ASGI"):
        assert alarm not in logged, logged

    # The manager goes on serving, downloads of zips too.
    with httpx.Client(base_url=farm.url, timeout=WAIT) as api:
        assert api.get("/healthz").status_code == 200
        other, _ = rendered_job(served, api)
        whole = api.get(f"/api/jobs/{other}/outputs.zip", headers=served.admin)
        assert whole.status_code == 200
        with zipfile.ZipFile(io.BytesIO(whole.content)) as archive:
            assert len(archive.namelist()) == FRAMES


def test_a_single_file_deleted_before_its_answer_began_is_a_404(farm: Farm) -> None:
    """A frame (or any file) is opened before its answer begins: one whose blob went
    between the route reading its row and the answer (a job purged meanwhile, the file
    removed here to stand for that) is a 404 saying so, not a traceback halfway through
    a 200."""
    job_id, frames = stored_frames_job(farm)  # frames 1-3, from a scripted worker
    listed = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    (second,) = [entry for entry in listed if entry["path"] == "frames/0002.png"]
    sha = hashlib.sha256(frames[1]).hexdigest()
    (farm.data_dir / "blobs" / "sha256" / sha[:2] / sha[2:]).unlink()

    for path in ("outputs/2", f"files/{second['id']}/download"):
        answer = farm.client.get(f"/api/jobs/{job_id}/{path}", headers=farm.admin)
        assert answer.status_code == 404, answer.text
        assert "0002.png' was deleted meanwhile" in answer.json()["detail"]
