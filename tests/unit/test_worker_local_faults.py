"""Which errors are the worker's machine's (give the task back) and which the job's (fail
it): `agent.local_fault`."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.agent import local_fault
from farmhand.worker.cache import CacheError
from farmhand.worker.layout import SharedStorageError, shared_blend


def _task(root: Path) -> TaskAssignment:
    return TaskAssignment(
        task_id=1,
        job_id=1,
        job_name="shot",
        type="render",
        frames=[1],
        main_file="{projects}/sh010/scene.blend",
        files=[],
        output_format="PNG",
        resolution_percentage=None,
        samples=None,
        attempt=1,
        storage="shared",
        path_variables={"projects": {"linux": str(root)}},
    )


def _why(task: TaskAssignment, exc: BaseException) -> str | None:
    return local_fault(exc, task, "linux", {})


def _missing_blend(task: TaskAssignment) -> SharedStorageError:
    with pytest.raises(SharedStorageError) as raised:
        shared_blend(task, "linux", {})
    return raised.value


def test_a_share_that_is_not_mounted_is_the_machines_fault(tmp_path: Path) -> None:
    empty_mount_point = tmp_path / "mnt"
    empty_mount_point.mkdir()
    for root in (empty_mount_point, tmp_path / "absent"):
        task = _task(root)
        why = _why(task, _missing_blend(task))
        assert why is not None and "missing or empty" in why


def test_a_file_missing_on_a_mounted_share_is_the_jobs_fault(tmp_path: Path) -> None:
    (tmp_path / "mnt" / "other").mkdir(parents=True)
    task = _task(tmp_path / "mnt")
    assert _why(task, _missing_blend(task)) is None


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_is_the_machines_fault(tmp_path: Path, code: int) -> None:
    try:
        try:
            raise OSError(code, "disk trouble", str(tmp_path / "cache" / "tmp"))
        except OSError as inner:
            raise CacheError("cannot place scene.blend") from inner
    except CacheError as wrapped:
        assert _why(_task(tmp_path), wrapped) is not None


def test_wrong_bytes_or_a_bad_path_are_the_jobs_fault(tmp_path: Path) -> None:
    assert _why(_task(tmp_path), CacheError("downloaded file has SHA-256 …")) is None
    assert _why(_task(tmp_path), OSError(errno.ENAMETOOLONG, "File name too long")) is None


def test_a_share_file_this_worker_may_not_read_is_the_jobs_fault(tmp_path: Path) -> None:
    """Every worker would be refused it: given back each time, with no attempt counted,
    the job would wait for ever with no reason. Failing it lets the retry rule end it."""
    work_dir, share = tmp_path / "work", tmp_path / "mnt"
    task = _task(share)
    for code in (errno.EACCES, errno.EPERM):
        denied = OSError(code, "Permission denied", str(share / "sh010" / "scene.blend"))
        assert local_fault(denied, task, "linux", {}, work_dir) is None
        own = OSError(code, "Permission denied", str(work_dir / "cache" / "tmp"))
        assert local_fault(own, task, "linux", {}, work_dir) is not None
    # A write to a file it has open names no file: its own disk.
    assert local_fault(OSError(errno.ENOSPC, "No space left"), task, "linux", {}, work_dir)
