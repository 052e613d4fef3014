"""What this machine has, reported to the manager so it can place work sensibly."""

from __future__ import annotations

import ipaddress
import os
import platform
import socket
from pathlib import Path
from urllib.parse import urlsplit

from farmhand.shared.protocol import WORKER_PROTOCOL
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


def local_address(manager_url: str) -> str:
    """This machine's IP address on its way to the manager at `manager_url`: the local end
    of a UDP socket connected to it (connecting a datagram socket sends nothing; the
    system only picks the route and so the interface), or "" if it cannot tell.

    On a machine with several interfaces (a LAN, a VPN, Docker's bridge) it is the one
    the manager is reached through, not whichever the hostname resolves to.
    """
    try:
        parts = urlsplit(manager_url)
        if not parts.hostname:
            return ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        family, _, _, _, where = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            host = str(probe.getsockname()[0])
    except (OSError, IndexError, ValueError):
        return ""
    try:
        return str(ipaddress.ip_address(host))[:100]
    except ValueError:
        return ""


def capabilities(
    blender_versions: list[str],
    tags: list[str] | None = None,
    *,
    device: str = "CPU",
    gpu: int | None = None,
    blender_devices: list[tuple[str, str]] | None = None,
    manager_url: str | None = None,
) -> WorkerCapabilities:
    """This machine's `WorkerCapabilities`, cut to the lengths the schema allows.

    `blender_devices` are what Blender itself sees (the devices it could render on); the
    GPUs among them are the machine's GPUs as far as rendering is concerned. With
    `manager_url`, its address towards that manager (`local_address`).
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
            "address": local_address(manager_url) if manager_url else "",
            "device": device,
            "gpu": gpu,
            "blender_devices": [f"{kind}: {name}"[:200] for kind, name in seen][:64],
            "gpus": sorted({name[:200] for kind, name in seen if kind != "CPU"})[:64],
            "protocol": WORKER_PROTOCOL,
        }
    )
