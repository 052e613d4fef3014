"""A whole farm on this machine as child processes: a manager and N workers.

Used by `farmhand demo`, by the end-to-end tests and by the benchmarks, so all three
start processes exactly the way a user would (`python -m farmhand manager|worker …`),
each with its output in its own log file.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from farmhand.client import FarmhandClient


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (a small race, fine on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it, from /proc (Linux): a manager started with
    `--processes` is a supervisor with a server process per core under it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended while we looked
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [pid], {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        found += sorted(children)
        frontier = children
    return found


class FarmStartError(RuntimeError):
    """A process of the farm did not come up; the message carries its log's tail."""


@dataclass
class Child:
    """One child process and the log file its output goes to."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env,
            )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for the process to end; kill it if it takes longer than `timeout`."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to say goodbye (for fault tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalFarm:
    root: Path
    port: int = 0
    host: str = "127.0.0.1"
    heartbeat_timeout: float | None = None
    admin_token: str = field(default_factory=lambda: "fh_api_" + secrets.token_urlsafe(32))
    runner_token: str = field(default_factory=lambda: "fh_reg_" + secrets.token_urlsafe(32))
    children: list[Child] = field(default_factory=list)
    manager: Child | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FARMHAND_ADMIN_TOKEN=self.admin_token,
            FARMHAND_RUNNER_TOKEN=self.runner_token,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_manager(self, *extra: str, wait: float = 60.0) -> Child:
        args = [
            sys.executable, "-m", "farmhand", "manager",
            "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self.heartbeat_timeout is not None:
            args += ["--heartbeat-timeout", str(self.heartbeat_timeout)]
        self.manager = self._start("manager", [*args, *extra])
        self.wait_healthy(wait)
        return self.manager

    def start_worker(
        self,
        name: str,
        *extra: str,
        blender: str | None = None,
        prefix: Sequence[str] = (),
    ) -> Child:
        """Start a worker; `prefix` wraps the command (e.g. `taskset -c 0`)."""
        args = [
            *prefix, sys.executable, "-m", "farmhand", "worker",
            "--manager", self.url, "--token", self.runner_token, "--name", name,
            "--work-dir", str(self.root / "workers" / name),
            "--heartbeat-interval", "1", "--poll-wait", "5",
        ]  # fmt: skip
        if blender is not None:
            args += ["--blender", blender]
        return self._start(name, [*args, *extra])

    def _start(self, name: str, args: list[str]) -> Child:
        child = Child(name, args, self.log_dir / f"{name}.log", self.env()).start()
        self.children.append(child)
        return child

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.manager is not None and not self.manager.running:
                raise FarmStartError("the manager exited during start-up\n" + self.manager.tail())
            time.sleep(0.2)
        tail = self.manager.tail() if self.manager else ""
        raise FarmStartError(f"the manager did not answer within {timeout:.0f} s\n{tail}")

    def dead(self) -> list[Child]:
        return [child for child in self.children if not child.running]

    def client(self) -> FarmhandClient:
        return FarmhandClient(self.url, self.admin_token)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(child.tail(lines) for child in self.children)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM workers first (they release their tasks and sign off), then the rest."""
        for child in reversed(self.children):
            child.terminate()
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            child.wait(deadline - time.monotonic())


@contextmanager
def local_farm(root: Path, **options: object) -> Iterator[LocalFarm]:
    """A farm that is always stopped, and whose logs are printed if the body fails."""
    farm = LocalFarm(root, **options)  # type: ignore[arg-type]
    try:
        yield farm
    except BaseException:
        print(farm.logs(), file=sys.stderr)
        raise
    finally:
        farm.stop()
