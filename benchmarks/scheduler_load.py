"""Scheduler load: many simulated workers pushing many tasks through one manager.

No Blender: each simulated worker long-polls a claim, reports progress once, uploads a
tiny PNG for its frame (a task completes only with its outputs stored) and completes.
The manager is a real `farmhand manager` process on SQLite, on this machine; the
workers are coroutines in this process sharing the same two cores, so the figures are
for the whole system, not the manager alone.

Reports dispatches per second (tasks claimed and completed per second of wall time),
claim latency p50/p99 (request sent → task received, for claims that got a task),
errors (any answer other than the expected ones; must be 0), the manager's resident
memory at start and end, and the manager's CPU time per task: unlike the rates, that
figure does not depend on what else the machine is doing.

With `--render-ms`, each worker spends about that long "rendering" each task, so the
manager is not saturated and the claim latency is what a worker sees at that load.

With `--queued-jobs N`, N small jobs (two tasks each) of four other users wait in the
queue the whole run, submitted before the measured job, as on a busy farm: most at a lower
priority (they rank behind the measured job), and a share (`--queued-ahead`) at the
same priority, asking for a tag no simulated worker has (GPU machines that are away).
Those rank *ahead* of the measured job (their owners hold no worker, so fair share puts
them first), and every claim must look at them and pass them by. None of them is run:
the figures are for the measured job's tasks, with the claim choosing among all of them.

Run:  .venv/bin/python benchmarks/scheduler_load.py [--workers 200] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from keepalive import KeepAliveClient
from PIL import Image

from farmhand.localfarm import descendants, local_farm

FAKE_BLEND = b"BLENDER-v304" + b"\x00" * 64


def rss_mb(pid: int) -> float:
    """Resident memory of the manager, all its processes together."""
    total = 0.0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the manager's processes have used (it does not depend on
    the load)."""
    total = 0
    for member in descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def tiny_png(frame: int = 0) -> bytes:
    """A 2x2 PNG whose colour is the frame number: every frame's bytes differ, as a real
    render's do (the store deduplicates identical ones, which would flatter the figures)."""
    buffer = io.BytesIO()
    colour = (frame % 256, frame // 256 % 256, frame // 65536 % 256)
    Image.new("RGB", (2, 2), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class Stats:
    def __init__(self) -> None:
        self.claim_latencies: list[float] = []
        self.first_claim_latencies: list[float] = []
        """Each worker's first claim: all workers ask at once when the run starts."""
        self.errors: list[str] = []
        self.shared_done: Any = None
        """A multiprocessing counter of completed tasks, shared by all client processes."""

    @property
    def completed(self) -> int:
        return int(self.shared_done.value)

    def count_one(self) -> None:
        with self.shared_done.get_lock():
            self.shared_done.value += 1


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body (what httpx's `files=` sends), built once per frame."""
    boundary = "farmhand-load-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: image/png\r\n\r\n"
    )
    body = "".join(parts).encode() + head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Behaviour:
    """What each simulated worker does besides claim, progress, upload and complete."""

    claim_next: bool = True
    """Ask for the next task with the completion, as the real worker does."""
    multipart: bool = False
    """Upload frames as the multipart form of older workers, not the raw-body PUT."""
    render_seconds: float = 0.0
    """Mean time spent "rendering" between the progress report and the upload: 0 is a worker
    that never rests (the manager saturated); more is a farm with work between calls,
    showing the claim latency a worker sees at a given load."""


async def simulated_worker(
    base_url: str, secret: str, stats: Stats, total: int, behaviour: Behaviour
) -> None:
    """Claim, report progress, upload the frames, complete — as the real worker does.

    With `claim_next` the completion also asks for the next task (`?next=true`), as the
    real worker does; then a claim is sent only when a completion brought none. The claim
    latency is from asking for work (a claim, or a completion asking for the next task)
    to having a task. Frames are PUT as the raw body, as the worker sends them.
    """
    client = KeepAliveClient(base_url, {"Authorization": f"Bearer {secret}"})
    complete_query = "?next=true" if behaviour.claim_next else ""
    task: dict[str, Any] | None = None
    first_claim = True
    try:
        while stats.completed < total:
            if task is None:
                started = time.perf_counter()
                answer = await client.get("/api/runner/tasks?wait=2")
                if answer.status == 204:
                    continue
                if answer.status != 200:
                    stats.errors.append(f"claim {answer.status}: {answer.text[:100]}")
                    continue
                latency = time.perf_counter() - started
                if first_claim:
                    stats.first_claim_latencies.append(latency)
                    first_claim = False
                else:
                    stats.claim_latencies.append(latency)
                task = answer.json()
            assert task is not None
            task_id, job_id = task["task_id"], task["job_id"]
            reply = await client.post_json(
                f"/api/runner/tasks/{task_id}/progress",
                {"frames_done": 0, "log_lines": ["Fra:1 | Sample 1/1"]},
            )
            if reply.status != 200:
                stats.errors.append(f"progress {reply.status}")
            if behaviour.render_seconds:
                # Spread around the mean, as real frames are: equal times would keep the
                # workers in step, all calling at once.
                await asyncio.sleep(behaviour.render_seconds * random.uniform(0.5, 1.5))
            for frame in task["frames"]:
                if behaviour.multipart:
                    body, content_type = multipart(
                        {"task_id": str(task_id), "frame": str(frame)},
                        f"{frame}.png",
                        tiny_png(frame),
                    )
                    upload = await client.request(
                        "POST", f"/api/runner/files/{job_id}/upload", body, content_type
                    )
                else:
                    upload = await client.request(
                        "PUT",
                        f"/api/runner/tasks/{task_id}/frames/{frame}.png",
                        tiny_png(frame),
                        "application/octet-stream",
                    )
                if upload.status != 201:
                    stats.errors.append(f"upload {upload.status}: {upload.text[:100]}")
            started = time.perf_counter()
            done = await client.post_json(
                f"/api/runner/tasks/{task_id}/complete{complete_query}", {"frames": task["frames"]}
            )
            task = None
            if done.status != 200:
                stats.errors.append(f"complete {done.status}: {done.text[:100]}")
                continue
            stats.count_one()
            task = done.json().get("next_task")
            if task is not None:
                stats.claim_latencies.append(time.perf_counter() - started)
    finally:
        await client.close()


@dataclass(frozen=True)
class Queue:
    """The jobs that wait in the queue while the measured job runs (`--queued-jobs`)."""

    jobs: int = 0
    ahead: float = 0.1
    """The share at the measured job's priority (and a tag no simulated worker has)."""
    users: int = 4


async def _submit(client: httpx.AsyncClient, token: str, settings: dict[str, Any]) -> None:
    answer = await client.post(
        "/api/jobs",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("load.blend", FAKE_BLEND, "application/octet-stream")},
        data={"settings": json.dumps(settings)},
    )
    answer.raise_for_status()


async def _fill_queue(url: str, admin: str, queue: Queue) -> None:
    """Submit `queue.jobs` small jobs of other users, a few at a time (before the manager's
    CPU is first read: submitting them is not part of the figures)."""
    if queue.jobs:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await _fill(client, admin, queue)


async def _fill(client: httpx.AsyncClient, admin: str, queue: Queue) -> None:
    tokens = []
    for n in range(queue.users):
        answer = await client.post(
            "/api/admin/users",
            headers={"Authorization": f"Bearer {admin}"},
            json={"name": f"queued{n}"},
        )
        answer.raise_for_status()
        tokens.append(answer.json()["token"])
    every = round(1 / queue.ahead) if queue.ahead else 0
    small = {"frame_start": 1, "frame_end": 2, "chunk_size": 1}
    ahead = {**small, "required_tags": ["gpu"]}  # the default priority, as the measured job
    behind = {**small, "priority": 30}
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> None:
        async with gate:
            settings = ahead if every and n % every == 0 else behind
            await _submit(client, tokens[n % len(tokens)], settings)

    await asyncio.gather(*(one(n) for n in range(queue.jobs)))


async def _register_and_submit(
    url: str, admin: str, runner_token: str, workers: int, tasks: int
) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        secrets = []
        for n in range(workers):
            answer = await client.post(
                "/api/runner/register", json={"token": runner_token, "name": f"sim{n}"}
            )
            answer.raise_for_status()
            secrets.append(answer.json()["secret"])
        await _submit(client, admin, {"frame_start": 1, "frame_end": tasks, "chunk_size": 1})
    return secrets


async def _drive(
    url: str, secrets: list[str], total: int, done: Any, behaviour: Behaviour
) -> Stats:
    stats = Stats()
    stats.shared_done = done
    await asyncio.gather(*(simulated_worker(url, s, stats, total, behaviour) for s in secrets))
    return stats


def _client_process(
    url: str, secrets: list[str], total: int, done: Any, out: Any, behaviour: Behaviour
) -> None:
    stats = asyncio.run(_drive(url, secrets, total, done, behaviour))
    used = os.times()
    out.put(
        (stats.claim_latencies, stats.first_claim_latencies, stats.errors, used.user + used.system)
    )


def _p99(sorted_values: list[float]) -> float:
    return sorted_values[max(0, int(len(sorted_values) * 0.99) - 1)]


class MemoryWatch:
    """The manager's resident memory, sampled while the run goes on, by tasks done."""

    def __init__(self, pid: int, done: Any, tasks: int) -> None:
        self.pid, self.done, self.tasks = pid, done, tasks
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((int(self.done.value), rss_mb(self.pid)))

    def at(self, share: float) -> float:
        """RSS when `share` of the tasks were done."""
        wanted = share * self.tasks
        return next((rss for done, rss in self.samples if done >= wanted), self.samples[-1][1])


def run(
    url: str,
    admin: str,
    runner_token: str,
    workers: int,
    tasks: int,
    processes: int,
    pid: int,
    behaviour: Behaviour,
) -> dict[str, object]:
    """Simulated workers spread over `processes` client processes (one is client-bound)."""
    secrets = asyncio.run(_register_and_submit(url, admin, runner_token, workers, tasks))
    context = multiprocessing.get_context("spawn")
    done = context.Value("i", 0)
    out = context.Queue()
    clients = [
        context.Process(
            target=_client_process,
            args=(url, secrets[i::processes], tasks, done, out, behaviour),
        )
        for i in range(processes)
    ]
    started = time.perf_counter()
    latencies: list[float] = []
    first_latencies: list[float] = []
    errors: list[str] = []
    client_cpu = 0.0
    with MemoryWatch(pid, done, tasks) as memory:
        for client in clients:
            client.start()
        for _ in clients:
            got_latencies, got_first, got_errors, got_cpu = out.get()
            latencies += got_latencies
            first_latencies += got_first
            errors += got_errors
            client_cpu += got_cpu
        for client in clients:
            client.join()
    elapsed = time.perf_counter() - started
    everything = sorted(latencies + first_latencies)
    latencies.sort()
    return {
        "workers": workers,
        "tasks": tasks,
        "client_processes": processes,
        "seconds": round(elapsed, 1),
        "dispatches_per_second": round(done.value / elapsed, 1),
        "claim_p50_ms": round(statistics.median(everything) * 1000, 1),
        "claim_p99_ms": round(_p99(everything) * 1000, 1),
        # Without each worker's first claim: at the start all of them ask at once, a
        # burst a farm sees when it starts, not while it runs.
        "claim_p50_ms_running": round(statistics.median(latencies) * 1000, 1),
        "claim_p99_ms_running": round(_p99(latencies) * 1000, 1),
        "errors": len(errors),
        "first_errors": errors[:5],
        "client_cpu_ms_per_task": round(client_cpu * 1000 / tasks, 2),
        # Flat memory means no growth once warm: compare a tenth of the way with the end.
        "manager_rss_mb_at_10_50_100_percent": [
            round(memory.at(0.1), 1),
            round(memory.at(0.5), 1),
            round(memory.at(1.0), 1),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument(
        "--manager-processes", type=int, default=1, help="farmhand manager --processes"
    )
    parser.add_argument(
        "--no-next",
        action="store_true",
        help="claim every task with its own request (completions do not ask for the next)",
    )
    parser.add_argument(
        "--multipart",
        action="store_true",
        help="upload frames as the multipart form of older workers, not the raw-body PUT",
    )
    parser.add_argument(
        "--render-ms",
        type=float,
        default=0.0,
        help="simulated render time per task (0: workers that never rest)",
    )
    parser.add_argument(
        "--queued-jobs",
        type=int,
        default=0,
        help="small jobs of other users waiting in the queue the whole run",
    )
    parser.add_argument(
        "--queued-ahead",
        type=float,
        default=0.1,
        help="share of the queued jobs at the measured job's priority, needing a tag no "
        "simulated worker has (fair share ranks them first; every claim passes them by)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="farmhand-load-"))
    with local_farm(root, heartbeat_timeout=600.0) as farm:
        manager = farm.start_manager(
            "--log-level", "WARNING", "--processes", str(args.manager_processes)
        )
        assert manager.process is not None
        pid = manager.process.pid
        asyncio.run(
            _fill_queue(farm.url, farm.admin_token, Queue(args.queued_jobs, args.queued_ahead))
        )
        start_rss, start_cpu = rss_mb(pid), cpu_seconds(pid)
        results = run(
            farm.url,
            farm.admin_token,
            farm.runner_token,
            args.workers,
            args.tasks,
            args.processes,
            pid,
            Behaviour(not args.no_next, args.multipart, args.render_ms / 1000),
        )
        results["manager_processes"] = args.manager_processes
        results["completion_claims_next"] = not args.no_next
        results["frame_upload"] = "multipart POST" if args.multipart else "raw-body PUT"
        results["render_ms"] = args.render_ms
        results["queued_jobs"] = args.queued_jobs
        results["queued_ahead"] = args.queued_ahead if args.queued_jobs else 0
        results["manager_rss_mb_start"] = round(start_rss, 1)
        results["manager_rss_mb_end"] = round(rss_mb(pid), 1)
        # Includes registering the workers and compiling the job (small next to the run).
        results["manager_cpu_ms_per_task"] = round(
            (cpu_seconds(pid) - start_cpu) * 1000 / args.tasks, 2
        )
        results["load_average_1min_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
