"""Shared storage mode: the .blend stays on a NAS that each platform mounts elsewhere.

Two "platforms" are simulated on one machine by two different paths to the same folder
(two symlinks to it): the job is submitted with studio A's path, the manager stores it
as `{projects}/…`, and a worker of studio B (`--platform studio-b --path-map …`) renders
it from B's path. Studio A's path is removed before the worker starts, so the render
can only work if the worker really mapped it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.localfarm import local_farm
from farmhand.manager.app import create_app
from farmhand.scenes import make_project, make_scene
from farmhand.shared.images import verify_image
from farmhand.shared.pathmap import PathMapError
from farmhand.shared.schemas import JobSettings, JobStatus
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings
from tests.integration.test_farm_end_to_end import finished
from tests.integration.test_packing import render_locally
from tests.integration.waiting import wait_for

WIDTH, HEIGHT = 64, 48


def two_studio_mounts(
    tmp_path: Path, nas: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """Studio A's and studio B's paths to the same `nas` (two symlinks), with the
    manager's `{projects}` variable at A's: a job submitted by A's path is stored as
    `{projects}/…`, and B's workers map it to their own."""
    mount_a, mount_b = tmp_path / "studio-a" / "projects", tmp_path / "studio-b" / "projects"
    for mount in (mount_a, mount_b):
        mount.parent.mkdir()
        mount.symlink_to(nas, target_is_directory=True)
    monkeypatch.setenv("FARMHAND_PATH_VARIABLES", json.dumps({"projects": {"linux": str(mount_a)}}))
    return mount_a, mount_b


@pytest.mark.blender
@pytest.mark.slow
def test_a_worker_on_another_platform_renders_from_its_own_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nas = tmp_path / "nas"
    make_scene(
        nas / "shot-010" / "scene.blend", "animated", width=WIDTH, height=HEIGHT, frames="1-3",
        samples=2,
    )  # fmt: skip
    mount_a, mount_b = two_studio_mounts(tmp_path, nas, monkeypatch)

    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        with farm.client() as client:
            job_id = client.submit_shared(
                str(mount_a / "shot-010" / "scene.blend"),
                JobSettings(
                    name="shot 010",
                    frame_start=1,
                    frame_end=3,
                    chunk_size=3,
                    output_dir=str(mount_a / "renders"),
                    output_template="{job}/{frame:04d}.{ext}",
                ),
            ).id
            job = client.get_job(job_id)
        assert job.main_file == "{projects}/shot-010/scene.blend"
        assert job.settings.output_dir == "{projects}/renders"

        mount_a.unlink()  # studio A's path does not exist on studio B's worker
        farm.start_worker(
            "b1", "--platform", "studio-b", "--path-map", f"projects:studio-b={mount_b}",
            blender="bpy",
        )  # fmt: skip
        done = wait_for(lambda: finished(farm, job_id), 300, "the shared job to finish")
        assert done.status is JobStatus.COMPLETED, done.status_reason

        written = sorted((nas / "renders" / "shot 010").iterdir())
        assert [p.name for p in written] == ["0001.png", "0002.png", "0003.png"]
        for image in written:
            verify_image(image, WIDTH, HEIGHT)
        with farm.client() as client:
            outputs = [f for f in client.list_files(job_id) if f.kind == "output"]
        frames = sorted((f.frame for f in outputs), key=lambda frame: frame or 0)  # None first
        assert frames == [1, 2, 3], "frames are uploaded as well"
        assert str(mount_b / "shot-010" / "scene.blend") in farm.logs(200)


@pytest.mark.blender
@pytest.mark.slow
def test_a_worker_without_a_root_for_its_platform_fails_the_task_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    (nas / "scene.blend").write_bytes(b"BLENDER")  # never opened: the mapping fails first
    monkeypatch.setenv("FARMHAND_PATH_VARIABLES", json.dumps({"projects": {"linux": str(nas)}}))
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        with farm.client() as client:
            job_id = client.submit_shared(str(nas / "scene.blend"), JobSettings(max_attempts=1)).id
        farm.start_worker("w", "--platform", "windows", blender="bpy")
        done = wait_for(lambda: finished(farm, job_id), 120, "the job to fail")
    assert done.status is JobStatus.FAILED
    reasons = " ".join(task.last_error or "" for task in done.tasks)
    assert "no root for {projects} on platform 'windows'" in reasons


