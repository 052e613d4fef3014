"""A data dir the manager cannot write: a clear 507 naming why, one log line, and work
resumes when it is writable again, without a restart.

The manager's data dir is put on a read-only bind mount of itself while the manager
runs (as a kernel does to a file system after disk errors, or an administrator by
mistake), or made immutable (`chattr +i`: even root gets EPERM, as an account gets
EACCES from a folder whose owner changed). Either needs root; where it is not allowed
the test is skipped, saying why.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from farmhand.manager.api import errors
from farmhand.manager.app import create_app
from tests.integration.conftest import (
    FAKE_BLEND,
    Farm,
    login_nonce,
    make_settings,
    png_bytes,
    submit_stand_in,
    upload_frame,
)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


class ReadOnly:
    """Turns a folder read-only and back, as `mount -o remount,ro` would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mounted = False

    def on(self) -> None:
        if not self.mounted:
            bound = _run("mount", "--bind", str(self.folder), str(self.folder))
            if bound.returncode != 0:
                pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
            self.mounted = True
        made = _run("mount", "-o", "remount,ro,bind", str(self.folder))
        assert made.returncode == 0, made.stderr

    def off(self) -> None:
        made = _run("mount", "-o", "remount,rw,bind", str(self.folder))
        assert made.returncode == 0, made.stderr

    def undo(self) -> None:
        if self.mounted:
            _run("umount", "-l", str(self.folder))


@pytest.fixture
def fresh_storage_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manager's log of storage faults as a new process has it: an earlier test's
    refusals must not keep this one's first line back."""
    monkeypatch.setattr(errors, "STORAGE_LOG", errors.StorageLog())


@pytest.fixture
def farm(tmp_path: Path, fresh_storage_log: None) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


@pytest.fixture
def read_only(farm: Farm) -> Iterator[ReadOnly]:
    switch = ReadOnly(farm.data_dir)
    try:
        yield switch
    finally:
        switch.undo()


def start_task(farm: Farm) -> tuple[dict[str, str], dict[str, Any]]:
    runner = farm.register_runner()
    submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner)
    assert task.status_code == 200, task.text
    return runner, task.json()


def put_blob(farm: Farm, data: bytes) -> Any:
    return farm.client.put(
        f"/api/blobs/{hashlib.sha256(data).hexdigest()}", headers=farm.admin, content=data
    )


def refusals(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if "data dir" in str(entry["event"])]


def test_a_read_only_data_dir_is_a_507_saying_so_logged_once_and_mends_without_restart(
    farm: Farm, read_only: ReadOnly
) -> None:
    runner, task = start_task(farm)
    assert upload_frame(farm, runner, task, 1, png_bytes(8, 6, "red")).status_code == 201
    blob = FAKE_BLEND + b"another scene"

    read_only.on()
    with capture_logs() as logs:
        stored = put_blob(farm, blob)
        # A worker retrying its frame every few seconds, as QA's did 59 times.
        frames = [upload_frame(farm, runner, task, 2, png_bytes(8, 6, "blue")) for _ in range(5)]
    for answer in [stored, *frames]:
        assert answer.status_code == 507, answer.text
        assert answer.json()["detail"].startswith("the manager's data dir is read-only")
    said = refusals(logs)
    assert len(said) == 1, logs  # one line, not one per retry
    assert said[0]["log_level"] == "error"
    assert "read-only" in said[0]["event"] and "Read-only file system" in said[0]["error"]
    assert not [entry for entry in logs if entry["event"] == "unhandled error"]

    read_only.off()  # no restart: the next retry goes in
    assert upload_frame(farm, runner, task, 2, png_bytes(8, 6, "blue")).status_code == 201
    assert put_blob(farm, blob).status_code in (200, 201)
    done = farm.client.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=runner, json={"frames": [1, 2]}
    )
    assert done.status_code == 200, done.text


def test_signing_in_on_the_web_with_a_read_only_data_dir_shows_a_page_saying_so(
    farm: Farm, read_only: ReadOnly
) -> None:
    """The first web sign-in writes the session key into the data dir: QA got raw JSON
    (`{"detail":"internal error; ..."}`) there, and a traceback in the log."""
    nonce = login_nonce(farm.client)
    read_only.on()
    form = {"token": farm.admin_token, "login_nonce": nonce, "next": "/"}
    with capture_logs() as logs:
        page = farm.client.post("/login", data=form, follow_redirects=False)
    assert page.status_code == 507
    assert page.headers["content-type"].startswith("text/html")
    assert "the manager&#39;s data dir is read-only" in page.text
    assert 'id="token-login"' in page.text  # the form, to try again
    assert "internal error" not in page.text
    assert len(refusals(logs)) == 1, logs

    read_only.off()
    nonce = login_nonce(farm.client)
    signed_in = farm.client.post(
        "/login", data={**form, "login_nonce": nonce}, follow_redirects=False
    )
    assert signed_in.status_code == 303, signed_in.text
    assert farm.client.get("/").status_code == 200


@pytest.fixture
def immutable(farm: Farm) -> Iterator[Path]:
    """The blob store's staging folder made immutable: creating a file there is EPERM,
    for root too (what a changed owner or mode is to the manager's own account)."""
    folder = farm.data_dir / "blobs" / "tmp"
    folder.mkdir(parents=True, exist_ok=True)  # made by the first upload otherwise
    made = _run("chattr", "+i", str(folder))
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        _run("chattr", "-i", str(folder))


def test_a_data_dir_the_manager_may_not_write_is_a_507_saying_so(
    farm: Farm, immutable: Path
) -> None:
    with capture_logs() as logs:
        refused = put_blob(farm, FAKE_BLEND + b"x")
    assert refused.status_code == 507, refused.text
    assert "may not write in its data dir (permission denied)" in refused.json()["detail"]
    said = [entry for entry in logs if "permission denied" in str(entry["event"])]
    assert len(said) == 1, logs
    assert not [entry for entry in logs if entry["event"] == "unhandled error"]

    _run("chattr", "-i", str(immutable))
    assert put_blob(farm, FAKE_BLEND + b"x").status_code in (200, 201)
