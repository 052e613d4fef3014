"""Devices: a worker asks Blender which devices it sees, and refuses one it cannot use.

This machine has no GPU: `--device CUDA` must fail at worker start with a message that
says so, before any task is taken; `--device CPU` works and is reported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from farmhand.localfarm import local_farm
from farmhand.worker.blender.devices import blender_devices, check_device
from farmhand.worker.blender.discovery import BlenderInstall, BlenderNotFound
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.blender


@pytest.mark.parametrize("fixture", ["blender_module", "blender_executable"])
def test_blender_lists_its_devices_cpu_first(fixture: str, request: pytest.FixtureRequest) -> None:
    install: BlenderInstall = request.getfixturevalue(fixture)
    devices = blender_devices(install)
    assert devices[0] == ("CPU", "CPU")
    check_device(install, "CPU", None, devices)
    if not any(kind == "CUDA" for kind, _ in devices):
        with pytest.raises(BlenderNotFound, match="sees no CUDA device"):
            check_device(install, "CUDA", None, devices)


def test_worker_with_a_device_blender_cannot_use_fails_at_start(
    blender_module: BlenderInstall, tmp_path: Path
) -> None:
    if any(kind == "CUDA" for kind, _ in blender_devices(blender_module)):
        pytest.skip("this machine has a CUDA device")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "farmhand",
            "worker",
            "--manager",
            "http://127.0.0.1:9",
            "--token",
            "x",
            "--name",
            "gpu0",
            "--work-dir",
            str(tmp_path / "w"),
            "--blender",
            "bpy",
            "--device",
            "CUDA",
            "--gpu",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--device CUDA" in result.stderr
    assert "sees no CUDA device" in result.stderr
    assert "--device CPU" in result.stderr  # what to do instead


def test_a_cpu_worker_reports_its_machine_and_devices(tmp_path: Path) -> None:
    with local_farm(tmp_path / "farm") as farm:
        farm.start_manager()
        farm.start_worker("cpu", "--device", "CPU", blender="bpy")
        with farm.client() as client:
            runner = wait_for(
                lambda: next((r for r in client.list_runners() if r.name == "cpu"), None),
                180,
                f"the worker to register\n{farm.logs()}",
            )
        caps = runner.capabilities
        assert caps.device == "CPU"
        assert "CPU: CPU" in caps.blender_devices
        assert caps.cores >= 1 and caps.ram_bytes > 0 and caps.cpu
        assert caps.blender_versions and caps.blender_versions[0].startswith("5.")
