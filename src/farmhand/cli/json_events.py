"""`farmhand submit --json-events`: the submit's progress as one JSON object per line.

For programs rather than people: the Blender add-on runs the CLI and shows this in its
panel. The events come from the same `SubmitHooks` that drive the Rich bars, so both
see one submit flow. Upload and hashing events are thinned to a few a second: a
multi-gigabyte upload calls its hook for every chunk, and the reader only needs a
percentage.

Events: `packing`; `packed` {files, bytes, missing}; `hashing` {done, total};
`upload` {done, total, files_done, files_total}; then exactly one of `submitted`
{job_id, status, url, page, files, uploaded_files, skipped_files, bytes_sent} or
`error` {message}. At any time before the outcome, `retrying` {message, error,
retry_every} when the manager stops answering (or answers with an error worth a retry)
and `reconnected` {after} when it answers again (`outages`): the add-on read the CLI's
retry notices on stderr only once it had exited, so a manager that was down looked like
an upload stalled at 0% for two minutes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TextIO

from farmhand.client.errors import unreachable_words
from farmhand.client.packing import PackedProject
from farmhand.client.retry import Outage, watching_outages
from farmhand.client.submission import SubmitHooks

MIN_INTERVAL = 0.2
"""Seconds between two progress events of one kind (the last one always goes out)."""


class JsonEvents:
    """Writes events to `out` (stdout), flushed at once so a reader sees them live."""

    def __init__(
        self,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = MIN_INTERVAL,
    ) -> None:
        self.out = out or sys.stdout
        self.clock = clock
        self.interval = interval
        self._last: dict[str, float] = {}
        self.finished = False
        # Uploads report from several threads: one whole line at a time, counts kept exact.
        self._lock = threading.RLock()

    def emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.out.write(json.dumps({"event": event, **fields}) + "\n")
            self.out.flush()
            if event in ("submitted", "error"):
                self.finished = True

    def _progress(self, event: str, done: int, total: int, **fields: Any) -> None:
        """A progress event, unless one went out less than `interval` ago (and not done)."""
        now = self.clock()
        last = self._last.get(event)
        if done < total and last is not None and now - last < self.interval:
            return
        self._last[event] = now
        self.emit(event, done=done, total=total, **fields)

    def hooks(self) -> SubmitHooks:
        """The submit's progress callbacks, reporting here instead of to Rich bars."""
        hashing = [0, 0]  # done, total bytes
        upload = [0, 0, 0, 0]  # done, total bytes; done, total files

        def packed(tree: PackedProject) -> None:
            hashing[1] = tree.size
            missing = [str(path) for path in tree.missing]
            self.emit("packed", files=len(tree.files), bytes=tree.size, missing=missing)

        def hashed(size: int) -> None:
            with self._lock:
                hashing[0] += size
                self._progress("hashing", hashing[0], hashing[1])

        def uploading(size: int, files: int) -> None:
            upload[1], upload[3] = size, files
            self._progress("upload", 0, size, files_done=0, files_total=files)

        def advance(size: int, files: int) -> None:
            with self._lock:
                upload[0] += size
                upload[2] += files
                counts = {"files_done": upload[2], "files_total": upload[3]}
                self._progress("upload", upload[0], upload[1], **counts)

        return SubmitHooks(packed=packed, hashed=hashed, uploading=uploading, advance=advance)

    def outages(self, url: str) -> AbstractContextManager[None]:
        """While the block runs, each outage of the manager at `url` as it begins
        (`retrying`, its words saying why: `unreachable_words`) and ends
        (`reconnected`), from whichever call saw it: the submit's first question, or
        any file's upload."""

        def told(news: Outage) -> None:
            if self.finished:
                return
            if news.error is None:
                self.emit("reconnected", after=news.down)
                return
            words = unreachable_words(news.error, url)
            self.emit(
                "retrying",
                message=f"{words}; retrying",
                error=str(news.error),
                retry_every=news.retry_every,
            )

        return watching_outages(told)


@contextmanager
def errors_as_events(events: JsonEvents | None) -> Iterator[None]:
    """End the stream with an `error` event whatever stops the submit, so a reader never
    waits on an outcome: a refusal keeps its one-line message, a bug its exception."""
    if events is None:
        yield
        return
    try:
        yield
    except Exception as exc:
        if not events.finished:
            message = getattr(exc, "message", None)
            events.emit("error", message=message or f"{type(exc).__name__}: {exc}")
        raise
