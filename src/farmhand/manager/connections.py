"""How the manager's HTTP server treats connections that stall, or come too many at once.

Uvicorn times out an idle keep-alive connection (`timeout_keep_alive`), but only once a
response has been sent: a connection that sends nothing, or stops halfway through its
request line or headers, is held for ever. Each one holds a file descriptor, so enough of
them (no credentials needed) leave the manager unable to accept anyone, or to open its
own files. `HeadTimeoutProtocol` is uvicorn's own HTTP protocol (httptools, what
uvicorn picks anyway) with these added:

- a request's head (request line and headers) must have arrived `head_timeout` seconds
  after the connection opened, or after its first byte on a kept-alive connection.
  Otherwise the connection is closed, with a `408` if part of a head had arrived. Bodies
  have their own, idle, timeout in `api/limits.py` (`LimitsMiddleware`), where every
  route's body passes.
- a response the client stops reading is cut off after the same number of seconds
  without progress: uvicorn waits for a full send buffer to drain for ever, and the route
  sending it (an open file, a zip being written, a thread) with it. Progress is any byte
  leaving the buffers, so a slow reader is not cut off however long it takes. Except
  that "leaving" is the client's TCP acknowledging it: a reader whose small receive
  buffer is full reopens its window only when the kernel's zero-window probe asks, and
  the probes back off (0.2, 0.4 … 3.2 s), so at ~20 KB/s into 64 KiB the kernel's queue
  (TIOCOUTQ) moves in bursts 5 to 6.5 s apart: a timeout of a few seconds cuts such a
  reader off; the default 60 s does not.
- a route that has begun an answer it cannot finish (a zip whose next file was deleted
  meanwhile) ends it with `cut_off`: the connection is closed at once, without the
  answer's end, so that the client sees its download incomplete, and without uvicorn's
  ERROR line for an app that returned before its answer's end (the route logs its own).
- with `per_address`, one client address may hold that many connections at once: past it
  a new one is answered `503` (`Retry-After`) and closed at once, before it costs more
  than a moment. A timeout bounds how long a stalled connection lives, but a host opening
  them faster than they time out could still fill the table.

`raise_open_files_limit` gives the manager the open-files limit its account may have
(the soft limit up to the hard one): every connection is a file descriptor.

`farmhand node` and `farmhand orchestrator` serve with the same protocol and limit
(`head_timeout_protocol`, answering the 408 in their own style, without a per-address
limit), and time out their bodies with the manager's idle timeout too
(`farmhand.node.limits`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from starlette.types import Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from farmhand.shared.timeouts import CLIENT_TIMEOUT

try:  # Linux: the bytes a socket's kernel buffer still holds for the client
    import fcntl
    import termios

    _KERNEL_UNSENT: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _KERNEL_UNSENT = None

log = structlog.get_logger(__name__)

HEAD_TIMEOUT_VARIABLE = "FARMHAND_MANAGER_HEAD_TIMEOUT"
"""Where `farmhand manager --processes N` leaves its head timeout for the server processes
it starts (`ProcessHeadTimeoutProtocol`)."""
PER_ADDRESS_VARIABLE = "FARMHAND_MANAGER_CONNECTIONS_PER_ADDRESS"
"""Where it leaves its per-address connection limit for them (0: none)."""

HEAD_TIMED_OUT = "the request's headers did not arrive in time"
_TIMED_OUT = json.dumps({"detail": HEAD_TIMED_OUT}).encode()

REFUSED_RETRY_AFTER = 5
"""Seconds a refused client is asked to wait (`Retry-After`) before it connects again."""
REFUSED_LINGER = 1.0
"""How long a refused connection may take to read its `503`: the answer is sent, the
manager's side shut, and what the client sends read and dropped, so that closing does
not reset the connection under an answer not read yet (the client would see a reset,
not the 503). A client that does not close its end in that time is cut off."""


@dataclass
class AddressTable:
    """The connections each client address has open in this server process, and the
    addresses being refused for holding `limit` of them."""

    limit: int
    open: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    """Connections refused per address since it reached the limit (an episode)."""

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False (refuse it) if it holds `limit`."""
        held = self.open.get(address, 0)
        if held < self.limit:
            self.open[address] = held + 1
            return True
        refused = self.refused.get(address, 0)
        if not refused:
            # Once an episode: a host opening hundreds a second must not flood the log.
            log.warning(
                "refusing connections from one address: it holds as many as allowed",
                address=address,
                limit=self.limit,
            )
        self.refused[address] = refused + 1
        return False

    def release(self, address: str) -> None:
        held = self.open.get(address, 0) - 1
        if held > 0:
            self.open[address] = held
        else:
            self.open.pop(address, None)
        # The episode ends once the address holds well under the limit, not at the first
        # connection closed: a host at the limit would otherwise start one with each try.
        if address in self.refused and held <= self.limit // 2:
            log.info(
                "accepting connections from the address again",
                address=address,
                refused=self.refused.pop(address),
                limit=self.limit,
            )


class HeadTimeoutProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, closing a connection whose request head has not
    arrived within `head_timeout` seconds, or whose client stopped reading its response
    for as long, and refusing connections from an address past `per_address` (see the
    module's docstring)."""

    head_timeout: float = CLIENT_TIMEOUT
    timed_out_type: bytes = b"application/json"
    timed_out_body: bytes = _TIMED_OUT
    """The 408's body: the manager's (and the orchestrator's) `{"detail": …}`."""
    per_address: ClassVar[AddressTable | None] = None
    """This server's connections per client address; None: no limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None  # while a head is awaited
        self._reading_head = False
        self._output_timer: asyncio.TimerHandle | None = None  # while output waits
        self._unsent = 0  # what was still to send when `_output_timer` was set
        self._address: str | None = None  # counted in `per_address`
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        table = self._table()
        if table is not None and self.client is not None and not self._behind_proxy():
            address = self.client[0]
            if not table.admit(address):
                self._refuse(table.limit)
                return
            self._address = address
        self._arm()  # a connection that never sends a byte is timed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_watching_output()
        table = self._table()
        if self._address is not None and table is not None:
            table.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read only so that the close does not reset the connection
        super().data_received(data)
        # The first bytes of a head on a kept-alive connection start its clock (uvicorn
        # has just stopped its keep-alive timer). Armed here rather than when the head
        # begins, so that a head arriving in one piece costs no timer at all.
        if self._reading_head and self._head_timer is None:
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None:  # (None: an upgrade, such as a websocket)
            extensions = self.scope.setdefault("extensions", {})
            extensions[_CUT_OFF] = {"close": functools.partial(self._cut_off, self.cycle)}

    def _cut_off(self, cycle: RequestResponseCycle) -> None:
        """`cut_off`. Closed, not aborted: the client gets what was written before the
        connection's end, then the end (a reset could lose some of it); one that has
        stopped reading is cut off as any other (`_watch_output`). Marked lost: uvicorn
        reports an app that returns before its answer's end unless the client left."""
        cycle.disconnected = True
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_output()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_output()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self._end_waits():
            self._stop_watching_output()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._end_waits():
            self._watch_output()

    def _end_waits(self) -> bool:
        """The response is all written but its end still waits in the buffer, below the
        mark that pauses writing: closing the connection (or keeping it alive) waits for
        it, for ever if the client reads no more."""
        return (
            self.cycle is not None
            and self.cycle.response_complete
            and self.transport.get_write_buffer_size() > 0
        )

    def _table(self) -> AddressTable | None:
        return self.per_address

    def _behind_proxy(self) -> bool:
        """The connection comes from a proxy whose X-Forwarded-For is believed
        (`--proxy-headers`): its clients are counted by the proxy, not here."""
        app = self.config.loaded_app
        return (
            self.client is not None
            and isinstance(app, ProxyHeadersMiddleware)
            and self.client[0] in app.trusted_hosts
        )

    def _refuse(self, limit: int) -> None:
        self._refused = True
        body = json.dumps(
            {
                "detail": f"too many connections from your address (this manager allows "
                f"{limit} at once): try again later"
            }
        ).encode()
        head = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"retry-after: %d\r\n" % REFUSED_RETRY_AFTER,
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then its end closes
            # In the head timer's place: `connection_lost` cancels it as it would that.
            self._head_timer = self.loop.call_later(REFUSED_LINGER, self.transport.abort)
        else:  # TLS: the answer and close_notify, in order
            self.transport.close()

    def _arm(self) -> None:
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits behind a response still being sent: the client is
            # not late, the server is; its clock starts again.
            self._arm()
            return
        if self._reading_head:
            head = [b"HTTP/1.1 408 Request Timeout\r\n"]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: %s\r\n" % self.timed_out_type,
                b"content-length: %d\r\n" % len(self.timed_out_body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + self.timed_out_body)
        self.transport.close()

    def _watch_output(self) -> None:
        if self._output_timer is None:
            self._unsent = unsent_bytes(self.transport)
            self._output_timer = self.loop.call_later(self.head_timeout, self._output_checked)

    def _stop_watching_output(self) -> None:
        if self._output_timer is not None:
            self._output_timer.cancel()
            self._output_timer = None

    def _output_checked(self) -> None:
        """`head_timeout` seconds after output began to wait: cut the connection off if
        not one byte of it has reached the client since."""
        self._output_timer = None
        if not self.flow.write_paused and not self.transport.get_write_buffer_size():
            return  # all of it is the kernel's now, which times its own sends out
        unsent = unsent_bytes(self.transport)
        if unsent < self._unsent:  # a slow reader, not a stalled one
            self._watch_output()
            return
        scope = self.cycle.scope if self.cycle is not None else None
        log.info(
            "response cut off: the client stopped reading it",
            method=scope["method"] if scope else None,
            path=scope["path"] if scope else None,
            client=self.client[0] if self.client else None,
            unsent=unsent,
            seconds=self.head_timeout,
        )
        # `abort`: `close` would wait for the buffer to drain, which it never does. The
        # connection's loss ends the route's `send` and tells it the client is gone.
        self.transport.abort()


_CUT_OFF = "farmhand.cut_off"
"""The scope's extension (ASGI: a name and a dict) by which `HeadTimeoutProtocol` gives a
route `cut_off`."""


def cut_off(scope: Scope) -> None:
    """End the answer to `scope`, begun but not finished, by closing its connection at
    once (see the module's docstring); the route returns after. Under another server
    (tests' in-process client) the route only returns, which that server reports."""
    close: Callable[[], None] | None = scope.get("extensions", {}).get(_CUT_OFF, {}).get("close")
    if close is not None:
        close()


def unsent_bytes(transport: asyncio.Transport) -> int:
    """Bytes written for the client that it has not received: in the transport's buffer,
    and where the system says (Linux), in the kernel's too. The kernel's buffer can hold
    megabytes, so that a slow reader's progress may show there long before the
    transport's buffer drains."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _KERNEL_UNSENT is not None and sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), _KERNEL_UNSENT, b"\0\0\0\0")
        except OSError:
            return unsent
        unsent += struct.unpack("i", queued)[0]
    return unsent


def head_timeout_protocol(
    seconds: float, answer: tuple[str, bytes] | None = None, *, per_address: int = 0
) -> type[HeadTimeoutProtocol]:
    """The protocol class of a server in this process whose heads must arrive in
    `seconds` (uvicorn's `http=`); `answer` is the 408's content type and body when the
    server's answers are not the manager's JSON (the node's are plain text);
    `per_address` connections at most from one client address (0: no limit)."""
    attributes: dict[str, object] = {
        "head_timeout": seconds,
        "per_address": AddressTable(per_address) if per_address else None,
    }
    if answer is not None:
        attributes.update(timed_out_type=answer[0].encode("latin-1"), timed_out_body=answer[1])
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), attributes)


class ProcessHeadTimeoutProtocol(HeadTimeoutProtocol):
    """`HeadTimeoutProtocol` in the server processes of `farmhand manager --processes N`:
    uvicorn imports it by name (`--http`), and the parent leaves the timeout in
    `HEAD_TIMEOUT_VARIABLE` and the per-address limit in `PER_ADDRESS_VARIABLE`, as it
    leaves its other settings in the environment. Each process counts the connections it
    accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = _timeout_from_environment()

    def _table(self) -> AddressTable | None:
        return _table_from_environment()


@functools.cache
def _timeout_from_environment() -> float:
    return float(os.environ.get(HEAD_TIMEOUT_VARIABLE) or HeadTimeoutProtocol.head_timeout)


@functools.cache
def _table_from_environment() -> AddressTable | None:
    limit = int(os.environ.get(PER_ADDRESS_VARIABLE) or 0)
    return AddressTable(limit) if limit else None


PROCESS_PROTOCOL = f"{__name__}:{ProcessHeadTimeoutProtocol.__name__}"
"""`ProcessHeadTimeoutProtocol` as uvicorn's `--http` names it."""


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit of open files to its hard limit (its children,
    the server processes, inherit it); the limit now, None where there is none to raise.

    Every connection, stalled or not, is a file descriptor, and so is every file the
    manager opens: a soft limit of 1,024 (a common default) is reached by a thousand
    connections, after which nobody is served. Uvicorn's event loop uses epoll/kqueue,
    which has no limit on descriptor numbers (select's 1,024)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS says "unlimited" and refuses more than its per-process maximum.
    targets = [1 << 20, 65536, 10240] if hard == resource.RLIM_INFINITY else [hard]
    for target in targets:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.info("open files limit raised", limit=target, was=soft)
        return target
    return soft
