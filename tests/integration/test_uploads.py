"""Uploads against a real manager process: each byte once, resumable, verified.

The manager runs as its own process on loopback (as in production), so an interrupted
transfer is a real broken connection, not a simulation inside one event loop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from farmhand.client import FarmhandError
from farmhand.client.transfer import Uploader, hash_files
from farmhand.localfarm import LocalFarm
from farmhand.scenes import make_project
from tests.integration.conftest import Farm, stored_blobs
from tests.integration.farmhand_cli import cli

MIB = 1024 * 1024


def partial_files(farm: LocalFarm) -> list[Path]:
    partial = farm.data_dir / "blobs" / "tmp" / "partial"
    return [p for p in partial.iterdir()] if partial.exists() else []


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


class Interrupted(Exception):
    """Stands for the client dying (Ctrl-C, a crash) in the middle of a transfer."""


def test_interrupted_upload_resumes_without_resending(manager: LocalFarm, tmp_path: Path) -> None:
    size = 24 * MIB
    big = random_file(tmp_path / "big.bin", size)
    entries = hash_files({"big.bin": big})
    sent_first = 0

    def cut_halfway(nbytes: int, files: int) -> None:
        nonlocal sent_first
        sent_first += nbytes
        if sent_first >= size // 2:
            raise Interrupted

    with manager.client() as client, pytest.raises(Interrupted):
        Uploader(client, advance=cut_halfway).upload(entries)

    sha = entries["big.bin"].sha256
    with manager.client() as client:
        assert client.missing_blobs([sha]) == [sha], "half a file is not a blob"
        arrived = client.start_upload(sha, size).offset
        assert size // 4 <= arrived < size, arrived
        report = Uploader(client).upload(entries)
        assert client.missing_blobs([sha]) == []
    assert report.uploaded_files == 1
    assert report.bytes_sent == size - arrived, "only the bytes that had not arrived were sent"
    (blob,) = stored_blobs(manager)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    assert partial_files(manager) == [], "the partial upload is gone once stored"


def test_an_upload_survives_a_manager_killed_mid_transfer(
    manager: LocalFarm, tmp_path: Path
) -> None:
    """SIGKILL of the manager halfway: the client waits for it, then sends only the rest."""
    size = 32 * MIB
    big = random_file(tmp_path / "big.bin", size)
    entries = hash_files({"big.bin": big})
    sent = 0
    killed = False

    def kill_halfway(nbytes: int, files: int) -> None:
        nonlocal sent, killed
        sent += nbytes
        if sent >= size // 2 and not killed:
            killed = True
            assert manager.manager is not None
            manager.manager.kill()
            manager.start_manager()  # same port and data: the bytes on disk are still there

    with manager.client() as client:
        report = Uploader(client, advance=kill_halfway).upload(entries)
        assert client.missing_blobs([entries["big.bin"].sha256]) == []
    assert killed
    # Starting over would have sent 1.5x the file; resuming sends the file once, plus
    # at most what was in flight when the manager died.
    assert size <= report.bytes_sent < size * 1.25, report.bytes_sent
    (blob,) = stored_blobs(manager)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == entries["big.bin"].sha256


def test_corrupted_upload_is_refused_and_nothing_stored(manager: LocalFarm, tmp_path: Path) -> None:
    real = random_file(tmp_path / "real.bin", 3 * MIB)
    forged = random_file(tmp_path / "forged.bin", 3 * MIB)
    sha = hashlib.sha256(real.read_bytes()).hexdigest()
    with manager.client() as client:
        status = client.start_upload(sha, 3 * MIB)
        with pytest.raises(FarmhandError) as refused:
            client.send_upload(status.id, forged, 0)
        assert refused.value.status_code == 400
        assert "hash" in refused.value.detail
        assert client.missing_blobs([sha]) == [sha]
    assert stored_blobs(manager) == []
    assert partial_files(manager) == [], "the refused bytes are not kept either"


def test_upload_offsets_are_checked(manager: LocalFarm, tmp_path: Path) -> None:
    data = random_file(tmp_path / "data.bin", MIB)
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    with manager.client() as client:
        status = client.start_upload(sha, MIB)
        with pytest.raises(FarmhandError) as conflict:
            client.send_upload(status.id, data, 4096)  # bytes 0-4095 never arrived
        assert conflict.value.status_code == 409
        assert client.upload_status(status.id).offset == 0
        done = client.send_upload(status.id, data, 0)
        assert done.complete and done.offset == MIB


def test_a_chunk_is_refused_while_another_process_writes_the_same_upload(
    manager: LocalFarm, tmp_path: Path
) -> None:
    """With `--processes`, two chunks of one upload may reach different processes. The
    partial file's lock (held here by this test's process, as another manager process
    would while it writes) makes the second wait its turn: a 409, not bytes appended
    twice, which would fail the hash check and throw the whole upload away."""
    data = random_file(tmp_path / "data.bin", MIB)
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    with manager.client() as client:
        status = client.start_upload(sha, MIB)
        (part,) = [p for p in partial_files(manager) if p.suffix == ".part"]
        with part.open("ab") as other_writer:
            fcntl.flock(other_writer.fileno(), fcntl.LOCK_EX)
            with pytest.raises(FarmhandError) as busy:
                client.send_upload(status.id, data, 0)
            assert busy.value.status_code == 409
            assert "another request is sending bytes" in str(busy.value)
            abandon = httpx.delete(
                f"{manager.url}/api/uploads/{status.id}",
                headers={"Authorization": f"Bearer {manager.admin_token}"},
            )
            assert abandon.status_code == 409, "nor deleted under the other writer's feet"
            assert part.stat().st_size == 0, "nothing was appended while it was busy"
        done = client.send_upload(status.id, data, client.upload_status(status.id).offset)
        assert done.complete
    (stored,) = stored_blobs(manager)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha


def test_uploads_of_many_files_run_in_parallel_and_dedupe(
    manager: LocalFarm, tmp_path: Path
) -> None:
    files = {f"f{i}.bin": random_file(tmp_path / f"f{i}.bin", 200_000 + i) for i in range(12)}
    files["copy-of-f0.bin"] = tmp_path / "f0.bin"  # same content: one blob
    entries = hash_files(files)
    with manager.client() as client:
        first = Uploader(client, threads=4).upload(entries)
        second = Uploader(client, threads=4).upload(entries)
    assert first.uploaded_files == 12
    assert first.bytes_sent == sum(200_000 + i for i in range(12))
    assert second.uploaded_files == 0 and second.bytes_sent == 0
    assert len(stored_blobs(manager)) == 12


# ----------------------------------------------------------------- through `farmhand submit`


def bytes_sent(output: str) -> int:
    line = next(line for line in output.splitlines() if "bytes sent" in line)
    return int(line.split(";")[-1].split()[0])


@pytest.mark.blender
def test_submitting_the_same_project_twice_sends_nothing_the_second_time(
    manager: LocalFarm, tmp_path: Path
) -> None:
    scene = make_project(tmp_path / "project")
    project_bytes = sum(p.stat().st_size for p in (tmp_path / "project").rglob("*") if p.is_file())
    first = cli(manager, "submit", str(scene))
    assert first.returncode == 0, first.stderr
    assert "3 files, 3 uploaded" in first.stdout
    assert bytes_sent(first.stdout) >= project_bytes * 0.9
    second = cli(manager, "submit", str(scene))
    assert second.returncode == 0, second.stderr
    assert "3 files, 0 uploaded (3 already on the farm); 0 bytes sent" in second.stdout
    assert len(stored_blobs(manager)) == 3


@pytest.mark.blender
def test_missing_texture_refuses_submit_unless_allowed(manager: LocalFarm, tmp_path: Path) -> None:
    scene = make_project(tmp_path / "project")
    texture = tmp_path / "project" / "textures" / "checker.png"
    texture.unlink()
    refused = cli(manager, "submit", str(scene))
    assert refused.returncode != 0
    assert str(texture) in refused.stderr
    assert "--allow-missing" in refused.stderr
    assert stored_blobs(manager) == [], "nothing is uploaded before the check"
    with manager.client() as client:
        assert client.list_jobs() == []

    allowed = cli(manager, "submit", str(scene), "--allow-missing")
    assert allowed.returncode == 0, allowed.stderr
    assert "2 files, 2 uploaded" in allowed.stdout
    with manager.client() as client:
        (job,) = client.list_jobs()
        assert {f.path for f in client.list_files(job.id) if f.kind == "input"} == {
            "shots/scene.blend",
            "lib/library.blend",
        }


# ------------------------------------------------------------------- manifests (in-process)


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "C:\\Windows\\scene.blend",
        "C:/scene.blend",
        "textures\\..\\..\\x.png",
        "//server/share/x.png",
        "tex/\x00.png",
        "CON",
        "textures/aux.png",
    ],
)
def test_unsafe_manifest_paths_are_refused(farm: Farm, path: str) -> None:
    blend = b"BLENDER-v304RENDB" + b"\x00" * 64
    sha = hashlib.sha256(blend).hexdigest()
    assert farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=blend).is_success
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": "scene.blend", "files": {"scene.blend": sha, path: sha}},
    )
    assert 400 <= answer.status_code < 500, answer.text
