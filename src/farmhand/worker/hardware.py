"""What this machine has, reported to the manager so it can place work sensibly."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

from farmhand.shared.schemas import WorkerCapabilities


def cpu_model() -> str:
    """The CPU's marketing name; `platform.processor()` is often empty on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_count() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ram_bytes() -> int:
    """Physical memory in bytes, or 0 if the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


def hostname() -> str:
    return socket.gethostname()


def capabilities(
    blender_versions: list[str],
    tags: list[str] | None = None,
    *,
    device: str = "CPU",
    gpu: int | None = None,
    blender_devices: list[tuple[str, str]] | None = None,
) -> WorkerCapabilities:
    """This machine's `WorkerCapabilities`, cut to the lengths the schema allows.

    `blender_devices` are what Blender itself sees (the devices it could render on); the
    GPUs among them are the machine's GPUs as far as rendering is concerned.
    """
    seen = blender_devices or []
    return WorkerCapabilities.model_validate(
        {
            "tags": tags or [],
            "blender_versions": blender_versions[:32],
            "cpu": cpu_model()[:200],
            "cores": core_count(),
            "ram_bytes": ram_bytes(),
            "hostname": hostname()[:255],
            "device": device,
            "gpu": gpu,
            "blender_devices": [f"{kind}: {name}"[:200] for kind, name in seen][:64],
            "gpus": sorted({name[:200] for kind, name in seen if kind != "CPU"})[:64],
        }
    )