def render_at_studio_b(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blender: BlenderInstall, scene: Path
) -> tuple[npt.NDArray[np.int16], str]:
    """Frame 1 of `scene`, a project under tmp_path/studio-a/projects, rendered by a
    studio-B worker after A's path is gone; the frame's pixels and the task's log."""
    studio_a = tmp_path / "studio-a" / "projects"
    monkeypatch.setenv(
        "FARMHAND_PATH_VARIABLES", json.dumps({"projects": {"linux": str(studio_a)}})
    )
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        with farm.client() as client:
            job_id = client.submit_shared(str(scene), JobSettings(frame_start=1, frame_end=1)).id
        # The NAS is mounted elsewhere on studio B; A's path does not exist there.
        (tmp_path / "studio-a").rename(tmp_path / "nas")
        mount_b = tmp_path / "studio-b" / "projects"
        mount_b.parent.mkdir()
        mount_b.symlink_to(tmp_path / "nas" / "projects", target_is_directory=True)
        farm.start_worker(
            "b1", "--platform", "studio-b", "--path-map", f"projects:studio-b={mount_b}",
            blender=blender.spec,
        )  # fmt: skip
        done = wait_for(lambda: finished(farm, job_id), 300, "the shared job to finish")
        assert done.status is JobStatus.COMPLETED, done.status_reason
        with farm.client() as client:
            (frame,) = client.download_outputs(job_id, tmp_path / "out")
            log = client.task_log(job_id, done.tasks[0].id)
    return np.asarray(Image.open(frame).convert("RGBA"), dtype=np.int16), log


