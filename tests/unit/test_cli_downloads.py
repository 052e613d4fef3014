"""What `farmhand download` writes of a job and what it says about it, against a
scripted manager: every file the scene was asked to write, counted by kind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from farmhand.cli.downloads import Downloaded, download_job
from farmhand.cli.words import frames_label, plural
from farmhand.client import FarmhandClient, FarmhandError


def _files() -> list[dict[str, object]]:
    def row(id_: int, kind: str, path: str, frame: int | None) -> dict[str, object]:
        return {"id": id_, "kind": kind, "path": path, "size": 3,
                "sha256": hashlib.sha256(f"F{id_}!".encode()).hexdigest(),
                "frame": frame}  # fmt: skip

    return [
        row(1, "input", "scene.blend", None),
        row(2, "output", "frames/0001.png", 1),
        row(3, "output", "frames/0002.png", 2),
        row(4, "output", "video.webm", None),
        row(5, "pass", "passes/00-Passes__depth_normal_ü/passes_normal0001.exr", 1),
        row(6, "preview", "previews/0001.jpg", 1),
        row(7, "tile", "tiles/0001/r0c0.png", 1),
    ]


def _manager(files: list[dict[str, object]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/4/files":
            return httpx.Response(200, json=files)
        return httpx.Response(200, content=f"F{request.url.path.split('/')[-2]}!".encode())

    return httpx.MockTransport(handler)


def test_a_download_writes_frames_video_and_passes_and_counts_each(tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    with FarmhandClient("http://m", "tok", transport=_manager(_files())) as client:
        written = download_job(client, 4, tmp_path, lambda d, t: progress.append((d, t)))
    assert str(written) == "2 frames, 1 pass and the video (video.webm)"
    tree = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert tree == {
        "frames/0001.png",
        "frames/0002.png",
        "video.webm",
        "passes/00-Passes__depth_normal_ü/passes_normal0001.exr",
    }, "no input, preview or tile"
    assert progress[-1] == (12, 12)


def test_a_pass_path_that_climbs_out_is_refused(tmp_path: Path) -> None:
    files = [*_files(), {"id": 9, "kind": "pass", "path": "../evil.png", "size": 1,
                         "sha256": "9" * 64, "frame": 1}]  # fmt: skip
    with (
        FarmhandClient("http://m", "tok", transport=_manager(files)) as client,
        pytest.raises(FarmhandError, match="unsafe output path"),
    ):
        download_job(client, 4, tmp_path / "out", lambda d, t: None)
    assert not (tmp_path / "evil.png").exists()


@pytest.mark.parametrize(
    ("downloaded", "said"),
    [
        (Downloaded(0, 0, ()), "0 frames"),
        (Downloaded(1, 0, ()), "1 frame"),
        (Downloaded(10, 0, ("video.webm",)), "10 frames and the video (video.webm)"),
        (Downloaded(10, 6, ("video.webm",)), "10 frames, 6 passes and the video (video.webm)"),
        (Downloaded(0, 2, ()), "2 passes"),
    ],
)
def test_what_a_download_says_it_wrote(downloaded: Downloaded, said: str) -> None:
    assert str(downloaded) == said


@pytest.mark.parametrize(
    ("frames", "label"),
    [
        ([], "-"),
        ([7], "7"),
        ([1, 2, 3], "1-3"),
        ([1, 4, 7, 10], "1-10x3"),
        ([-4, -2, 0], "-4-0x2"),
        ([1, 2, 5], "1,2,5"),
    ],
)
def test_a_tasks_frames_are_written_as_frames_takes_them(frames: list[int], label: str) -> None:
    assert frames_label(frames) == label


def test_plural() -> None:
    assert [plural(n, "pass", "passes") for n in (0, 1, 2)] == ["0 passes", "1 pass", "2 passes"]
    assert plural(1, "file") == "1 file"
