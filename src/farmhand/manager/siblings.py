"""Small messages between the processes of one manager on one host.

`farmhand manager --processes N` runs N Uvicorn worker processes on one data dir and
one database. Two pieces of in-process state must reach the sibling processes: the
`EventBus` (a browser whose live stream is served by process A must also see changes
committed through process B) and `Wakeup` (work queued through A must wake the claims
long-polling in B). Both send tiny hints: an event names what changed by id, a wakeup
carries nothing.

Each process binds one UNIX datagram socket in its host's directory (`siblings_dir`:
managers on several hosts may share one data dir), named after its pid
(`<pid>-<token>.sock`, the token tells apart several instances in one process), and a
broadcast is one `sendto` per sibling socket found there. Datagrams need no connection
bookkeeping, no broker process and no ordering between peers, and a non-blocking send
never stalls a request: a sibling whose queue is full simply loses that message (Linux
queues only `net.unix.max_dgram_qlen` datagrams, 10 by default, per socket). Losing one
is acceptable because nothing depends on it: the web UI refetches on every (re)connect
and on the next event about the same thing, and waiting claims also look at the
database every `claim_poll_interval`. A killed manager leaves its socket files behind;
they are removed when the next manager starts (their pid is gone) or when a send to
them is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], None]

SUFFIX = ".sock"
REFRESH_SECONDS = 1.0
"""How long the list of sibling sockets is reused before the directory is read again."""
MAX_DATAGRAM = 65536
READS_PER_WAKEUP = 256
"""Datagrams read per reader callback: drain the small kernel queue, but yield eventually."""
SUN_PATH_MAX = 107
"""Longest path `bind`/`sendto` accept for an AF_UNIX address (108 bytes with the NUL)."""


def siblings_dir(data_dir: Path) -> Path:
    """Where one host's manager processes put their sockets: a folder per host, because
    managers on several hosts may share one data dir (on PostgreSQL, with the store on a
    network share), where a UNIX socket reaches no other host and another host's pids
    would look dead and have their sockets removed."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64]
    return data_dir / "run" / "siblings" / (host if host.strip(".") else "host")


def _pid_of(name: str) -> int | None:
    if not name.endswith(SUFFIX):
        return None
    head = name[: -len(SUFFIX)].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class Siblings:
    """Fan-out of JSON messages to the other processes binding a socket in `directory`.

    `broadcast` is safe from any thread and never blocks or raises; handlers registered
    with `on` run on the loop given to `start`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.dropped = 0
        """Messages not delivered to some sibling because its queue was full."""
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiver: socket.socket | None = None
        self._sender: socket.socket | None = None
        self._dir_fd: int | None = None
        self._name: str | None = None
        self._peers: list[str] = []
        self._peers_read_at = float("-inf")

    @property
    def name(self) -> str | None:
        """This process's socket file name once started, else None."""
        return self._name

    def on(self, topic: str, handler: Handler) -> None:
        self._handlers[topic] = handler

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._receiver is not None:
                raise RuntimeError("Siblings already started")
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Also when it was there before (made by hand, or an older manager's umask):
            # a datagram carries no sender, so only the manager's own user may reach the
            # sockets. A directory of another user fails here (EPERM), not later.
            os.chmod(self.directory, 0o700)
            self._remove_dead()
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                receiver.setblocking(False)
                sender.setblocking(False)
                self._dir_fd = dir_fd
                receiver.bind(self._address(name))
                loop.add_reader(receiver.fileno(), self._read)
            except BaseException:
                receiver.close()
                sender.close()
                os.close(dir_fd)
                self._dir_fd = None
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
                raise
            self._loop, self._receiver, self._sender, self._name = loop, receiver, sender, name
            self._peers_read_at = float("-inf")
        log.info("siblings listening", directory=str(self.directory), socket=name)

    def broadcast(self, topic: str, message: dict[str, Any]) -> None:
        """Send `message` (plus `"topic": topic`) to every other process; never raises."""
        try:
            data = json.dumps({**message, "topic": topic}, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            log.exception("sibling message not serialisable", topic=topic)
            return
        with self._lock:
            sender = self._sender
            if sender is None:
                return  # not started, or closed
            for peer in list(self._current_peers()):  # _forget edits the list
                try:
                    sender.sendto(data, self._address(peer))
                except BlockingIOError:
                    self.dropped += 1
                    log.debug("sibling queue full, message dropped", peer=peer, topic=topic)
                except (ConnectionRefusedError, FileNotFoundError):
                    self._forget(peer)
                except OSError as error:
                    log.warning("sending to sibling failed", peer=peer, error=str(error))

    def close(self) -> None:
        """Stop receiving and remove this process's socket. Idempotent; call it on the
        loop thread (or once the loop has stopped)."""
        with self._lock:
            receiver, sender, loop, name = self._receiver, self._sender, self._loop, self._name
            dir_fd = self._dir_fd
            self._receiver = self._sender = None
            self._loop = None
            self._dir_fd = None
            self._peers = []
        if receiver is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(receiver.fileno())
        receiver.close()
        if sender is not None:
            sender.close()
        if name is not None:
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
        if dir_fd is not None:
            os.close(dir_fd)
        log.debug("siblings closed", socket=name)

    # Called with self._lock held.

    def _address(self, name: str) -> str:
        path = str(self.directory / name)
        if len(os.fsencode(path)) <= SUN_PATH_MAX:
            return path
        # A deep data dir: reach the socket through the directory's open descriptor.
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def _current_peers(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_read_at >= REFRESH_SECONDS:
            try:
                names = os.listdir(self.directory)
            except OSError as error:
                log.warning("listing sibling sockets failed", error=str(error))
                names = []
            self._peers = sorted(n for n in names if _pid_of(n) is not None and n != self._name)
            self._peers_read_at = now
        return self._peers

    def _forget(self, peer: str) -> None:
        log.debug("removing socket of a gone sibling", peer=peer)
        with contextlib.suppress(OSError):
            (self.directory / peer).unlink()
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)

    def _remove_dead(self) -> None:
        for entry in os.listdir(self.directory):
            pid = _pid_of(entry)
            if pid is not None and not _process_exists(pid):
                log.debug("removing socket of a gone sibling", peer=entry, pid=pid)
                with contextlib.suppress(OSError):
                    (self.directory / entry).unlink()

    # On the loop thread.

    def _read(self) -> None:
        receiver = self._receiver
        if receiver is None:
            return
        for _ in range(READS_PER_WAKEUP):
            try:
                data = receiver.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("reading sibling socket failed", error=str(error))
                return
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            log.debug("malformed sibling message ignored", size=len(data))
            return
        topic = message.get("topic") if isinstance(message, dict) else None
        if not isinstance(topic, str):
            log.debug("sibling message without topic ignored", size=len(data))
            return
        handler = self._handlers.get(topic)
        if handler is None:
            log.debug("sibling message with unknown topic ignored", topic=topic)
            return
        try:
            handler(message)
        except Exception:
            log.exception("sibling message handler failed", topic=topic)
