"""The worker's blob cache, job trees and background uploader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from farmhand.client import FarmhandError, ManagerUnreachable
from farmhand.client.retry import RetryPolicy
from farmhand.shared.schemas import TaskFile
from farmhand.worker.cache import BlobCache, CacheError, materialise
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
