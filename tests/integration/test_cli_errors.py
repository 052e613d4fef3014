"""`farmhand` as its own process against a real manager (no worker): Ctrl-C while
`submit --wait` waits, a bad output folder, a bad token. What a person sees: one line
saying what happened and what to do, an exit code, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmhand.localfarm import LocalFarm, local_farm
from tests.integration.test_cli_submit_options import farmhand, one_error_line


@pytest.fixture(scope="module")
def nas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nas")


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, nas: Path) -> Iterator[LocalFarm]:
    """A manager whose `{projects}` share is `nas`, and no worker: jobs stay queued."""
    variables = json.dumps({"projects": {"linux": str(nas)}})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FARMHAND_PATH_VARIABLES", variables)
        with local_farm(tmp_path_factory.mktemp("farm")) as farm:
            farm.start_manager()
            yield farm


def job_ids(farm: LocalFarm) -> set[int]:
    with farm.client() as client:
        return {job.id for job in client.list_jobs()}


def test_ctrl_c_while_submit_waits_says_the_job_keeps_rendering(
    farm: LocalFarm, nas: Path, tmp_path: Path
) -> None:
    (nas / "shot.blend").write_bytes(b"BLENDER")
    env = dict(os.environ, FARMHAND_URL=farm.url, FARMHAND_TOKEN=farm.admin_token, COLUMNS="200")
    command = [
        str(Path(sys.executable).with_name("farmhand")), "submit", "--shared",
        str(nas / "shot.blend"), "--wait", "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        announced = process.stdout.readline()  # `job N queued URL`: it now waits
        job_id = int(announced.split()[1])
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, (announced, stdout, stderr)
    assert (
        f"job {job_id} keeps rendering on the farm: farmhand job {job_id} to follow it, "
        f"farmhand cancel {job_id} to stop it"
    ) in stderr, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    with farm.client() as client:
        assert client.get_job(job_id).status == "queued", "Ctrl-C stops the command, not the job"


def test_submit_wait_into_an_unusable_folder_submits_nothing(farm: LocalFarm, nas: Path) -> None:
    (nas / "shot.blend").write_bytes(b"BLENDER")
    before = job_ids(farm)
    result = farmhand(
        farm, "submit", "--shared", str(nas / "shot.blend"), "--wait", "--output", "/dev/null/x"
    )
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "/dev/null/x" in line and "/dev/null is not a folder" in line, line
    assert job_ids(farm) == before, "no job rendered whose download is bound to fail"


@pytest.mark.parametrize("token", ["é", "  ", "fh_api_x\n"], ids=repr)
def test_a_token_no_manager_could_accept_is_said_to_be_the_problem(
    farm: LocalFarm, token: str
) -> None:
    """The manager is reachable; the token is the problem, and the line says so."""
    for command in (["jobs"], ["job", "1"]):
        result = farmhand(farm, *command, "--token", token)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert "not a valid farmhand token" in line and "cannot reach" not in line, line
