"""`farmhand download` (files and `--zip`) and `farmhand job` against a real manager
process: a download holds every file the scene was asked to write (frames and File
Output passes, under the paths the files list shows; not previews), says what it wrote
by kind, and says when the job is not done; `farmhand job` shows a task's frames as
`--frames` takes them and the Blender series the job is pinned to.

The commands run in-process (`CliRunner`, with FARMHAND_URL and FARMHAND_TOKEN set);
the runner is scripted HTTP calls, as in test_cli_control.py.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
from PIL import Image
from typer.testing import CliRunner, Result

from farmhand.cli.app import app
from farmhand.localfarm import LocalFarm
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import (
    FAKE_BLEND,
    cli_api_fixture,
    farm_fixture,
    png_bytes,
    submit_stand_in,
)

PASS_FOLDER = "00-Passes__depth_normal_ü"


farm = farm_fixture(heartbeat_timeout=600.0)
api = cli_api_fixture()


def farmhand(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), "green").save(buffer, format="JPEG")
    return buffer.getvalue()


def runner(api: httpx.Client, farm: LocalFarm) -> dict[str, str]:
    """A runner that renders with Blender 5.0 (so its first claim pins the job)."""
    caps = {"blender_versions": ["5.0.1"], "task_types": ["render"], "protocol": WORKER_PROTOCOL}
    answer = api.post(
        "/api/runner/register",
        json={"token": farm.runner_token, "name": "w1", "capabilities": caps},
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def render(api: httpx.Client, who: dict[str, str], task: dict[str, Any], frame: int) -> None:
    """Frame `frame` of `task` as a worker sends it: the frame, two File Output files of
    it and Blender's preview."""
    base = f"/api/runner/tasks/{task['task_id']}/frames/{frame}"
    api.put(f"{base}.png", headers=who, content=png_bytes()).raise_for_status()
    for name in (f"passes_normal{frame:04d}.png", f"passes_depth{frame:04d}.png"):
        api.put(
            f"{base}/pass/{PASS_FOLDER}/{name}", headers=who, content=png_bytes(colour="blue")
        ).raise_for_status()
    api.put(f"{base}/preview/preview.jpg", headers=who, content=jpeg_bytes()).raise_for_status()


def files_tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_download_holds_frames_and_passes_and_says_what_it_is(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    job_id = submit_stand_in(
        api, frame_start=1, frame_end=10, frame_step=3, chunk_size=4, name="comp & passes"
    )
    who = runner(api, farm)
    task = api.get("/api/runner/tasks", params={"wait": 0}, headers=who).json()
    assert task["frames"] == [1, 4, 7, 10]

    shown = ok(farmhand("job", str(job_id))).output
    assert "│ 1-10x3 │" in shown, "the frames, as --frames takes them"
    assert "renders with Blender 5.0" in shown, shown

    for frame in (1, 4):
        render(api, who, task, frame)
    api.post(
        f"/api/runner/tasks/{task['task_id']}/progress", headers=who, json={"frames_done": 2}
    ).raise_for_status()
    listed = {f["path"] for f in api.get(f"/api/jobs/{job_id}/files").json()}
    passes = {p for p in listed if p.startswith("passes/")}
    assert len(passes) == 4

    early = tmp_path / "early"
    partial = ok(farmhand("download", str(job_id), "-o", str(early)))
    assert f"2 frames and 4 passes in {early}" in partial.stdout
    assert (
        f"warning: job {job_id} is active: 2 of 4 frames rendered so far; "
        "download again when it completes"
    ) in partial.stderr
    assert files_tree(early) == {"frames/0001.png", "frames/0004.png"} | passes

    for frame in (7, 10):
        render(api, who, task, frame)
    api.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=who, json={"frames": [1, 4, 7, 10]}
    ).raise_for_status()
    assert api.get(f"/api/jobs/{job_id}").json()["status"] == "completed"

    done = tmp_path / "done"
    whole = ok(farmhand("download", str(job_id), "-o", str(done)))
    assert f"4 frames and 8 passes in {done}" in whole.stdout
    assert "warning" not in whole.stderr
    frames = {f"frames/{n:04d}.png" for n in (1, 4, 7, 10)}
    passes = {p for p in api_paths(api, job_id) if p.startswith("passes/")}
    assert files_tree(done) == frames | passes, "the passes, not the previews"
    assert f"passes/{PASS_FOLDER}/passes_normal0007.png" in passes

    zipped = ok(farmhand("download", str(job_id), "--zip", "-o", str(tmp_path)))
    assert "warning" not in zipped.stderr
    saved = tmp_path / f"job-{job_id}-comp _ passes.zip"  # as docs/STORAGE.md says
    assert f"outputs in {saved}" in zipped.stdout
    with zipfile.ZipFile(saved) as archive:
        assert set(archive.namelist()) == frames | passes

    named = tmp_path / "named"
    templated = ok(
        farmhand("download", str(job_id), "-o", str(named), "--template", "{job}/{frame}.{ext}")
    )
    assert f"4 frames and 8 passes in {named}" in templated.stdout
    job_frames = {f"comp _ passes/{n}.{'png'}" for n in (1, 4, 7, 10)}
    assert files_tree(named) == job_frames | passes


