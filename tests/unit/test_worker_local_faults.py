"""Which errors are the worker's machine's (give the task back) and which the job's (fail
it): `agent.local_fault`, also on what Blender says it could not write
(`process.blender_write_errors`)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.agent import local_fault
from farmhand.worker.blender.process import blender_write_errors
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


# What Blender printed rendering to a full tmpfs (3.4 for a PNG and a JPEG frame, 3.4 and
# 5.0 for an OpenEXR frame and its preview), `{out}` being the frames' folder.
BLENDER_FULL_DISK = [
    "Error: Render error (No space left on device) cannot save: '{out}/frame_0001.png'",
    "{out}/frame_0001.jpg: No space left on device",
    "OpenEXR-writePixels: ERROR: Failed to write pixel data to image file "
    '"{out}/frame_0001.exr". No space left on device.',
    "00:02.904  image.openexr    | ERROR IMB_exr_write_channels: Failed to write pixel data "
    'to image file "{out}/frame_0001.exr". No space left on device.',
    "Error: Could not write image: No space left on device\nError: Image 'Render Result' "
    "could not be saved to '{out}/previews/frame_0001.jpg'\n"
    "{out}/previews/frame_0001.jpg: No space left on device",
]


@pytest.mark.parametrize("said", BLENDER_FULL_DISK)
def test_a_frame_blender_cannot_save_on_a_full_work_dir_is_the_machines_fault(
    tmp_path: Path, said: str
) -> None:
    work_dir = tmp_path / "work"
    out = work_dir / "outbox" / "task-1" / "frames"
    [error] = blender_write_errors([said.format(out=out)])
    assert error.errno == errno.ENOSPC and str(out) in str(error.filename)
    why = local_fault(error, _task(tmp_path), "linux", {}, work_dir)
    assert why is not None and str(out) in why, why


@pytest.mark.parametrize(
    "said",
    [
        # a File Output node's path that does not exist, or is not the worker's to write
        "Error: Render error (No such file or directory) cannot save: '/nonexistent/a.png'",
        "Error: Render error (Permission denied) cannot save: '/srv/renders/a.png'",
        # a full share the scene writes to: every worker would meet it
        "/mnt/share/renders/a.png: No space left on device",
    ],
)
def test_what_a_scene_cannot_write_outside_the_work_dir_is_the_jobs_fault(
    tmp_path: Path, said: str
) -> None:
    errors = blender_write_errors([said])
    assert errors, "read as an error about a file"
    for error in errors:
        assert local_fault(error, _task(tmp_path), "linux", {}, tmp_path / "work") is None


def test_a_line_naming_no_file_says_nothing_about_this_machine() -> None:
    """No path: whose disk it is cannot be told, so nothing is read from the line."""
    assert blender_write_errors(["Error: Could not write image: No space left on device"]) == []
    assert blender_write_errors(["Fra:1 Mem:9.06M (Peak 9.06M) | Time:00:00.07 | Sample 2/2"]) == []
