"""The server processes of `farmhand manager --processes N` live no longer than it does,
and a manager that cannot have its port says so before it claims to listen.

`--processes N` turns `farmhand manager` into uvicorn's supervisor, which starts N
server processes sharing its listening socket. A supervisor killed with SIGKILL runs no
cleanup: its servers were re-parented to init and went on serving the port, so the
same command run again printed "listening" and then died with `[Errno 98] Address
already in use`, while the orphans served with nobody watching them. Two ends close
that:

- `die_with_supervisor`, called by each server process as it starts (the app factory,
  `app.app_from_environment`), asks Linux to send it SIGTERM when the supervisor dies
  (`PR_SET_PDEATHSIG`): the server then shuts down as on any SIGTERM (the reaper
  stopped, its sibling socket removed). Linux sends the signal when the *thread* that
  forked the process ends; uvicorn's supervisor forks every server from its main
  thread, so that is when the supervisor ends. A supervisor that died before the call
  is seen by the process's parent no longer being it, and the server exits at once.
  Elsewhere than Linux there is no `prctl`, and nothing is done.
- `cannot_listen` tries the address before the manager starts: a port in use (by
  anything) is one error line, not a "listening" line and then a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import multiprocessing
import os
import signal
import socket
import sys

import structlog

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """In a server process started by uvicorn's supervisor: get SIGTERM when it dies, or
    exit now if it already has. Does nothing in a process no supervisor started (one
    `farmhand manager` without `--processes`, a test) or where there is no `prctl`."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None or not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0) != 0:
        log.warning(
            "cannot ask to be stopped with the manager's supervisor",
            error=os.strerror(ctypes.get_errno()),
        )
        return
    if os.getppid() != parent.pid:
        log.error("the manager's supervisor is gone; this server process stops", pid=os.getpid())
        raise SystemExit(1)


def cannot_listen(host: str, port: int) -> str | None:
    """Why the manager could not listen on `host`:`port`, in one line, or None if it can.

    Bound as uvicorn binds (SO_REUSEADDR, every address `host` names) and let go at
    once: a port another process listens on is refused, one in TIME_WAIT is not.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot listen on {host}:{port}: {error.strerror or error}"
    for family, kind, protocol, _, address in addresses:
        with contextlib.closing(socket.socket(family, kind, protocol)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} on {host} is already in use: another program, or "
                        "another farmhand manager (or server processes of one) still "
                        "running, listens on it"
                    )
                reason = (error.strerror or str(error)).lower()
                return f"cannot listen on {host}:{port}: {reason}"
    return None
