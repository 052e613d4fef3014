"""Real farmhand processes for end-to-end tests: a manager and workers as children.

Each process is what a user runs (`python -m farmhand manager|worker …`), with its output
in a log file that is printed when a test fails, so a failure explains itself.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from farmhand.client.client import FarmhandClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


@dataclass
class LiveFarm:
    root: Path
    port: int
    admin_token: str = field(default_factory=lambda: "fh_api_e2e_" + secrets.token_hex(16))
    runner_token: str = field(default_factory=lambda: "fh_reg_e2e_" + secrets.token_hex(16))
    heartbeat_timeout: float = 4.0
    children: list[Child] = field(default_factory=list)
    manager: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FARMHAND_ADMIN_TOKEN=self.admin_token,
            FARMHAND_RUNNER_TOKEN=self.runner_token,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_manager(self) -> Child:
        child = Child(
            "manager",
            [
                sys.executable,
                "-m",
                "farmhand",
                "manager",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.root / "data"),
                "--heartbeat-timeout",
                str(self.heartbeat_timeout),
            ],
            self.root / "logs" / "manager.log",
            self._env(),
        ).start()
        self.manager = child
        self.children.append(child)
        self.wait_healthy()
        return child

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.manager is not None and self.manager.process is not None
            if self.manager.process.poll() is not None:
                raise RuntimeError("manager exited:\n" + self.manager.tail())
            time.sleep(0.2)
        raise TimeoutError("manager did not become healthy:\n" + self.manager.tail())

    def start_worker(self, name: str, *extra: str, blender: str = "bpy") -> Child:
        child = Child(
            name,
            [
                sys.executable,
                "-m",
                "farmhand",
                "worker",
                "--manager",
                self.url,
                "--token",
                self.runner_token,
                "--name",
                name,
                "--work-dir",
                str(self.root / name),
                "--blender",
                blender,
                "--heartbeat-interval",
                "1",
                "--poll-wait",
                "2",
                *extra,
            ],
            self.root / "logs" / f"{name}.log",
            self._env(),
        ).start()
        self.children.append(child)
        return child

    def client(self) -> FarmhandClient:
        return FarmhandClient(self.url, self.admin_token)

    def logs(self) -> str:
        return "\n".join(child.tail() for child in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


@contextmanager
def live_farm(root: Path, **options: float) -> Iterator[LiveFarm]:
    farm = LiveFarm(root, free_port(), **options)  # type: ignore[arg-type]
    try:
        yield farm
    except BaseException:
        print(farm.logs())
        raise
    finally:
        farm.stop()


def wait_for(predicate, timeout: float, what: str, farm: LiveFarm | None = None):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy, or fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
