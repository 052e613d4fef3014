"""`farmhand` as its own process against a real manager (no worker): Ctrl-C while
`submit --wait` waits, a bad output folder, a bad token. What a person sees: one line
saying what happened and what to do, an exit code, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from farmhand.client.submission import FREE_WITHIN
from farmhand.localfarm import LocalFarm, descendants
from farmhand.scenes import make_project
from farmhand.shared.protocol import WORKER_PROTOCOL
from tests.integration.conftest import farm_fixture, png_bytes
from tests.integration.test_cli_submit_options import farmhand, one_error_line

# A manager whose `{projects}` share is `nas`, and no worker: jobs stay queued.
farm = farm_fixture(projects_share=True)


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
        f"farmhand download {job_id} -o {tmp_path / 'out'} to fetch its outputs once it "
        f"completes, farmhand cancel {job_id} to stop it"
    ) in stderr, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    with farm.client() as client:
        assert client.get_job(job_id).status == "queued", "Ctrl-C stops the command, not the job"


def submit_and_wait(
    farm: LocalFarm, nas: Path, out: Path, *options: str
) -> tuple[subprocess.Popen[str], int]:
    """`farmhand submit --shared shot.blend --wait -o out` started as a person starts it
    (stderr not a terminal: progress as lines), and the id of the job it made."""
    (nas / "shot.blend").write_bytes(b"BLENDER")
    env = dict(os.environ, FARMHAND_URL=farm.url, FARMHAND_TOKEN=farm.admin_token, COLUMNS="200")
    command = [
        str(Path(sys.executable).with_name("farmhand")), "submit", "--shared",
        str(nas / "shot.blend"), "--wait", "-o", str(out), *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    announced = process.stdout.readline()  # `job N queued URL`: it now waits
    return process, int(announced.split()[1])


def restart_manager(farm: LocalFarm, down_for: float) -> None:
    """Stop the manager (SIGTERM, as an upgrade does), leave it down, start it again on
    the same port and data dir."""
    assert farm.manager is not None
    farm.manager.terminate()
    farm.manager.wait(15)
    time.sleep(down_for)
    farm.start_manager()


def render_as_a_worker(farm: LocalFarm, job_id: int) -> None:
    """The job's one task claimed, its frame uploaded and the task completed, through the
    runner API as a worker does it (other tests' jobs canceled, so it gets this one)."""
    with farm.client() as client:
        for other in client.list_jobs():
            if other.id != job_id and other.status in ("queued", "active"):
                client.cancel_job(other.id)
    with httpx.Client(base_url=farm.url, timeout=30) as api:
        caps = {
            "blender_versions": ["5.0.1"],
            "task_types": ["render"],
            "protocol": WORKER_PROTOCOL,
        }
        answer = api.post(
            "/api/runner/register",
            json={"token": farm.runner_token, "name": f"w{job_id}", "capabilities": caps},
        )
        assert answer.status_code == 201, answer.text
        who = {"Authorization": f"Bearer {answer.json()['secret']}"}
        task = api.get("/api/runner/tasks", params={"wait": 5}, headers=who).json()
        assert task["job_id"] == job_id, task
        base = f"/api/runner/tasks/{task['task_id']}"
        api.put(f"{base}/frames/1.png", headers=who, content=png_bytes()).raise_for_status()
        api.post(f"{base}/complete", headers=who, json={"frames": [1]}).raise_for_status()


def test_submit_wait_rides_out_a_manager_restart_and_downloads_the_frames(
    farm: LocalFarm, nas: Path, tmp_path: Path
) -> None:
    """It stopped at the first poll the manager did not answer (`error: cannot reach the
    manager …`, exit 1), though the job rendered on, and nothing was downloaded."""
    out = tmp_path / "out"
    process, job_id = submit_and_wait(farm, nas, out)
    try:
        time.sleep(1.0)
        restart_manager(farm, down_for=4.0)
        render_as_a_worker(farm, job_id)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, (stdout, stderr)
    assert f"job {job_id}: cannot reach the manager at {farm.url}" in stderr, stderr
    assert "retrying for up to 10m00s" in stderr, stderr
    assert f"job {job_id}: the manager answers again" in stderr, stderr
    assert f"1 frame in {out}" in stdout, stdout
    assert (out / "frames" / "0001.png").read_bytes() == png_bytes()


def test_submit_wait_gives_up_on_a_manager_gone_for_good_saying_how_to_go_on(
    farm: LocalFarm, nas: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process, job_id = submit_and_wait(farm, nas, out, "--retry-for", "3")
    try:
        assert farm.manager is not None
        farm.manager.terminate()
        farm.manager.wait(15)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        farm.start_manager()
    assert process.returncode == 1, (stdout, stderr)
    assert (
        f"error: gave up waiting for job {job_id} after 3s of retries: cannot reach the "
        f"manager at {farm.url}"
    ) in stderr, stderr
    assert (
        f"job {job_id} may still be rendering on the farm: farmhand job {job_id} to follow "
        f"it, farmhand download {job_id} -o {out} to fetch its outputs once it completes, "
        f"farmhand cancel {job_id} to stop it"
    ) in stderr, stderr
    assert "Traceback" not in stderr, stderr


def arrived(farm: LocalFarm) -> int:
    """Bytes the manager holds of unfinished resumable uploads."""
    partial = farm.data_dir / "blobs" / "tmp" / "partial"
    return sum(p.stat().st_size for p in partial.glob("*.part")) if partial.exists() else 0


@pytest.mark.blender
def test_ctrl_c_stops_an_upload_to_a_stalled_manager_at_once_and_it_resumes(
    farm: LocalFarm, tmp_path: Path
) -> None:
    """With the manager stopped (`kill -STOP`) mid-upload, Ctrl-C did nothing until it was
    continued (the thread writing to it was waited for: up to minutes), then printed only
    `^C`. Now it stops at once (after at most `FREE_WITHIN` trying to discard what it
    sent, which a manager that does not answer keeps), says that running the command
    again resumes, and that run sends only what had not arrived."""
    scene = make_project(tmp_path / "project")
    texture = tmp_path / "project" / "textures" / "checker.png"
    texture.write_bytes(os.urandom(48 * 1024 * 1024))  # packed as it is: nobody renders it
    command = [
        str(Path(sys.executable).with_name("farmhand")), "submit", str(scene), "--threads", "1",
    ]  # fmt: skip
    env = dict(os.environ, FARMHAND_URL=farm.url, FARMHAND_TOKEN=farm.admin_token, COLUMNS="200")
    assert farm.manager is not None and farm.manager.process is not None
    manager = descendants(farm.manager.process.pid)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while arrived(farm) < 4 * 1024 * 1024:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.05)
        for pid in manager:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(2.0)  # the client fills the socket's buffers, then blocks writing
        process.send_signal(signal.SIGINT)
        pressed = time.monotonic()
        stdout, stderr = process.communicate(timeout=10)
        took = time.monotonic() - pressed
    finally:
        process.kill()
        for pid in manager:
            os.kill(pid, signal.SIGCONT)
    assert process.returncode == 130, (stdout, stderr)
    assert took < 3 + FREE_WITHIN, f"{took:.1f} s after Ctrl-C"
    assert (
        "stopped: the job was not submitted, and what it had uploaded could not all be "
        f"discarded (cannot reach the manager at {farm.url}: timed out). Run the same command "
        "again to submit it: a large file's upload resumes where it stopped (farmhand "
        "uploads abort --all discards unfinished uploads instead)"
    ) in stderr, stderr
    assert "Traceback" not in stderr, stderr
    kept = arrived(farm)
    assert kept >= 4 * 1024 * 1024

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    line = next(line for line in again.stdout.splitlines() if "bytes sent" in line)
    sent = int(line.split(";")[-1].split()[0])
    others = sum(p.stat().st_size for p in texture.parents[1].rglob("*.blend"))
    assert sent <= texture.stat().st_size - kept + others * 1.1, "what had arrived is not resent"


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
