"""`farmhand demo`: a whole farm on this machine, one command, to see it work.

Starts a manager and N workers as child processes (each logging to `DIR/logs/`), builds
a small animated scene, submits it through the same client as `farmhand submit`,
downloads the frames and checks every one is a real image. Nothing is shared between
the processes but HTTP, so the demo exercises exactly what a real farm does.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console

from farmhand.cli.jobs_cmd import follow, frame_bounds
from farmhand.client import FarmhandClient, FarmhandError, ManagerUnreachable
from farmhand.shared.schemas import JobSettings, JobStatus

console = Console()
err = Console(stderr=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (small race, fine for a demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def manager_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "farmhand", "manager",
        "--host", host, "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip


def worker_command(url: str, token: str, index: int, work_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "farmhand", "worker",
        "--manager", url, "--token", token,
        "--name", f"demo-worker-{index}", "--work-dir", str(work_dir),
        "--heartbeat-interval", "2", "--poll-wait", "5",
    ]  # fmt: skip


@dataclass
class Child:
    """A child process and the log file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


@dataclass
class Farm:
    """The processes of a demo farm, so they can be stopped together."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str]) -> Child:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            list(args), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everyone (workers first, so they can release and sign off), then kill."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.log_file.close()


def wait_for_health(client: FarmhandClient, farm: Farm, timeout: float) -> None:
    """Poll `/healthz` until the manager answers; fail fast if a child died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.health()
            return
        except ManagerUnreachable:
            if farm.dead():
                raise FarmhandError(f"{farm.dead()[0].name} exited during start-up") from None
            if time.monotonic() > deadline:
                raise FarmhandError(f"manager did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def log_tail(path: Path, lines: int = 20) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def print_log_tails(log_dir: Path, lines: int = 20) -> None:
    for path in sorted(log_dir.glob("*.log")):
        err.rule(str(path))
        for line in log_tail(path, lines):
            err.print(line, markup=False, highlight=False)


def child_env(admin_token: str, runner_token: str) -> dict[str, str]:
    env = dict(os.environ)
    env["FARMHAND_ADMIN_TOKEN"] = admin_token
    env["FARMHAND_RUNNER_TOKEN"] = runner_token
    return env


def run_demo(root: Path, workers: int, frames: str, keep: bool, port: int, timeout: float) -> int:
    """The demo itself; returns the exit code. Children are always stopped."""
    from farmhand.scenes import make_scene
    from farmhand.shared.images import verify_image

    first, last = frame_bounds(frames)
    admin_token = secrets.token_urlsafe(24)
    runner_token = secrets.token_urlsafe(24)
    env = child_env(admin_token, runner_token)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir, log_dir = root / "data", root / "logs"
    farm = Farm()
    ok = False
    try:
        with FarmhandClient(url, admin_token) as client:
            console.print(f"starting the manager on {url}")
            farm.start("manager", manager_command(data_dir, port), log_dir, env)
            wait_for_health(client, farm, timeout=60)
            for index in range(1, workers + 1):
                work_dir = root / f"worker-{index}"
                args = worker_command(url, runner_token, index, work_dir)
                farm.start(f"worker-{index}", args, log_dir, env)
            console.print(f"started {workers} workers; building the demo scene")
            blend = make_scene(root / "scene" / "demo.blend", variant="animated")
            settings = JobSettings(
                name="farmhand demo", frame_start=first, frame_end=last, chunk_size=2
            )
            accepted = client.submit_blend(Path(blend), settings)
            console.print(f"submitted job {accepted.id}")
            job = follow(client, accepted.id)
            if job.status != JobStatus.COMPLETED:
                raise FarmhandError(f"job {job.id} {job.status}: {job.status_reason or ''}")
            out = root / "frames"
            written = client.download_outputs(job.id, out)
            for path in written:
                verify_image(path, None, None)
            if len(written) != job.frames_total:
                raise FarmhandError(f"expected {job.frames_total} frames, got {len(written)}")
            ok = True
            console.print(f"[green]{len(written)} frames rendered and verified[/green] in {out}")
            console.print(f"web and API: {url}/docs")
            console.print(f"admin token: {data_dir / 'admin-token'}")
            if keep:
                console.print("serving until Ctrl-C")
                _serve_forever(farm)
    except KeyboardInterrupt:
        console.print("stopping")
    except Exception as exc:
        err.print(f"[red]demo failed:[/red] {exc}", highlight=False)
    finally:
        farm.stop()
    if not ok:
        print_log_tails(log_dir)
        return 1
    return 0


def _serve_forever(farm: Farm) -> None:
    while not farm.dead():
        time.sleep(0.5)
    raise FarmhandError(f"{farm.dead()[0].name} exited")


def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to put everything (default: a temp dir).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="How many workers.")] = 2,
    frames: Annotated[str, typer.Option(help="Frames to render.")] = "1-12",
    keep: Annotated[bool, typer.Option(help="Keep the farm running until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for start-up.")] = 60.0,
) -> None:
    """Run a manager and workers locally, render an animation, check the frames."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="farmhand-demo-"))
    else:
        root = directory.resolve()
        root.mkdir(parents=True, exist_ok=True)
    console.print(f"demo directory: {root}")
    raise typer.Exit(run_demo(root, workers, frames, keep, port, timeout))
