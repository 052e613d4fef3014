"""`DELETE /job/{id}` on `farmhand node`: the tutorial's "Killing a process manually".

The tutorial stops a render with `kill PID`; the node answers a job id, not a PID, so
before this route nothing could stop one job short of stopping the node (QA, round 9).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from farmhand.node import NodeJob
from farmhand.shared.images import verify_image
from farmhand.worker.blender.discovery import BlenderInstall
from tests.conftest import SCENE_SIZE
from tests.integration.conftest import scrape_metrics
from tests.integration.test_node import (
    Gate,
    jobs_by_status,
    node_client,
    node_process,
    orchestrate,
    submit,
    wait_until,
)


def gone(pid: int) -> bool:
    """Has process `pid` ended? A zombie has (in a container nobody may reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for_answer(client: TestClient | httpx.Client, path: str, status: int) -> httpx.Response:
    """Poll `GET path` until it answers `status` (fails the test after 60 s: a hang)."""
    answer = client.get(path)
    deadline = time.monotonic() + 60
    while answer.status_code != status:
        assert answer.status_code == 202, answer.text
        assert time.monotonic() < deadline, f"{path} still answers {answer.text!r}"
        time.sleep(0.05)
        answer = client.get(path)
    return answer


def test_a_waiting_job_is_canceled_and_never_starts(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    gate = Gate()
    with node_client(tmp_path, fake_blender, run=gate, max_concurrent=1, queue_limit=1) as client:
        first = submit(client, 1)
        wait_until(lambda: gate.running == [first])
        waiting = submit(client, 2)
        assert client.post("/job", json={"from": 3, "to": 3}).status_code == 503, "line full"

        answer = client.delete(f"/job/{waiting}")
        assert (answer.status_code, answer.text) == (200, "Job canceled")
        status = client.get(f"/job/{waiting}")
        assert (status.status_code, status.text) == (410, "Job canceled")
        assert scrape_metrics(client)["farmhand_node_queue_length"] == 0
        third = submit(client, 3)  # its place in the line is free again

        again = client.delete(f"/job/{waiting}")
        assert (again.status_code, again.text) == (200, "Job canceled"), "DELETE may be repeated"
        gate.release.set()
        wait_until(lambda: client.get(f"/job/{third}").status_code == 200)
        assert gate.running == [first, third], "the canceled job never started"
        status = client.get(f"/job/{waiting}")
        assert (status.status_code, status.text) == (410, "Job canceled")
        counts = jobs_by_status(scrape_metrics(client))
        assert counts == {
            "queued": 0,
            "rendering": 0,
            "completed": 2,
            "failed": 0,
            "canceled": 1,
        }


STUCK_BLENDER = r'''
"""A fake Blender that saves frame 1, then hangs on frame 2 with a child of its own,
ignoring SIGTERM as a busy Blender may: its pid and its child's go to FAKE_PIDS_FILE."""
import json, os, signal, subprocess, sys, time
from PIL import Image

def emit(event, **fields):
    fields["event"] = event
    print("@@farmhand@@ " + json.dumps(fields), flush=True)

emit("ready", version="0.0-fake")
for line in sys.stdin:
    command = json.loads(line)
    if command["cmd"] == "quit":
        break
    if command["cmd"] == "open":
        emit("opened", scene="Scene")
        continue
    out = command["output_dir"]
    frame = command["frames"][0]
    path = os.path.join(out, "%s%04d.png" % (command["file_stem"], frame))
    emit("frame_started", frame=frame)
    Image.new("RGB", (64, 48), (9, 40, 90)).save(path)
    emit("frame_saved", frame=frame, path=path, seconds=0.01, width=64, height=48)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(out, "half-written-frame-2.png"), "wb").write(b"\x89PNG")
    with open(os.environ["FAKE_PIDS_FILE"], "w") as handle:
        handle.write("%d %d\n" % (os.getpid(), child.pid))
    emit("frame_started", frame=frame + 1)
    while True:
        time.sleep(1)
'''


def test_a_rendering_job_is_canceled_and_its_blender_group_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blender and what it started are gone (SIGKILL after SIGTERM is ignored); the frame
    already saved stays in the output folder, the one being rendered does not."""
    fake = tmp_path / "stuck-blender"
    fake.write_text(f"#!{sys.executable}\n{STUCK_BLENDER}")
    fake.chmod(0o755)
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PIDS_FILE", str(pids_file))
    install = BlenderInstall("executable", str(fake), "0.0-fake")
    with node_client(tmp_path, install, retry_after=3) as client:
        job = submit(client, 1)
        wait_until(lambda: pids_file.exists() and pids_file.read_text().endswith("\n"))
        blender, child = (int(pid) for pid in pids_file.read_text().split())
        assert not gone(blender) and not gone(child)

        answer = client.delete(f"/job/{job}")
        assert (answer.status_code, answer.text) == (202, "Job canceling")
        assert answer.headers["Location"] == f"/job/{job}"
        assert answer.headers["Retry-After"] == "3"
        final = wait_for_answer(client, f"/job/{job}", 410)
        assert final.text == "Job canceled"
        assert gone(blender), "Blender still runs after its job was canceled"
        assert gone(child), "a process Blender started outlived the cancel"
        assert client.get(f"/job/{job}").status_code == 410, "canceled stays canceled"
        assert client.delete(f"/job/{job}").status_code == 200
        assert scrape_metrics(client)["farmhand_node_renders_running"] == 0

    out = tmp_path / "out"
    verify_image(out / "blender-render_0001.png", 64, 48)
    assert not list(out.glob("half-written*")) and not list(out.glob("blender-render_0002*"))
    assert not any((out / ".farmhand-rendering").iterdir()), "the job's folder is gone"


def test_a_finished_job_cannot_be_canceled(tmp_path: Path, fake_blender: BlenderInstall) -> None:
    def run(job: NodeJob) -> str | None:
        return "no camera" if job.frames == [2] else None

    with node_client(tmp_path, fake_blender, run=run) as client:
        done, failed = submit(client, 1), submit(client, 2)
        wait_for_answer(client, f"/job/{done}", 200)
        wait_for_answer(client, f"/job/{failed}", 500)
        for job, state, status in ((done, "completed", 200), (failed, "failed", 500)):
            answer = client.delete(f"/job/{job}")
            assert answer.status_code == 409
            assert answer.text == f"Job already finished ({state}): nothing to cancel"
            assert client.get(f"/job/{job}").status_code == status, "the job is unchanged"


@pytest.mark.parametrize("job_id", ["123", "0", "abc", "\uff15", "1" * 40])
def test_canceling_an_unknown_job_is_400_job_not_found(
    tmp_path: Path, fake_blender: BlenderInstall, job_id: str
) -> None:
    with node_client(tmp_path, fake_blender) as client:
        answer = client.delete(f"/job/{job_id}")
        assert (answer.status_code, answer.text) == (400, "Job not found")


def test_a_cancel_racing_the_end_of_the_render_leaves_one_final_state(
    tmp_path: Path, fake_blender: BlenderInstall
) -> None:
    """The DELETE arrives after the render's last frame but before the job is recorded
    as done (here: from inside the render), or the renderer fails on its way out: the
    job ends canceled, for good, and its render slot is given back exactly once."""
    app_jobs: list[object] = []
    gate = Gate()

    def run(job: NodeJob) -> str | None:
        if job.frames == [1]:
            outcome = app_jobs[0].cancel(job.id)  # type: ignore[attr-defined]
            assert outcome is not None
            return None
        if job.frames == [2]:
            assert job.cancel.wait(30)
            raise RuntimeError("Blender's pipe broke while it was being stopped")
        return gate(job)

    with node_client(tmp_path, fake_blender, run=run, max_concurrent=1, queue_limit=0) as client:
        app_jobs.append(client.app.state.jobs)  # type: ignore[attr-defined]
        raced = submit(client, 1)
        assert wait_for_answer(client, f"/job/{raced}", 410).text == "Job canceled"

        raising = submit(client, 2)
        assert client.delete(f"/job/{raising}").status_code == 202
        assert wait_for_answer(client, f"/job/{raising}", 410).text == "Job canceled"

        held = submit(client, 3)
        wait_until(lambda: gate.running == [held])
        busy = client.post("/job", json={"from": 4, "to": 4})
        assert busy.status_code == 503, "a slot was given back twice"
        gate.release.set()
        wait_for_answer(client, f"/job/{held}", 200)
        for job in (raced, raising):
            assert client.get(f"/job/{job}").status_code == 410
        counts = jobs_by_status(scrape_metrics(client))
        assert (counts["canceled"], counts["completed"], counts["rendering"]) == (2, 1, 0)


def node_children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


@pytest.mark.blender
def test_real_node_process_cancels_a_blender_render(
    tmp_path: Path, blender_module: BlenderInstall, animated_blend: Path
) -> None:
    """The command as a process with Blender 5 (bpy): a long job is canceled mid-render,
    its Blender is gone, the node renders the next job, and every frame it left is whole."""
    out = tmp_path / "out"
    with node_process(tmp_path, animated_blend) as (process, client):
        answer = client.post("/job", json={"from": 1, "to": 5000})
        job = answer.json()["pid"]
        wait_until(lambda: (out / "blender-render_0001.png").exists(), timeout=120)
        blenders = node_children(process.pid)
        assert blenders, "no Blender under the node while it renders"

        answer = client.delete(f"/job/{job}")
        assert (answer.status_code, answer.text) == (202, "Job canceling")
        assert wait_for_answer(client, f"/job/{job}", 410).text == "Job canceled"
        assert all(gone(pid) for pid in blenders), "Blender outlived its canceled job"
        assert node_children(process.pid) == []

        final = orchestrate(client, 1, 1)
        assert (final.status_code, final.text) == (200, "Job completed")
        frames = sorted(out.glob("blender-render_*.png"))
        assert len(frames) < 5000
        for path in frames:
            verify_image(path, *SCENE_SIZE)
        assert not any((out / ".farmhand-rendering").iterdir()), "the job's folder is gone"
