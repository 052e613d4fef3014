"""Video follow-up tasks for real: Blender renders the frames, ffmpeg makes the video.

A job that asks for a video gets one `video` task that waits for every render task; a
worker offers `video` only when it has ffmpeg; the video is checked with ffprobe and
becomes a downloadable output of the job.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmhand.localfarm import LocalFarm, local_farm
from farmhand.scenes import make_scene
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import JobDetail, JobSettings, JobStatus, TaskStatus, VideoSettings
from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes
from tests.integration.waiting import wait_for

pytestmark = [
    pytest.mark.blender,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg (Debian ffmpeg)"),
]

WIDTH, HEIGHT = 64, 48
SCENE_FPS = 25.0
"""Not Blender's default 24: the video must play at the scene's own rate."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(
        tmp_path_factory.mktemp("scene") / "anim.blend",
        "animated",
        width=WIDTH,
        height=HEIGHT,
        frames="1-3",
        samples=2,
        fps=SCENE_FPS,
    )


def submit(farm: LocalFarm, blend: Path, video: VideoSettings) -> int:
    settings = JobSettings(frame_start=1, frame_end=3, chunk_size=1, video=video)
    with farm.client() as client:
        return client.submit_blend(blend, settings).id


def job(farm: LocalFarm, job_id: int) -> JobDetail:
    with farm.client() as client:
        return client.get_job(job_id)


def finished(farm: LocalFarm, job_id: int) -> JobDetail | None:
    detail = job(farm, job_id)
    done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
    return detail if detail.status in done else None


def ffprobe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames,r_frame_rate",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    stream: dict[str, object] = json.loads(out)["streams"][0]
    return stream


def test_three_frames_become_a_playable_mp4(tmp_path: Path, scene: Path) -> None:
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy")
        job_id = submit(farm, scene, VideoSettings())
        done = wait_for(lambda: finished(farm, job_id), 300, "the job to finish")
        assert done.status is JobStatus.COMPLETED, done.status_reason
        renders = [t for t in done.tasks if t.type == "render"]
        (video_task,) = [t for t in done.tasks if t.type == "video"]
        assert video_task.status is TaskStatus.COMPLETED
        assert video_task.started_at is not None
        assert all(
            r.finished_at is not None and r.finished_at <= video_task.started_at for r in renders
        ), "the video task waited for every render task"

        with farm.client() as client:
            videos = [
                f for f in client.list_files(job_id) if f.frame is None and f.kind == "output"
            ]
        assert [v.path for v in videos] == ["video.mp4"]

        out = tmp_path / "out"
        code = subprocess.run(
            [sys.executable, "-m", "farmhand", "download", str(job_id), "--video", "-o", str(out),
             "--url", farm.url, "--token", farm.admin_token],
            capture_output=True, text=True,
        )  # fmt: skip
        assert code.returncode == 0, code.stderr
        (mp4,) = out.glob("*.mp4")
        facts = ffprobe(mp4)
        assert facts["codec_name"] == "h264"
        assert (facts["width"], facts["height"]) == (WIDTH, HEIGHT)
        assert int(str(facts["nb_read_frames"])) == 3
        assert facts["r_frame_rate"] == "25/1", "the scene's frame rate, not a default"


def test_without_ffmpeg_the_video_task_waits_with_a_reason(tmp_path: Path, scene: Path) -> None:
    # A PATH with Python but no ffmpeg: the worker renders, but does not offer videos.
    bare = tmp_path / "bin"
    bare.mkdir()
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", blender="bpy", prefix=("env", f"PATH={bare}"))
        job_id = submit(farm, scene, VideoSettings())

        def renders_done() -> JobDetail | None:
            detail = job(farm, job_id)
            renders = [t for t in detail.tasks if t.type == "render"]
            return detail if all(t.status is TaskStatus.COMPLETED for t in renders) else None

        detail = wait_for(renders_done, 300, "the render tasks")
        (video_task,) = [t for t in detail.tasks if t.type == "video"]
        assert video_task.status is TaskStatus.QUEUED, "nobody may make the video"
        assert detail.status is JobStatus.ACTIVE, "no video yet: the job is not complete"
        runners = httpx.get(
            f"{farm.url}/api/admin/runners",
            headers={"Authorization": f"Bearer {farm.admin_token}"},
        ).json()
        assert [r["capabilities"]["task_types"] for r in runners] == [["render", "merge"]]
        assert detail.status_reason == "waiting: no worker runs video tasks"


