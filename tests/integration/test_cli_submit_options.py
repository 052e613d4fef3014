"""`farmhand submit` options for shared storage, devices, Blender versions and tags.

The CLI runs as its own process against a real manager (`LocalFarm`) that knows one
share, `{projects}`; the render test adds a real worker with real Blender (bpy 5.0).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.schemas import JobStatus
from tests.integration.conftest import farm_fixture
from tests.integration.test_farm_end_to_end import finished
from tests.integration.waiting import wait_for

WIDTH, HEIGHT = 64, 48
PYTHON_WARNING = re.compile(r"^\S+:\d+: \w*Warning: .*\n(?:  .*\n)?", re.MULTILINE)


def farmhand(farm: LocalFarm, *args: str) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/farmhand …` as its own process, as a person runs it."""
    env = dict(os.environ, FARMHAND_URL=farm.url, FARMHAND_TOKEN=farm.admin_token, COLUMNS="200")
    return subprocess.run(
        [str(Path(sys.executable).with_name("farmhand")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    """The only line a refused submit prints: red, readable, no traceback.

    Python warnings are left out: a library's deprecation notice (authlib forces its own
    on) is not what the CLI says.
    """
    lines = [line for line in PYTHON_WARNING.sub("", stderr).splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "pydantic" not in stderr, stderr
    return lines[0]


# A manager (no worker) whose `{projects}` share is `nas` on Linux.
farm = farm_fixture(projects_share=True)


def test_a_shared_path_on_no_share_is_one_clear_line(farm: LocalFarm, tmp_path: Path) -> None:
    elsewhere = tmp_path / "home" / "scene.blend"  # on no share the manager knows
    result = farmhand(farm, "submit", "--shared", str(elsewhere), "--frames", "1-2")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "no shared storage" in line and str(elsewhere) in line, line
    with farm.client() as client:
        assert all(job.name != "scene" for job in client.list_jobs()), "no job was created"


def test_device_version_and_tags_land_in_the_shared_jobs_settings(
    farm: LocalFarm, nas: Path
) -> None:
    # The manager never opens a shared .blend: the path alone is enough to queue it.
    blend = nas / "shot-020" / "lighting.blend"
    result = farmhand(
        farm, "submit", "--shared", str(blend), "--frames", "1-4", "--chunk", "2",
        "--device", "optix", "--blender-version", ">=4.2,<5",
        "--require-tag", "gpu", "--require-tag", "studio-a",
        "--output-dir", str(nas / "renders"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "uploaded" not in result.stdout, "a shared submit packs and uploads nothing"
    job_id = int(result.stdout.split("job ", 1)[1].split()[0])
    # The job's web page, which a person can open (the API's address answers 401 there).
    assert f"queued  {farm.url}/jobs/{job_id}\n" in result.stdout, result.stdout
    with farm.client() as client:
        job = client.get_job(job_id)
        inputs = [f for f in client.list_files(job_id) if f.kind == "input"]
    assert job.main_file == "{projects}/shot-020/lighting.blend"
    assert job.settings.storage == "shared"
    assert job.settings.output_dir == "{projects}/renders"
    assert job.settings.device == "OPTIX"
    assert job.settings.blender_version == ">=4.2,<5"
    assert job.settings.required_tags == ["gpu", "studio-a"]
    assert (job.settings.frame_start, job.settings.frame_end) == (1, 4)
    assert inputs == []


def test_video_worker_cap_attempts_and_naming_land_in_the_jobs_settings(
    farm: LocalFarm, nas: Path
) -> None:
    blend = nas / "shot-030" / "comp.blend"
    result = farmhand(
        farm, "submit", "--shared", str(blend), "--frames", "1-24",
        "--codec", "VP9", "--container", "webm", "--fps", "12.5", "--crf", "40",
        "--max-workers", "3", "--max-attempts", "2",
        "--output-template", "{job}/{frame:04d}.{ext}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.split("job ", 1)[1].split()[0])
    with farm.client() as client:
        settings = client.get_job(job_id).settings
    assert settings.video is not None, "--codec asks for a video without --video"
    video = settings.video
    assert (video.codec, video.container, video.fps, video.crf) == ("vp9", "webm", 12.5, 40)
    assert (settings.max_workers, settings.max_attempts) == (3, 2)
    assert settings.output_template == "{job}/{frame:04d}.{ext}"
    shown = farmhand(farm, "job", str(job_id))
    assert shown.returncode == 0, shown.stderr
    assert (
        "asks for: at most 3 workers at once · video: vp9 in webm, 12.5 fps, crf 40 · "
        "2 attempts a task · on shared storage"
    ) in shown.stdout, shown.stdout

    plain = farmhand(farm, "submit", "--shared", str(blend), "--video")
    assert plain.returncode == 0, plain.stderr
    with farm.client() as client:
        plain_id = int(plain.stdout.split("job ", 1)[1].split()[0])
        default = client.get_job(plain_id).settings.video
    assert default is not None
    assert (default.codec, default.container, default.fps) == ("h264", "mp4", None)


@pytest.mark.blender
def test_device_version_and_tags_land_in_an_uploaded_jobs_settings(
    farm: LocalFarm, tmp_path: Path
) -> None:
    blend = make_scene(tmp_path / "shot.blend", "animated", width=WIDTH, height=HEIGHT)
    result = farmhand(
        farm, "submit", str(blend), "--device", "CUDA", "--blender-version", "5.0",
        "--require-tag", "big-ram",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.split("job ", 1)[1].split()[0])
    with farm.client() as client:
        settings = client.get_job(job_id).settings
    assert settings.storage == "upload"
    assert (settings.device, settings.blender_version) == ("CUDA", "5.0")
    assert settings.required_tags == ["big-ram"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--blender-version", ">=banana"],
            "blender_version '>=banana' is not a version range such as '>=4.2,<5'",
        ),
        (["--device", "TPU"], "--device 'TPU': choose CPU, CUDA, OPTIX, HIP, ONEAPI, METAL"),
        (["--require-tag", "Big RAM"], "--require-tag 'Big RAM': a tag is 1-40 of a-z, 0-9"),
        (["--require-tag", "[gpu]"], "--require-tag '[gpu]': a tag is"),  # not Rich markup
        (["--codec", "av1"], "--codec 'av1': Input should be 'h264', 'h265' or 'vp9'"),
        (["--codec", "h264", "--container", "webm"], "a h264 video goes in mkv, mov, mp4"),
        (["--crf", "60"], "crf for h264 is 0 to 51, not 60"),
        (["--fps", "0"], "--fps 0.0: Input should be greater than 0"),
        (["--output-template", "{frame}/../x.{ext}"], "--output-template"),
    ],
)
def test_bad_options_are_refused_in_one_line(
    farm: LocalFarm, nas: Path, options: list[str], message: str
) -> None:
    before = _job_count(farm)
    result = farmhand(farm, "submit", "--shared", str(nas / "a.blend"), *options)
    assert result.returncode != 0
    assert message in one_error_line(result.stderr)
    assert _job_count(farm) == before, "nothing was submitted"


def _job_count(farm: LocalFarm) -> int:
    with farm.client() as client:
        return len(client.list_jobs())


@pytest.mark.blender
@pytest.mark.slow
def test_submit_shared_is_rendered_by_a_real_worker_and_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nas = tmp_path / "nas"
    blend = make_scene(
        nas / "shot-010" / "scene.blend", "animated", width=WIDTH, height=HEIGHT, frames="1-2",
        samples=2,
    )  # fmt: skip
    monkeypatch.setenv("FARMHAND_PATH_VARIABLES", json.dumps({"projects": {"linux": str(nas)}}))
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        result = farmhand(
            farm, "submit", "--shared", str(blend), "--frames", "1-2", "--chunk", "2",
            "--name", "shot 010", "--output-dir", str(nas / "renders"), "--device", "CPU",
            "--wait", "--output", str(tmp_path / "out"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr + farm.logs(60)
        job_id = int(result.stdout.split("job ", 1)[1].split()[0])
        done = wait_for(lambda: finished(farm, job_id), 60, "the job to be finished")
    assert done.status is JobStatus.COMPLETED
    assert done.main_file == "{projects}/shot-010/scene.blend"
    assert "2 frames in" in result.stdout
    downloaded = sorted((tmp_path / "out").rglob("*.png"))
    assert len(downloaded) == 2, downloaded
    on_share = sorted((nas / "renders").iterdir())
    assert [p.name for p in on_share] == ["0001.png", "0002.png"]
    for image in [*downloaded, *on_share]:
        verify_image(image, WIDTH, HEIGHT)
