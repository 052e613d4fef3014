"""The worker's blob cache, job trees and background uploader."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from farmhand.client import FarmhandError, ManagerUnreachable
from farmhand.client.retry import RetryPolicy
from farmhand.shared.schemas import TaskFile
from farmhand.worker.cache import (
    BlobCache,
    CacheError,
    materialise,
    parse_size,
    prune_job_dirs,
    prune_task_logs,
)
from farmhand.worker.uploads import FrameUploader


def _file(path: str, data: bytes) -> TaskFile:
    return TaskFile(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def test_materialise_downloads_each_blob_once_and_links_the_tree(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    data = {"scene.blend": b"blend", "tex/wood.png": b"wood", "tex/copy.png": b"wood"}
    files = [_file(p, d) for p, d in data.items()]
    fetched: list[str] = []

    def download(task_file: TaskFile, dest: Path) -> None:
        fetched.append(task_file.path)
        dest.write_bytes(data[task_file.path])

    materialise(cache, tmp_path / "jobs/1", files, download)
    materialise(cache, tmp_path / "jobs/2", files, download)
    assert fetched == ["scene.blend", "tex/wood.png"]  # same bytes, one download
    assert (tmp_path / "jobs/2/tex/copy.png").read_bytes() == b"wood"
    blob = cache.path_for(files[1].sha256)
    assert blob.parent.name == files[1].sha256[:2]
    assert (tmp_path / "jobs/1/tex/wood.png").stat().st_ino == blob.stat().st_ino


def test_corrupted_download_is_rejected_and_not_cached(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    task_file = _file("scene.blend", b"good")
    with pytest.raises(CacheError, match="SHA-256"):
        materialise(cache, tmp_path / "job", [task_file], lambda f, d: d.write_bytes(b"evil"))
    assert not cache.has(task_file.sha256)
    assert not (tmp_path / "job/scene.blend").exists()
    assert list((tmp_path / "cache/tmp").iterdir()) == []


@pytest.mark.parametrize("bad", ["/abs.blend", "../up.blend", "a/../../b.blend", "C:/x.blend"])
def test_escaping_paths_are_refused_before_any_download(tmp_path: Path, bad: str) -> None:
    calls: list[str] = []
    files = [_file("ok.blend", b"x"), _file(bad, b"y")]
    with pytest.raises(CacheError):
        materialise(
            BlobCache(tmp_path / "c"), tmp_path / "job", files, lambda f, d: calls.append(f.path)
        )
    assert calls == []


def test_uploader_retries_while_unreachable_then_reports_all_frames(tmp_path: Path) -> None:
    attempts: list[int] = []

    def upload(frame: int, path: Path) -> None:
        attempts.append(frame)
        if attempts.count(frame) < 3:
            raise ManagerUnreachable("down")

    uploader = FrameUploader(upload, RetryPolicy(give_up_after=10, first_delay=0.01))
    for frame in (1, 2):
        uploader.submit(frame, tmp_path / f"{frame}.png")
    report = uploader.wait(10)
    assert report.uploaded == [1, 2] and report.error is None
    assert attempts == [1, 1, 1, 2, 2, 2]


def test_uploader_stops_on_a_refusal_and_reports_it(tmp_path: Path) -> None:
    def upload(frame: int, path: Path) -> None:
        if frame == 2:
            raise FarmhandError("not a valid PNG", 400)

    uploader = FrameUploader(upload, RetryPolicy(first_delay=0.01))
    for frame in (1, 2, 3):
        uploader.submit(frame, tmp_path / "f.png")
    report = uploader.wait(10)
    assert report.uploaded == [1]
    assert report.error is not None and report.error.status_code == 400


def test_abandon_stops_a_retrying_uploader(tmp_path: Path) -> None:
    def upload(frame: int, path: Path) -> None:
        raise ManagerUnreachable("down")

    uploader = FrameUploader(upload, RetryPolicy(give_up_after=None, first_delay=0.05))
    uploader.submit(1, tmp_path / "f.png")
    uploader.abandon()
    assert uploader.join(2)
    assert uploader.report().uploaded == []


def _seed(cache: BlobCache, data: bytes, last_use: float) -> str:
    sha = hashlib.sha256(data).hexdigest()
    cache.add(sha, lambda tmp: tmp.write_bytes(data))
    os.utime(cache.path_for(sha), (last_use, last_use))
    return sha


def test_over_its_limit_the_cache_drops_least_recently_used_first(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=250)
    oldest = _seed(cache, b"a" * 100, 1_000)
    middle = _seed(cache, b"b" * 100, 2_000)
    newest = _seed(cache, b"c" * 100, 3_000)
    # Using the oldest blob again makes it the most recent: `middle` is now the LRU one.
    cache.add(oldest, lambda tmp: pytest.fail("a cached blob is not downloaded again"))

    evicted = cache.evict()

    assert [e.sha256 for e in evicted] == [middle]
    assert cache.has(oldest) and cache.has(newest) and not cache.has(middle)
    assert cache.size() == 200


def test_eviction_never_removes_a_blob_the_current_job_uses(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=150)
    old = _seed(cache, b"o" * 100, 1_000)
    files = [_file("scene.blend", b"s" * 100), _file("tex.png", b"t" * 100)]
    payload = {f.path: d for f, d in zip(files, (b"s" * 100, b"t" * 100), strict=True)}

    report = materialise(
        cache, tmp_path / "job", files, lambda f, dest: dest.write_bytes(payload[f.path])
    )

    assert report.downloaded_bytes == 200
    assert not cache.has(old), "the old blob made room"
    assert all(cache.has(f.sha256) for f in files), "the job's blobs stay, even over the limit"
    assert (tmp_path / "job/tex.png").read_bytes() == b"t" * 100


def test_a_second_job_with_the_same_files_downloads_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=10_000)
    data = {"scene.blend": b"blend" * 10, "tex/wood.png": b"wood" * 10}
    files = [_file(p, d) for p, d in data.items()]

    def download(task_file: TaskFile, dest: Path) -> None:
        dest.write_bytes(data[task_file.path])

    first = materialise(cache, tmp_path / "jobs/1", files, download)
    second = materialise(cache, tmp_path / "jobs/2", files, download)
    assert (first.downloaded_files, first.downloaded_bytes) == (2, 90)
    assert (second.downloaded_files, second.downloaded_bytes, second.cached_files) == (0, 0, 2)


def test_tree_is_hard_linked_and_copied_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = BlobCache(tmp_path / "cache")
    files = [_file("scene.blend", b"blend")]
    linked = materialise(cache, tmp_path / "linked", files, lambda f, d: d.write_bytes(b"blend"))
    assert (linked.linked, linked.copied) == (1, 0)
    blob = cache.path_for(files[0].sha256)
    assert (tmp_path / "linked/scene.blend").stat().st_ino == blob.stat().st_ino

    def no_links(*_: object) -> None:  # what another filesystem or Windows without rights says
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = materialise(cache, tmp_path / "copied", files, lambda f, d: pytest.fail("cached"))
    assert (copied.linked, copied.copied) == (0, 1)
    placed = tmp_path / "copied/scene.blend"
    assert placed.read_bytes() == b"blend"
    assert placed.stat().st_ino != blob.stat().st_ino


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("20G", 20 * 1024**3),
        ("500M", 500 * 1024**2),
        ("1.5k", 1536),
        ("4096", 4096),
        ("2GiB", 2 * 1024**3),
    ],
)
def test_cache_sizes_read_like_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "twenty", "-5G", "5X"])
def test_bad_cache_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_room_is_made_before_downloading(tmp_path: Path) -> None:
    """The old blobs go before the new ones arrive: the cache never needs limit + job."""
    cache = BlobCache(tmp_path / "cache", max_bytes=200)
    old = [_seed(cache, bytes([n]) * 100, 1_000 + n) for n in range(2)]
    new = _file("scene.blend", b"n" * 100)
    seen_during_download: list[int] = []

    def download(task_file: TaskFile, dest: Path) -> None:
        seen_during_download.append(cache.size())
        dest.write_bytes(b"n" * 100)

    materialise(cache, tmp_path / "job", [new], download)
    assert seen_during_download == [100], "the oldest blob was evicted before the download"
    assert not cache.has(old[0]) and cache.has(old[1]) and cache.has(new.sha256)


def _disk_bytes(root: Path) -> int:
    """What the files under `root` take on the disk: each inode once, as `du` counts."""
    inodes: dict[int, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            inodes[stat.st_ino] = stat.st_size
    return sum(inodes.values())


def test_the_limit_holds_for_the_cache_and_the_job_trees_together(tmp_path: Path) -> None:
    """Job trees hard-link the blobs: a blob evicted while an older job's tree still
    links it frees nothing. The work dir stays within the limit, job after job, and the
    log counts only bytes that left the disk."""
    work, size = tmp_path / "work", 100_000
    trees = work / "jobs"
    cache = BlobCache(work / "cache", max_bytes=2 * size + size // 2)
    for job in range(1, 6):
        data = bytes([job]) * size

        def download(_file: TaskFile, dest: Path, data: bytes = data) -> None:
            dest.write_bytes(data)

        with capture_logs() as logs:
            materialise(
                cache, trees / str(job), [_file("scene.blend", data)], download, trees=trees
            )
        assert (trees / str(job) / "scene.blend").read_bytes() == data, "the current tree stays"
        prune_job_dirs(trees, current=job)  # as the agent does after each task
        assert _disk_bytes(work) <= 2 * size + size // 2, f"job {job}: over the limit"
        evictions = [e for e in logs if e["event"] == "cache evicted"]
        if job >= 3:
            assert [e["freed_bytes"] for e in evictions] == [size]


def test_task_logs_are_capped_by_size_too_never_the_current_one(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(5):
        path = logs / f"task-{n}.log"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000 + n, 1_000 + n))
    running = logs / "task-0.log"  # the oldest, but its task still runs

    prune_task_logs(logs, keep=10, max_bytes=250, current=running)

    assert sorted(p.name for p in logs.iterdir()) == ["task-0.log", "task-3.log", "task-4.log"]


@pytest.mark.parametrize("status", [404, 409])
def test_a_late_frame_refused_as_not_this_workers_is_no_error_in_the_log(
    tmp_path: Path, status: int
) -> None:
    """A worker that comes back after its task went to another is told to stop; its
    frame's refusal is the farm working, so it must not page whoever alerts on errors."""

    def upload(frame: int, path: Path) -> None:
        raise FarmhandError("task 7 is not assigned to this runner any more", status)

    with capture_logs() as logs:
        uploader = FrameUploader(upload, RetryPolicy(first_delay=0.01))
        uploader.submit(1, tmp_path / "f.png")
        report = uploader.wait(10)
    assert report.error is not None and report.error.status_code == status
    said = [(entry["log_level"], entry["event"]) for entry in logs if entry.get("frame") == 1]
    assert said == [("info", "frame not taken: the task is no longer this worker's")]


def test_a_refused_frame_is_still_an_error_in_the_log(tmp_path: Path) -> None:
    def upload(frame: int, path: Path) -> None:
        raise FarmhandError("not a valid PNG", 400)

    with capture_logs() as logs:
        uploader = FrameUploader(upload, RetryPolicy(first_delay=0.01))
        uploader.submit(1, tmp_path / "f.png")
        uploader.wait(10)
    assert [entry["log_level"] for entry in logs if entry.get("frame") == 1] == ["error"]


def test_a_full_disk_while_downloading_names_where(tmp_path: Path) -> None:
    """A write's error carries no file name: the worker's "cannot work" line and the
    task's note said only "[Errno 28] No space left on device" (QA round 13)."""
    cache = BlobCache(tmp_path / "cache")

    def download(task_file: TaskFile, dest: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as full:
        materialise(cache, tmp_path / "job", [_file("scene.blend", b"blend")], download)
    assert full.value.errno == errno.ENOSPC
    assert full.value.filename is not None
    assert Path(full.value.filename).is_relative_to(tmp_path / "cache")
    assert str(tmp_path / "cache") in str(full.value)