def green_pixels(pixels: npt.NDArray[np.int16]) -> int:
    """Pixels of the library's own texture (green): none where it is missing (magenta)."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((green - red > 60) & (green - blue > 60)).sum())


@pytest.mark.blender
@pytest.mark.slow
def test_absolute_paths_inside_the_blend_are_remapped_too(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    install: BlenderInstall,
) -> None:
    """A studio-A file whose texture and linked library are saved with A's absolute
    paths renders on a studio-B worker exactly as it does at A (bpy 5.0 and 3.4)."""
    scene = make_project(tmp_path / "studio-a" / "projects", install=install)
    expected = render_locally(install, scene, tmp_path / "local.png")
    rendered, log = render_at_studio_b(tmp_path, monkeypatch, install, scene)
    assert rendered.shape == expected.shape
    assert np.abs(rendered - expected).max() <= 2, "the worker's frame equals studio A's render"
    assert "remapped 2 shared-storage paths" in log, "the texture and the library"


@pytest.mark.blender
@pytest.mark.slow
def test_absolute_paths_inside_linked_libraries_are_remapped_too(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    install: BlenderInstall,
) -> None:
    """The library's own texture and a library it links (whose material has a texture),
    all saved with studio A's absolute paths, render on a studio-B worker as at A: the
    paths inside libraries are rewritten too (a missing texture renders magenta)."""
    scene = make_project(
        tmp_path / "studio-a" / "projects", install=install, width=64, height=48,
        library_assets=True,
    )  # fmt: skip
    expected = render_locally(install, scene, tmp_path / "local.png")
    assert green_pixels(expected) > 50, "studio A's render shows the library's texture"
    rendered, log = render_at_studio_b(tmp_path, monkeypatch, install, scene)
    assert green_pixels(rendered) > 50, "studio B's render shows the library's texture"
    assert np.abs(rendered - expected).max() <= 2, "the worker's frame equals studio A's render"
    # The scene's texture and library; inside: wood.png, nested.blend and its brick.png.
    assert "remapped 5 shared-storage paths in the .blend (3 inside linked libraries)" in log


# ------------------------------------------------------- submission (no Blender)


@pytest.fixture
def nas_farm(tmp_path: Path) -> Iterator[Farm]:
    """A manager that knows one share, mounted at /mnt/projects or P:\\."""
    variables = {"projects": {"linux": "/mnt/projects", "windows": "P:\\"}}
    settings = make_settings(tmp_path / "data", path_variables=variables)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def test_paths_are_stored_neutral_and_handed_out_with_the_roots(nas_farm: Farm) -> None:
    farm = nas_farm
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={
            "storage": "shared",
            "blend_path": "P:\\shot-010\\scene.blend",
            "output_dir": "/mnt/projects/renders/shot-010",
        },
    )
    assert answer.status_code == 202, answer.text
    job = farm.client.get(answer.headers["location"], headers=farm.admin).json()
    assert job["main_file"] == "{projects}/shot-010/scene.blend"
    assert job["settings"]["storage"] == "shared"
    assert job["settings"]["output_dir"] == "{projects}/renders/shot-010"
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks?wait=0", headers=runner).json()
    assert task["storage"] == "shared" and task["files"] == []
    assert task["main_file"] == "{projects}/shot-010/scene.blend"
    assert task["path_variables"] == {"projects": {"linux": "/mnt/projects", "windows": "P:\\"}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"storage": "shared", "blend_path": "/home/me/scene.blend"}, "no shared storage"),
        ({"storage": "shared", "blend_path": "/mnt/projects/../etc/x.blend"}, "'..'"),
        ({"storage": "shared", "blend_path": "/mnt/projects/notes.txt"}, "not a .blend"),
        ({"storage": "shared"}, "blend_path"),
        (
            {"storage": "shared", "blend_path": "P:\\a.blend", "output_dir": "/tmp/out"},
            "output_dir",
        ),
    ],
)
def test_bad_shared_jobs_are_refused_clearly(
    nas_farm: Farm, body: dict[str, str], message: str
) -> None:
    answer = nas_farm.client.post("/api/jobs", headers=nas_farm.admin, json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"blend_path": "{x}/a.blend"},
        {"blend_path": "{a}/{b}/c.blend"},
        {"blend_path": "{projects}/a.blend", "output_dir": "{renders}/shot-010"},
    ],
)
def test_a_path_variable_the_manager_does_not_have_is_refused(
    nas_farm: Farm, body: dict[str, str]
) -> None:
    """It was accepted (202), and the job waited forever, queued with no reason."""
    farm = nas_farm
    answer = farm.client.post("/api/jobs", headers=farm.admin, json={"storage": "shared", **body})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    field = "output_dir" if "output_dir" in body else "blend_path"
    assert detail.startswith(f"{field}: ")
    assert "which the manager does not have; known variables: {projects}" in detail
    assert farm.client.get("/api/jobs", headers=farm.admin).json() == [], "nothing stored"


def test_a_manager_without_path_variables_refuses_every_variable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        answer = client.post(
            "/api/jobs", headers=admin, json={"storage": "shared", "blend_path": "{x}/a.blend"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"] == (
            "blend_path: '{x}/a.blend' names the path variable {x}, which the manager does "
            "not have (it has no path_variables)"
        )
        uploaded = client.post(
            "/api/jobs",
            headers=admin,
            files={"file": ("a.blend", FAKE_BLEND)},
            data={"settings": '{"output_dir": "{out}/renders"}'},
        )
        assert uploaded.status_code == 400, uploaded.text
        assert "output_dir: '{out}/renders' names the path variable {out}" in uploaded.text


def test_a_path_written_with_a_known_variable_is_taken_as_it_is(nas_farm: Farm) -> None:
    farm = nas_farm
    answer = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"storage": "shared", "blend_path": "{projects}/a.blend", "output_dir": "{projects}"},
    )
    assert answer.status_code == 202, answer.text
    job = farm.client.get(answer.headers["location"], headers=farm.admin).json()
    assert (job["main_file"], job["settings"]["output_dir"]) == ("{projects}/a.blend", "{projects}")


def test_a_manager_with_a_broken_path_table_does_not_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", path_variables={"p": {"linux": "relative/dir"}})
    with pytest.raises(PathMapError, match="not absolute"):
        create_app(settings)