def test_a_failing_ffmpeg_reports_its_error(tmp_path: Path, scene: Path) -> None:
    # An "ffmpeg" that passes the version check but fails every encode, like a build
    # without libx264 would.
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-version*) echo "ffmpeg version 9.9-fake"; exit 0;; esac\n'
        "echo \"Unknown encoder 'libx264'\" >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    with local_farm(tmp_path) as farm:
        farm.start_manager()
        farm.start_worker("w1", "--ffmpeg", str(fake), blender="bpy")
        job_id = submit(farm, scene, VideoSettings())
        done = wait_for(lambda: finished(farm, job_id), 300, "the job to fail")
        assert done.status is JobStatus.FAILED
        (video_task,) = [t for t in done.tasks if t.type == "video"]
        assert video_task.status is TaskStatus.FAILED
        assert video_task.last_error == "ffmpeg failed: Unknown encoder 'libx264'"
        assert "Unknown encoder" in (done.status_reason or "")


def test_a_stopping_worker_ends_its_encode_and_gives_the_video_task_back(
    tmp_path: Path, scene: Path
) -> None:
    """A worker stopped (SIGTERM) while ffmpeg encodes stops ffmpeg and releases the
    task at once, as it does a render, instead of waiting for an encode that may take an
    hour, then giving the task back anyway."""
    marker = tmp_path / "encoding"
    fake = tmp_path / "ffmpeg"  # passes the version check; an encode that never ends
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-version*) echo "ffmpeg version 9.9-fake"; exit 0;; esac\n'
        f'echo $$ > "{marker}"\n'
        "exec sleep 600\n"
    )
    fake.chmod(0o755)
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        worker = farm.start_worker("w1", "--ffmpeg", str(fake), blender="bpy")
        job_id = submit(farm, scene, VideoSettings())
        wait_for(lambda: marker.exists() and marker.read_text().strip(), 300, "the encode")
        encoder = int(marker.read_text())
        assert worker.process is not None
        stopped_at = time.monotonic()
        worker.terminate()
        worker.wait(60)  # killed if it takes longer
        took = time.monotonic() - stopped_at
        assert took < 30, f"the worker waited {took:.0f} s for its encode"
        assert not Path(f"/proc/{encoder}").exists(), "ffmpeg was left running"
        (video_task,) = [t for t in job(farm, job_id).tasks if t.type == "video"]
        assert video_task.status is TaskStatus.QUEUED, "given back, not failed or held"
        assert video_task.last_error == "worker shutting down"


@pytest.mark.parametrize(
    "bad",
    [
        {"codec": "vp9", "container": "mov"},
        {"codec": "h264", "crf": 60},
        {"fps": 0},
        {"codec": "prores"},
        {"bitrate": "5M"},
        "yes",
    ],
)
def test_bad_video_settings_are_a_clear_4xx(farm: Farm, bad: object) -> None:
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"frame_start": 1, "frame_end": 3, "main_file": "a.blend",
              "files": {"a.blend": "0" * 64}, "video": bad},
    )  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert "video" in answer.json()["detail"], answer.text


def test_video_true_compiles_one_task_after_all_renders(farm: Farm) -> None:
    blend = farm.client.put(
        "/api/blobs/" + hashlib.sha256(FAKE_BLEND).hexdigest(),
        headers=farm.admin,
        content=FAKE_BLEND,
    )
    assert blend.status_code in (200, 201), blend.text
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"frame_start": 1, "frame_end": 5, "chunk_size": 2, "main_file": "a.blend",
              "files": {"a.blend": hashlib.sha256(FAKE_BLEND).hexdigest()}, "video": True},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    detail = farm.client.get(answer.headers["Location"], headers=farm.admin).json()
    assert [t["type"] for t in detail["tasks"]] == ["render", "render", "render", "video"]
    assert detail["settings"]["video"] == {
        "codec": "h264",
        "container": "mp4",
        "fps": None,  # the scene's, once a worker has opened it
        "crf": None,
    }
    assert detail["frames_total"] == 5


MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
"""The first box of an mp4: enough for the manager, which checks only the container."""


def test_the_video_task_runs_last_needs_its_video_and_reruns_with_its_frames(
    farm: Farm,
) -> None:
    """Through the runner API: order, the upload rules, completion, rerun."""
    sha = hashlib.sha256(FAKE_BLEND).hexdigest()
    assert farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=FAKE_BLEND).is_success
    created = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"frame_start": 1, "frame_end": 2, "main_file": "a.blend", "files": {"a.blend": sha},
              "video": {"codec": "h264", "container": "mp4"}},
    )  # fmt: skip
    job_url = created.headers["Location"]
    runner = farm.register_runner("w1")
    farm.client.post(
        "/api/runner/heartbeat",
        headers=runner,
        json={"capabilities": {"task_types": ["render", "video"], "protocol": WORKER_PROTOCOL}},
    )

    def claim() -> dict[str, Any]:
        answer = farm.client.get("/api/runner/tasks?wait=0", headers=runner)
        assert answer.status_code == 200, answer.text
        task: dict[str, Any] = answer.json()
        return task

    for _ in range(2):
        task = claim()
        assert task["type"] == "render", "the video waits for every render task"
        (frame,) = task["frames"]
        upload = farm.client.post(
            "/api/runner/files/1/upload",
            headers=runner,
            data={"task_id": str(task["task_id"]), "frame": str(frame)},
            files={"file": ("f.png", png_bytes(), "application/octet-stream")},
        )
        assert upload.status_code == 201, upload.text
        # A render task cannot pose as the video task, however the video is sent.
        refused = farm.client.put(
            f"/api/runner/tasks/{task['task_id']}/video", headers=runner, content=MP4_HEAD
        )
        assert refused.status_code == 400 and "not a video task" in refused.text
        refused = farm.client.post(
            "/api/runner/files/1/video",
            headers=runner,
            data={"task_id": str(task["task_id"])},
            files={"file": ("video.mp4", MP4_HEAD, "application/octet-stream")},
        )
        assert refused.status_code == 400
        done = farm.client.post(f"/api/runner/tasks/{task['task_id']}/complete", headers=runner,
                                json={"frames": [frame]})  # fmt: skip
        assert done.status_code == 200, done.text

    video_task = claim()
    assert video_task["type"] == "video"
    assert [f["frame"] for f in video_task["frame_files"]] == [1, 2]
    assert video_task["video"] == {"codec": "h264", "container": "mp4", "fps": 24.0, "crf": None}
    path = video_task["frame_files"][0]["path"]
    frame_bytes = farm.client.get(f"/api/runner/files/1/{path}?kind=output", headers=runner)
    assert frame_bytes.content == png_bytes()
    video_id = video_task["task_id"]
    early = farm.client.post(f"/api/runner/tasks/{video_id}/complete", headers=runner,
                             json={"frames": []})  # fmt: skip
    assert early.status_code == 409 and "no video" in early.text
    video_url = f"/api/runner/tasks/{video_id}/video"  # what workers send: the raw body
    for not_mp4 in (png_bytes(), b""):
        answer = farm.client.put(video_url, headers=runner, content=not_mp4)
        assert answer.status_code == 400 and "not a mp4 video" in answer.text
    stranger = farm.register_runner("w2")
    late = farm.client.put(video_url, headers=stranger, content=MP4_HEAD)
    assert late.status_code == 409, "only the runner holding the video task may send it"
    # Workers before the PUT sent a multipart form: it still stores a video, and the
    # last one sent is the job's.
    older = farm.client.post(
        "/api/runner/files/1/video",
        headers=runner,
        data={"task_id": str(video_id)},
        files={"file": ("video.mp4", MP4_HEAD + b"older", "application/octet-stream")},
    )
    assert older.status_code == 201, older.text
    stored = farm.client.put(video_url, headers=runner, content=MP4_HEAD)
    assert stored.status_code == 201 and stored.json()["frame"] is None
    done = farm.client.post(f"/api/runner/tasks/{video_id}/complete", headers=runner,
                            json={"frames": []})  # fmt: skip
    assert done.json()["job_status"] == "completed"
    files = farm.client.get(f"{job_url}/files", headers=farm.admin).json()
    (video,) = [f for f in files if f["frame"] is None and f["kind"] == "output"]
    assert video["path"] == "video.mp4"
    download = farm.client.get(f"{job_url}/files/{video['id']}/download", headers=farm.admin)
    assert download.content == MP4_HEAD

    # Rendering a frame again makes the video again.
    first_render = farm.client.get(job_url, headers=farm.admin).json()["tasks"][0]
    farm.client.post(f"{job_url}/tasks/{first_render['id']}/actions", headers=farm.admin,
                     json={"action": "requeue"})  # fmt: skip
    detail = farm.client.get(job_url, headers=farm.admin).json()
    assert detail["status"] == "active"
    assert [t["status"] for t in detail["tasks"]] == ["queued", "completed", "queued"]