def test_the_warning_counts_the_frames_written_before_the_worker_reports_them(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    """A worker reports its frames done after uploading them: a frame uploaded since its
    last report is downloaded, and the warning counts it too (it said one fewer)."""
    job_id = submit_stand_in(api, frame_start=1, frame_end=4, chunk_size=4)
    who = runner(api, farm)
    task = api.get("/api/runner/tasks", params={"wait": 0}, headers=who).json()
    for frame in (1, 2, 3):
        render(api, who, task, frame)
    api.post(
        f"/api/runner/tasks/{task['task_id']}/progress", headers=who, json={"frames_done": 2}
    ).raise_for_status()
    assert api.get(f"/api/jobs/{job_id}").json()["frames_done"] == 2, "frame 3 not reported"

    result = ok(farmhand("download", str(job_id), "-o", str(tmp_path)))
    assert f"3 frames and 6 passes in {tmp_path}" in result.stdout
    assert f"warning: job {job_id} is active: 3 of 4 frames rendered so far" in result.stderr
    assert {p for p in files_tree(tmp_path) if p.startswith("frames/")} == {
        "frames/0001.png",
        "frames/0002.png",
        "frames/0003.png",
    }


def api_paths(api: httpx.Client, job_id: int) -> set[str]:
    return {f["path"] for f in api.get(f"/api/jobs/{job_id}/files").json()}


def test_a_canceled_job_downloads_what_it_has_and_says_no_more_will_come(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    job_id = submit_stand_in(api, frame_start=1, frame_end=3, chunk_size=1)
    shown = ok(farmhand("job", str(job_id))).output
    assert "renders with" not in shown, "no render claimed: nothing pinned yet"
    ok(farmhand("cancel", str(job_id)))
    result = ok(farmhand("download", str(job_id), "-o", str(tmp_path)))
    assert f"0 frames in {tmp_path}" in result.stdout
    assert f"warning: job {job_id} canceled: 0 of 3 frames rendered" in result.stderr
    assert f"farmhand requeue {job_id} --failed-only" in result.stderr


def test_a_job_whose_video_failed_says_the_video_is_what_is_missing(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    """Every frame rendered, the video task failed for good: the download says the
    video is missing (not only "2 of 2 frames rendered"), and `--video` says why there
    is none and what makes one, rather than "submit with --video"."""
    job_id = submit_stand_in(
        api, frame_start=1, frame_end=2, chunk_size=2, video=True, max_attempts=1
    )
    who = runner(api, farm)
    task = api.get("/api/runner/tasks", params={"wait": 0}, headers=who).json()
    for frame in (1, 2):
        render(api, who, task, frame)
    api.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=who, json={"frames": [1, 2]}
    ).raise_for_status()
    caps = {"task_types": ["video"], "protocol": WORKER_PROTOCOL}
    maker = api.post(
        "/api/runner/register",
        json={"token": farm.runner_token, "name": "ffmpeg-box", "capabilities": caps},
    ).json()["secret"]
    encoder = {"Authorization": f"Bearer {maker}"}
    video = api.get("/api/runner/tasks", params={"wait": 0}, headers=encoder).json()
    assert video["type"] == "video", video
    api.post(
        f"/api/runner/tasks/{video['task_id']}/fail",
        headers=encoder,
        json={"reason": "ffmpeg failed: exit code -9"},
    ).raise_for_status()
    assert api.get(f"/api/jobs/{job_id}").json()["status"] == "failed"

    result = ok(farmhand("download", str(job_id), "-o", str(tmp_path)))
    assert f"warning: job {job_id} failed: 2 of 2 frames rendered and no video" in result.stderr

    refused = farmhand("download", str(job_id), "--video", "-o", str(tmp_path))
    assert refused.exit_code == 1, refused.output
    said = " ".join(refused.output.split())
    assert f"job {job_id} failed before its video was made (" in said, said
    assert "ffmpeg failed: exit code -9" in said, said
    assert f"farmhand requeue {job_id} --failed-only makes what is missing" in said, said
    assert "submit with --video" not in said


def test_download_video_says_when_a_job_makes_none_or_not_yet(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    plain = submit_stand_in(api, frame_start=1, frame_end=2)
    refused = farmhand("download", str(plain), "--video", "-o", str(tmp_path))
    assert refused.exit_code == 1, refused.output
    assert f"job {plain} makes no video: it was submitted without --video" in " ".join(
        refused.output.split()
    )
    waiting = submit_stand_in(api, frame_start=1, frame_end=2, video=True)
    refused = farmhand("download", str(waiting), "--video", "-o", str(tmp_path))
    assert refused.exit_code == 1, refused.output
    said = " ".join(refused.output.split())
    assert f"job {waiting} is queued and its video is not made yet" in said, said
    assert "(0 of 2 frames so far)" in said, said


def test_the_zip_of_a_job_named_in_japanese_is_saved_under_its_name(
    api: httpx.Client, tmp_path: Path
) -> None:
    job_id = submit_stand_in(api, frame_start=1, frame_end=1, name="ショット & 10")
    answer = api.get(f"/api/jobs/{job_id}/outputs.zip")
    assert answer.status_code == 200, answer.text
    disposition = answer.headers["content-disposition"]
    assert f"filename*=UTF-8''job-{job_id}-{quote('ショット _ 10')}.zip" in disposition
    assert f'filename="job-{job_id}-_ _ 10.zip"' in disposition, "an ASCII stand-in"

    # `farmhand download --zip` saved `job-N.zip` whatever the manager's name for it.
    out = tmp_path / "new folder"
    ok(farmhand("download", str(job_id), "--zip", "-o", str(out)))
    ok(farmhand("download", str(job_id), "--inputs", "-o", str(out)))
    assert {p.name for p in out.iterdir()} == {
        f"job-{job_id}-ショット _ 10.zip",
        f"job-{job_id}-ショット _ 10-inputs.zip",
    }


INPUTS = ["tex/日本.png", "tex/emoji😀.png", "tex/ünï cödé %22.png", "tex/plain.png"]


def saved_name(disposition: str) -> str:
    """The name a browser saves under: RFC 6266's `filename*` (UTF-8, percent-encoded)."""
    encoded = disposition.split("filename*=UTF-8''", 1)[1].split(";", 1)[0]
    return unquote(encoded)


def test_files_named_in_any_script_download_under_their_names(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    """They were a 500 (`'latin-1' codec can't encode`), Latin-1 names went out as raw
    Latin-1 bytes, and `farmhand download --frame` with a Japanese template failed."""
    blend = hashlib.sha256(FAKE_BLEND).hexdigest()
    files = {"scene.blend": blend}
    for path in INPUTS:
        data = path.encode()
        files[path] = hashlib.sha256(data).hexdigest()
        api.put(f"/api/blobs/{files[path]}", content=data).raise_for_status()
    api.put(f"/api/blobs/{blend}", content=FAKE_BLEND).raise_for_status()
    created = api.post(
        "/api/jobs",
        json={"main_file": "scene.blend", "files": files, "frame_start": 1, "frame_end": 1,
              "name": "ショット 10", "output_template": "{job}/{frame:04d}.{ext}"},
    )  # fmt: skip
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    who = runner(api, farm)
    task = api.get("/api/runner/tasks", params={"wait": 0}, headers=who).json()
    render(api, who, task, 1)

    listed = {f["path"]: f["id"] for f in api.get(f"/api/jobs/{job_id}/files").json()}
    for path in INPUTS:
        answer = api.get(f"/api/jobs/{job_id}/files/{listed[path]}/download")
        assert answer.status_code == 200, answer.text
        assert answer.content == path.encode()
        raw = dict(answer.headers.raw)[b"content-disposition"]
        assert raw.isascii() and b"\r" not in raw and b"\n" not in raw
        disposition = raw.decode()
        assert saved_name(disposition) == path.rsplit("/", 1)[1]
        plain = disposition.split('filename="', 1)[1].split('"', 1)[0]
        assert plain.isascii() and plain.endswith(".png"), "an ASCII stand-in"

    one = api.get(f"/api/jobs/{job_id}/outputs/1")
    assert one.status_code == 200, one.text
    assert unquote(one.headers["x-output-name"]) == "ショット 10/0001.png"
    assert saved_name(one.headers["content-disposition"]) == "0001.png"

    by_job = ok(farmhand("download", str(job_id), "--frame", "1", "-o", str(tmp_path / "a")))
    assert "frame 1 in" in by_job.output
    assert (tmp_path / "a" / "ショット 10" / "0001.png").read_bytes() == png_bytes()
    template = "ショット_{frame:04d}.{ext}"
    shot = ok(
        farmhand("download", str(job_id), "--frame", "1", "--template", template, "-o",
                 str(tmp_path / "b"))
    )  # fmt: skip
    assert "frame 1 in" in shot.output
    assert (tmp_path / "b" / "ショット_0001.png").read_bytes() == png_bytes()


def test_downloading_again_skips_what_is_there_and_says_what_it_replaced(
    api: httpx.Client, farm: LocalFarm, tmp_path: Path
) -> None:
    """The same download again rewrote every file, and a file edited since was replaced
    without a word (`100 frames in dl9`)."""
    job_id = submit_stand_in(api, frame_start=1, frame_end=3, chunk_size=3)
    who = runner(api, farm)
    task = api.get("/api/runner/tasks", params={"wait": 0}, headers=who).json()
    for frame in (1, 2, 3):
        render(api, who, task, frame)
    api.post(
        f"/api/runner/tasks/{task['task_id']}/complete", headers=who, json={"frames": [1, 2, 3]}
    ).raise_for_status()
    out = tmp_path / "dl"
    first = ok(farmhand("download", str(job_id), "-o", str(out)))
    assert f"3 frames and 6 passes in {out}\n" in first.stdout, first.stdout
    kept = out / "frames" / "0001.png"
    untouched = kept.stat().st_mtime_ns
    (out / "frames" / "0002.png").write_text("precious\n")

    again = ok(farmhand("download", str(job_id), "-o", str(out)))
    assert f"3 frames and 6 passes in {out} (8 already there, not fetched again)" in again.stdout
    assert (
        f"warning: replaced 1 file in {out} that differed from the job's: frames/0002.png"
    ) in again.stderr, again.stderr
    assert (out / "frames" / "0002.png").read_bytes() == png_bytes(), "the job's frame"
    assert kept.stat().st_mtime_ns == untouched, "a file already there is not written again"

    third = ok(farmhand("download", str(job_id), "-o", str(out)))
    assert "(9 already there, not fetched again)" in third.stdout
    assert "warning" not in third.stderr
