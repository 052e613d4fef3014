"""Several Blenders on one worker, and devices: which Blender renders which job, and
which `--blender` / `--device` values are refused at start."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from farmhand.shared.schemas import TaskAssignment
from farmhand.worker.agent import RenderJob
from farmhand.worker.blender.devices import check_device
from farmhand.worker.blender.discovery import BlenderInstall, BlenderNotFound, find_blenders
from farmhand.worker.blender.renderer import BlenderTaskRenderer


def fake_blender(directory: Path, version: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "blender"
    path.write_text(f"#!/bin/sh\necho 'Blender {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_several_blenders_each_with_its_version(tmp_path: Path) -> None:
    old = fake_blender(tmp_path / "a", "3.4.1")
    new = fake_blender(tmp_path / "b", "5.0.1")
    installs = find_blenders([f"5.0={new}", f"3.4={old}", old])
    assert [i.version for i in installs] == ["5.0.1", "3.4.1"], "duplicates dropped"


def test_a_mislabelled_blender_is_refused_at_start(tmp_path: Path) -> None:
    old = fake_blender(tmp_path / "a", "3.4.1")
    with pytest.raises(BlenderNotFound, match=r"that Blender is 3\.4\.1, not 5\.0"):
        find_blenders([f"5.0={old}"])


def job_for(saved: str | None, spec: str | None, tmp_path: Path) -> RenderJob:
    task = TaskAssignment(
        task_id=1, job_id=1, job_name="j", type="render", frames=[1], main_file="a.blend",
        files=[], output_format=None, resolution_percentage=None, samples=None, attempt=1,
        blender_saved=saved, blender_version=spec,
    )  # fmt: skip
    return RenderJob(task, tmp_path / "a.blend", tmp_path, tmp_path / "l", None, threading.Event())


def test_the_newest_fitting_blender_renders_the_task(tmp_path: Path) -> None:
    installs = [
        BlenderInstall("executable", "/opt/3.4/blender", "3.4.1"),
        BlenderInstall("executable", "/opt/5.0/blender", "5.0.1"),
    ]
    renderer = BlenderTaskRenderer(installs)
    assert renderer.install_for(job_for("3.4", None, tmp_path)) is installs[1]
    assert renderer.install_for(job_for("3.4", "<5", tmp_path)) is installs[0]
    assert renderer.install_for(job_for("5.0", None, tmp_path)) is installs[1]


def test_a_file_the_manager_did_not_read_is_read_by_the_worker(tmp_path: Path) -> None:
    """A job on shared storage: the worker reads the header and picks its Blender."""
    (tmp_path / "a.blend").write_bytes(b"BLENDER17-01v0500REND" + bytes(64))
    installs = [
        BlenderInstall("executable", "/opt/3.4/blender", "3.4.1"),
        BlenderInstall("executable", "/opt/5.0/blender", "5.0.1"),
    ]
    assert BlenderTaskRenderer(installs).install_for(job_for(None, "<6", tmp_path)) is installs[1]
    outcome = BlenderTaskRenderer(installs[0])(job_for(None, None, tmp_path))
    assert not outcome.ok and outcome.error is not None
    assert "saved by Blender 5.0" in outcome.error


def test_a_task_no_blender_fits_fails_with_the_reason(tmp_path: Path) -> None:
    renderer = BlenderTaskRenderer(BlenderInstall("executable", "/opt/b", "3.4.1"))
    outcome = renderer(job_for("5.0", None, tmp_path))
    assert not outcome.ok
    assert outcome.error is not None and "saved by Blender 5.0" in outcome.error


CPU = ("CPU", "CPU")
INSTALL = BlenderInstall("module", None, "5.0.1")


def test_a_gpu_blender_sees_is_accepted_and_gpu_numbers_are_checked() -> None:
    seen = [CPU, ("CUDA", "RTX A"), ("CUDA", "RTX B"), ("OPTIX", "RTX A")]
    check_device(INSTALL, "CUDA", None, seen)
    check_device(INSTALL, "OPTIX", 0, seen)
    check_device(INSTALL, "CUDA", 1, seen)
    with pytest.raises(BlenderNotFound, match=r"--gpu 2: Blender 5\.0\.1 sees 2 CUDA"):
        check_device(INSTALL, "CUDA", 2, seen)


def test_a_device_blender_does_not_see_is_refused_with_what_to_do() -> None:
    with pytest.raises(BlenderNotFound) as caught:
        check_device(INSTALL, "HIP", None, [CPU, ("CUDA", "RTX A")])
    message = str(caught.value)
    assert "sees no HIP device" in message and "it sees: CPU, CUDA" in message
    assert "--device CPU" in message


def test_gpu_without_a_gpu_device_is_refused() -> None:
    with pytest.raises(BlenderNotFound, match="--gpu picks one GPU"):
        check_device(INSTALL, "CPU", 0, [CPU])
