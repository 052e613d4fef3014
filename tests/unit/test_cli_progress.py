"""The CLI's progress bars in a narrow terminal: the bar and the counts stay on the line.

Rich gave a bar's words (a job's status while the manager is unreachable, the reason it
waits) all the width of an 80-column terminal; the bar and `2/6` were squeezed out, so a
user saw words and no progress. These draw the bars into recording consoles 80 and 60
columns wide, as a terminal would show them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from farmhand.cli import jobs_cmd
from farmhand.cli.progress import transfer_progress
from farmhand.client import FarmhandClient
from tests.unit.test_cli_jobs import _job as cli_jobs_job

BAR = "━"
WAITING = "waiting: the job needs Blender 5.0 or newer; the online workers have 3.4.1"


def _terminal(width: int) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, record=True)


def _frames(screen: Console) -> list[str]:
    """The lines a terminal showed, frame after frame: the bar redraws in place (carriage
    returns, cursor moves), so the raw output is split there, its colours dropped."""
    raw = re.sub(r"\x1b\[[0-9;]*m", "", screen.file.getvalue())  # type: ignore[attr-defined]
    return [line for line in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", raw) if line.strip()]


def _job(status: str, done: int, reason: str | None = None) -> dict[str, object]:
    """test_cli_jobs' job, with what makes the line longest: a time left and a memory
    peak."""
    return {
        **cli_jobs_job(status, done, reason),
        "eta_seconds": 4000,
        "seconds_per_frame": 41.5,
        "peak_memory_bytes": 3 * 2**30,
    }


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


@pytest.mark.parametrize("width", [80, 60])
def test_following_a_job_keeps_its_bar_and_frame_count_in_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    """`submit --wait` while the manager is unreachable: the bar's words are long (the
    status says it retries, the tail says why the job waits). The line still fits, with
    the bar and `2/6`, the words cut with an ellipsis."""
    answers: Iterator[Callable[[httpx.Request], httpx.Response]] = iter(
        [
            lambda r: httpx.Response(200, json=_job("active", 2, WAITING)),
            _refused,
            lambda r: httpx.Response(200, json=_job("completed", 6)),
        ]
    )
    screen = _terminal(width)
    monkeypatch.setattr(jobs_cmd, "err", screen)
    client = FarmhandClient(
        "http://m.test", "t", transport=httpx.MockTransport(lambda r: next(answers)(r))
    )
    jobs_cmd.follow(client, 3, sleep=lambda _: None, retry_for=600)
    lines = _frames(screen)
    retrying = [line for line in lines if line.startswith("job 3 active · ")]
    assert retrying, lines
    for line in retrying:
        assert len(line) <= width
        assert "2/6" in line, f"the frame count is gone: {line!r}"
        assert BAR * 5 in line, f"the bar is gone: {line!r}"
        assert "…" in line, "the words are cut, and say so"
    assert any("6/6" in line and BAR * 5 in line for line in lines), "the finished bar"


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("files", [True, False])
def test_a_transfer_keeps_its_bar_and_counts_in_a_narrow_terminal(width: int, files: bool) -> None:
    """Uploads (`submit`), downloads and `backup` draw this bar; a long description (a
    big job id, a count of blobs) gives way to the bar, the bytes and the file count."""
    screen = _terminal(width)
    bar = transfer_progress(screen, files=files)
    task = bar.add_task(
        "downloading job 123456 (shot_010_lighting_final_v12)",
        total=1023 * 2**20,
        files="312/1024 files",
    )
    bar.update(task, completed=512 * 2**20)
    screen.print(bar.get_renderable())
    (line,) = screen.export_text().splitlines()
    assert len(line) <= width
    assert "0.5/1.1 GB" in line, line
    assert BAR * 5 in line, line
    assert ("312/1024 files" in line) == files, line


def test_a_zip_download_shows_how_big_the_zip_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`farmhand download --inputs`: the manager lays a job's zip out before sending it
    and says its length, so the bar shows how far along it is (`1.0/3.0 MB`), not only a
    count of bytes with no end (it had no total, and `--inputs` had no bar at all)."""
    body = b"PK" + bytes(3_000_000 - 2)

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/jobs/3/inputs.zip"
        return httpx.Response(
            200,
            content=body,
            headers={
                "etag": '"zip-abc"',
                "content-disposition": 'attachment; filename="job-3-shot-inputs.zip"',
            },
        )

    screen = _terminal(80)
    monkeypatch.setattr(jobs_cmd, "err", screen)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient(
            "http://m.test", "t", transport=httpx.MockTransport(answer)
        ),
    )
    jobs_cmd.download(3, output=tmp_path, inputs=True, url=None, token=None)
    assert (tmp_path / "job-3-shot-inputs.zip").read_bytes() == body
    lines = _frames(screen)
    assert any("3.0/3.0 MB" in line and BAR * 5 in line for line in lines), lines