def test_the_video_task_gets_the_frame_rate_a_worker_reported_for_the_scene(
    farm: Farm,
) -> None:
    """The first report is kept; a job that names its own rate keeps it."""
    sha = hashlib.sha256(FAKE_BLEND).hexdigest()
    assert farm.client.put(f"/api/blobs/{sha}", headers=farm.admin, content=FAKE_BLEND).is_success
    runner = farm.register_runner("w1")
    farm.client.post(
        "/api/runner/heartbeat",
        headers=runner,
        json={"capabilities": {"task_types": ["render", "video"], "protocol": WORKER_PROTOCOL}},
    )
    rates = {}
    for own_rate in (None, 50.0):
        created = farm.client.post(
            "/api/jobs",
            headers=farm.admin,
            json={"frame_start": 1, "frame_end": 2, "main_file": "a.blend",
                  "files": {"a.blend": sha}, "video": {"fps": own_rate}},
        )  # fmt: skip
        assert created.status_code == 202, created.text
        for reported in (30 / 1.001, 12.0):  # one per render task; the first is kept
            task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
            assert task["type"] == "render"
            progress = farm.client.post(
                f"/api/runner/tasks/{task['task_id']}/progress",
                headers=runner,
                json={"scene_fps": reported},
            )
            assert progress.json() == {"keep_going": True}
            (frame,) = task["frames"]
            farm.client.post(
                f"/api/runner/files/{task['job_id']}/upload",
                headers=runner,
                data={"task_id": str(task["task_id"]), "frame": str(frame)},
                files={"file": ("f.png", png_bytes(), "image/png")},
            )
            done = farm.client.post(f"/api/runner/tasks/{task['task_id']}/complete",
                                    headers=runner, json={"frames": [frame]})  # fmt: skip
            assert done.status_code == 200, done.text
        video_task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
        assert video_task["type"] == "video"
        rates[own_rate] = video_task["video"]["fps"]
        farm.client.post(
            f"/api/runner/tasks/{video_task['task_id']}/release", headers=runner, json={}
        )
        canceled = farm.client.delete(created.headers["Location"], headers=farm.admin)
        assert canceled.is_success, canceled.text

    assert rates[None] == pytest.approx(30 / 1.001)
    assert rates[50.0] == 50.0


@pytest.mark.parametrize("bad", [0, -1, 1001, "fast", float("nan")])
def test_a_bad_scene_frame_rate_is_a_4xx_and_changes_nothing(farm: Farm, bad: object) -> None:
    runner = farm.register_runner("w1")
    answer = farm.client.post(
        "/api/runner/tasks/1/progress",
        headers={**runner, "Content-Type": "application/json"},
        content=json.dumps({"scene_fps": bad}),
    )
    assert 400 <= answer.status_code < 500, answer.text
