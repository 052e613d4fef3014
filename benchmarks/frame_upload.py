"""Uploading one big rendered frame: the raw-body PUT workers send against the multipart
form of workers before it.

A frame of a few hundred MB is what a 4K multilayer EXR with many passes weighs. Both
routes verify the image and store it in the content-addressed blob store; the multipart
route first lets the form parser spool the file to a temporary file (past 1 MiB), then
copies it into the store, so the manager writes every byte twice. Reported per route:
seconds per upload, the manager's CPU per upload and the bytes it wrote to disk per
upload (`/proc/<pid>/io`), both over loopback from `RunnerClient` as the worker calls it.

Run:  .venv/bin/python benchmarks/frame_upload.py [--size-mib 256] [--repeat 3]
The frame is a PNG whose pixel data is random (it does not compress), made once.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from farmhand.client import RunnerClient
from farmhand.localfarm import descendants, local_farm
from farmhand.shared.protocol import WORKER_PROTOCOL
from farmhand.shared.schemas import JobSettings, WorkerCapabilities

MIB = 1024 * 1024


def big_png(path: Path, size_mib: int) -> Path:
    """A PNG of about `size_mib` MiB: random RGB pixels, stored without compression."""
    side = int((size_mib * MIB / 3) ** 0.5)
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        path, format="PNG", compress_level=0
    )
    return path


def manager_io(pid: int) -> tuple[float, int]:
    """CPU seconds and bytes written to storage by the manager's processes so far."""
    cpu, written = 0.0, 0
    for member in descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            io = dict(
                line.split(": ") for line in Path(f"/proc/{member}/io").read_text().splitlines()
            )
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        written += int(io["write_bytes"])
    return cpu, written


def upload_multipart(
    runner: RunnerClient, job_id: int, task_id: int, frame: int, path: Path
) -> object:
    """What workers before the PUT sent (the client's own code for it, kept here)."""
    with path.open("rb") as handle:
        return runner._request(  # the older form, for comparison only
            "POST",
            f"/api/runner/files/{job_id}/upload",
            data={"task_id": str(task_id), "frame": str(frame)},
            files={"file": (path.name, handle, "application/octet-stream")},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="farmhand-frame-upload-"))
    frame_path = big_png(root / "0001.png", args.size_mib)
    size = frame_path.stat().st_size
    results: dict[str, object] = {"frame_mib": round(size / MIB, 1), "repeat": args.repeat}
    with local_farm(root / "farm", heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager("--log-level", "WARNING")
        assert manager.process is not None
        pid = manager.process.pid
        blend = root / "scene.blend"
        blend.write_bytes(b"BLENDER-v304" + b"\x00" * 64)
        job = farm.client().submit_blend(blend, JobSettings(frame_start=1, frame_end=1))
        with RunnerClient(farm.url, timeout=600) as runner:
            runner.register(
                farm.runner_token, "bench", WorkerCapabilities(protocol=WORKER_PROTOCOL)
            )
            task = runner.claim(wait=5)
            assert task is not None and task.job_id == job.id
            routes = {
                "raw-body PUT": lambda: runner.upload_output(
                    task.job_id, task.task_id, 1, frame_path
                ),
                "multipart POST": lambda: upload_multipart(
                    runner, task.job_id, task.task_id, 1, frame_path
                ),
            }
            for name, send in list(routes.items()) * args.repeat:
                cpu_before, written_before = manager_io(pid)
                started = time.perf_counter()
                send()
                seconds = time.perf_counter() - started
                cpu_after, written_after = manager_io(pid)
                runs = results.setdefault(name, [])
                assert isinstance(runs, list)
                runs.append(
                    {
                        "seconds": round(seconds, 2),
                        "manager_cpu_s": round(cpu_after - cpu_before, 2),
                        "manager_written_mib": round((written_after - written_before) / MIB, 1),
                    }
                )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
