"""Which compute devices a Blender can render on, asked of Blender itself at worker start.

`farmhand worker --device CUDA` on a machine whose Blender sees no CUDA device must fail
at start with a message a person can act on, not take tasks and fail each one. The
driver enumerates Cycles' devices (`devices` command) the way Blender's preferences do.
"""

from __future__ import annotations

import json
import os
import subprocess

from farmhand.worker.blender.discovery import BlenderInstall, BlenderNotFound
from farmhand.worker.blender.events import Devices, parse_event_line
from farmhand.worker.blender.orphans import run_briefly
from farmhand.worker.blender.process import blender_command

PROBE_TIMEOUT = 180.0
GPU_KINDS = ("CUDA", "OPTIX", "HIP", "ONEAPI", "METAL")


def blender_devices(install: BlenderInstall) -> list[tuple[str, str]]:
    """(kind, name) of every device `install` sees, CPU first."""
    stdin = json.dumps({"cmd": "devices"}) + "\n" + json.dumps({"cmd": "quit"}) + "\n"
    try:
        result = run_briefly(
            blender_command(install),
            input=stdin.encode(),
            timeout=PROBE_TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BlenderNotFound(
            f"cannot ask Blender {install.version} for its devices: {error}"
        ) from error
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        event = parse_event_line(line)
        if isinstance(event, Devices):
            return event.devices
    raise BlenderNotFound(
        f"Blender {install.version} did not list its devices (exit code {result.returncode})"
    )


def check_device(
    install: BlenderInstall, device: str, gpu: int | None, seen: list[tuple[str, str]]
) -> None:
    """Raise BlenderNotFound, saying what to do, if `install` cannot render on `device`."""
    if device == "CPU":
        if gpu is not None:
            raise BlenderNotFound("--gpu picks one GPU of a GPU --device (CUDA, OPTIX, HIP...)")
        return
    kinds = sorted({kind for kind, _ in seen})
    matching = [name for kind, name in seen if kind == device]
    if not matching:
        raise BlenderNotFound(
            f"--device {device}: Blender {install.version} sees no {device} device on this "
            f"machine (it sees: {', '.join(kinds)}). Install the {device} driver, pick "
            f"another --device, or use --device CPU"
        )
    if gpu is not None and gpu >= len(matching):
        raise BlenderNotFound(
            f"--gpu {gpu}: Blender {install.version} sees {len(matching)} {device} "
            f"device(s), numbered from 0: {', '.join(matching)}"
        )
