"""A real worker whose disk is full is listed as having given its task back, not `idle`.

`test_runner_gave_back.py` drives the runner API by hand; this runs a worker agent (with a
stand-in renderer) whose work dir is a 1 MiB tmpfs against a real `farmhand manager`
process, as QA would see it in `farmhand runners` and on the runners page: while it takes
no task after its fault, its status note says which task it gave back and why; stopped
(it signs off), it is offline with nothing more to say. Mounting needs root; where it is
not allowed the test is skipped, saying why.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from farmhand.localfarm import LocalFarm
from tests.integration.conftest import FAKE_BLEND, submit_stand_in
from tests.integration.test_worker_local_faults import _start, full_disk
from tests.integration.waiting import wait_for

__all__ = ["full_disk"]  # the fixture, used by name


def runner(admin: httpx.Client, name: str) -> dict[str, Any] | None:
    listed = admin.get("/api/admin/runners")
    assert listed.status_code == 200, listed.text
    return next((one for one in listed.json() if one["name"] == name), None)


def test_a_worker_with_a_full_disk_is_listed_with_the_task_it_gave_back(
    manager: LocalFarm, full_disk: Path
) -> None:
    headers = {"Authorization": f"Bearer {manager.admin_token}"}
    stop = threading.Event()
    with httpx.Client(base_url=manager.url, headers=headers, timeout=30) as admin:
        blend = FAKE_BLEND + b"\x00" * (2 * 1024 * 1024)  # more than the disk holds
        job_id = submit_stand_in(admin, blend=blend, frame_start=1, frame_end=3)
        broken = _start(manager, "broken", full_disk / "work", stop)
        try:

            def noted() -> dict[str, Any] | None:
                found = runner(admin, "broken")
                return found if found and found["status_note"] else None

            listed = wait_for(noted, 60, "the broken worker to give its task back")
            assert listed["status"] == "idle"
            note = listed["status_note"]
            assert note.startswith("gave task "), note
            assert f" of job {job_id} back: cannot work: [Errno 28] No space left on device" in (
                note
            )
            assert "broken" not in note, "the row names the runner; the note need not"
        finally:
            stop.set()
            broken.join(15)
        assert not broken.is_alive()
        # It signed off: offline, and its give-back is no longer said.
        gone = runner(admin, "broken")
        assert gone is not None
        assert (gone["status"], gone["status_note"]) == ("offline", None)
