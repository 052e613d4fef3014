"""A zip download cut off between its last byte and its rename is finished, not fetched
again.

`farmhand download --zip`/`--inputs` resumes a zip from its `.part` (and the zip's ETag
in `.part.etag`). A part that already held the whole zip (the download stopped after
its last byte, before the rename) got `416` from the manager, and the client then
fetched the whole zip again: 30 GB for nothing. Now the `416`'s `Content-Range: bytes
*/<size>` and `ETag` tell the client the part is the zip; it is renamed, and the CLI's
bar ends at 100%. A part longer than the zip, or a `416` for another zip, still means
fetching it whole. Against a real manager process; the client's requests are recorded
by its transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from farmhand.cli import jobs_cmd
from farmhand.cli.app import app
from farmhand.cli.progress import transfer_progress
from farmhand.client import FarmhandClient
from farmhand.localfarm import LocalFarm
from tests.integration.conftest import cli_api_fixture, farm_fixture, submit_stand_in

farm = farm_fixture()
api = cli_api_fixture()


class Recording(httpx.HTTPTransport):
    """The client's transport to the real manager, noting each request's range headers
    and each answer's status; `other_etag`: said instead of the ETag of a `416`."""

    def __init__(self, other_etag: str | None = None) -> None:
        super().__init__()
        self.other_etag = other_etag
        self.seen: list[tuple[str | None, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = super().handle_request(request)
        self.seen.append(
            (request.headers.get("range"), request.headers.get("if-range"), answer.status_code)
        )
        if self.other_etag is not None and answer.status_code == 416:
            answer.headers["etag"] = self.other_etag
        return answer


def inputs_zip(api: httpx.Client) -> tuple[int, bytes, str]:
    """A job named `finished`, its inputs.zip and that zip's ETag."""
    job_id = submit_stand_in(api, frame_start=1, frame_end=1, name="finished")
    answer = api.get(f"/api/jobs/{job_id}/inputs.zip")
    assert answer.status_code == 200, answer.text
    return job_id, answer.content, answer.headers["etag"]


def leave_part(dest: Path, data: bytes, etag: str) -> None:
    """What a download cut off after `data` left behind: the part and the zip's ETag."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.etag").write_text(etag + "\n")


def download(
    farm: LocalFarm, transport: Recording, job_id: int, dest: Path, **options: Any
) -> tuple[Path, list[int], list[int]]:
    """`download_inputs_zip`: the zip's path, the bytes each chunk counted and the
    sizes said (what a progress bar is told)."""
    progress: list[int] = []
    sizes: list[int] = []
    with FarmhandClient(farm.url, farm.admin_token, transport=transport) as client:
        path = client.download_inputs_zip(
            job_id, dest, on_chunk=progress.append, on_size=sizes.append, **options
        )
    return path, progress, sizes


@pytest.mark.parametrize("into", [False, True], ids=["to a path", "into a folder"])
def test_a_part_that_is_the_whole_zip_is_renamed_not_fetched_again(
    farm: LocalFarm, api: httpx.Client, tmp_path: Path, into: bool
) -> None:
    job_id, whole, etag = inputs_zip(api)
    dest = tmp_path / "out" / f"job-{job_id}-finished-inputs.zip"
    leave_part(dest, whole, etag)
    transport = Recording()
    path, progress, sizes = download(
        farm, transport, job_id, dest.parent if into else dest, into=into
    )
    assert path == dest
    assert path.read_bytes() == whole
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no part, no tag
    resume = (f"bytes={len(whole)}-", etag, 416)
    # Into a folder, a first plain request learns the zip's name (closed unread).
    assert transport.seen == ([(None, None, 200), resume] if into else [resume])
    assert (sum(progress), sizes) == (len(whole), [len(whole)])  # a bar at 100%


def test_a_part_longer_than_the_zip_is_fetched_again(
    farm: LocalFarm, api: httpx.Client, tmp_path: Path
) -> None:
    job_id, whole, etag = inputs_zip(api)
    dest = tmp_path / "inputs.zip"
    leave_part(dest, whole + b"junk", etag)
    transport = Recording()
    path, progress, sizes = download(farm, transport, job_id, dest)
    assert path.read_bytes() == whole
    assert transport.seen == [(f"bytes={len(whole) + 4}-", etag, 416), (None, None, 200)]
    assert (sum(progress), sizes) == (len(whole), [len(whole)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.zip"]


def test_a_416_of_another_zip_is_not_taken_for_this_one(
    farm: LocalFarm, api: httpx.Client, tmp_path: Path
) -> None:
    """A `416` whose ETag is not the part's (a proxy answering from another zip it
    holds) says nothing about the part: the zip is fetched again whole."""
    job_id, whole, etag = inputs_zip(api)
    dest = tmp_path / "inputs.zip"
    leave_part(dest, b"\0" * len(whole), etag)
    transport = Recording(other_etag='"zip-another"')
    path, _, _ = download(farm, transport, job_id, dest)
    assert path.read_bytes() == whole
    assert transport.seen == [(f"bytes={len(whole)}-", etag, 416), (None, None, 200)]


def test_the_cli_finishes_a_whole_part_with_its_bar_at_100_percent(
    farm: LocalFarm, api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`farmhand download --inputs` of a zip whose part is whole: saved, and its bar's
    last state is the zip's size done of the zip's size."""
    job_id, whole, etag = inputs_zip(api)
    dest = tmp_path / "out" / f"job-{job_id}-finished-inputs.zip"
    leave_part(dest, whole, etag)
    bars: list[Progress] = []

    def recorded(*args: Any, **kwargs: Any) -> Progress:
        bars.append(transfer_progress(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(jobs_cmd, "transfer_progress", recorded)
    result = CliRunner().invoke(app, ["download", str(job_id), "--inputs", "-o", str(dest.parent)])
    assert result.exit_code == 0, result.output
    assert f"inputs in {dest}" in result.stdout
    assert dest.read_bytes() == whole
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
    ((task,),) = [bar.tasks for bar in bars]
    assert (task.completed, task.total) == (len(whole), len(whole))
