"""Uploading a job's files: each byte once, in parallel, resuming what was cut off.

The manifest (relative path → SHA-256) is hashed locally first; the manager says which
hashes it lacks (`POST /api/blobs/missing`) and only those are sent, a few at a time, as
resumable uploads (`/api/uploads`). A transfer that breaks (manager restart, network)
is retried under the client's one retry policy and continues from the offset the
manager reports, so what arrived is never sent again; a client that is killed and run
again finds its uploads by (user, hash) and does the same.

An upload that stops (Ctrl-C, or a file that fails) stops at once: work not started is
dropped, the threads see an abort flag between chunks and retries, and the client's
connections are cut so a thread blocked writing to a stalled manager is not waited for.
Running it again resumes it as above.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from farmhand.client.client import FarmhandClient
from farmhand.client.errors import FarmhandError
from farmhand.client.retry import OutageLog, RetryPolicy, call_with_retry
from farmhand.shared.hashing import sha256_file

DEFAULT_THREADS = 4
RESUMABLE_FROM = 8 * 1024 * 1024
"""Files this large go as resumable uploads (two requests and a session); smaller ones in
one `PUT /api/blobs/{sha256}` (verified the same way), since resending them costs less
than the extra round trip on the thousands of small files of a real project."""
UPLOAD_RETRY = RetryPolicy(give_up_after=120.0)
"""How long an upload keeps trying while the manager does not answer (a restart), and
`farmhand submit`'s first question to it (`jobs_cmd.reach_manager`) too."""
MISSING_BATCH = 10_000
"""Hashes per `missing` request (the manager takes up to 100 000)."""

Advance = Callable[[int, int], None]
"""Called with (bytes, files) just sent; from several threads at once."""


class UploadAborted(Exception):
    """The upload was stopped (Ctrl-C in the caller, another file failing)."""


@dataclass(frozen=True)
class Entry:
    """One file of the job's tree: where its bytes are, their hash and size."""

    path: Path
    sha256: str
    size: int


@dataclass
class UploadReport:
    files: int
    bytes_total: int
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    bytes_sent: int = 0
    """Bytes this client put on the wire (a resumed upload counts only what it resent)."""

    @property
    def skipped_files(self) -> int:
        return self.files - self.uploaded_files


def hash_files(
    files: Mapping[str, Path], on_file: Callable[[int], None] | None = None
) -> dict[str, Entry]:
    """Hash every file of the tree (reading each in chunks); `on_file(size)` after each."""
    entries = {}
    for relative, path in files.items():
        size = path.stat().st_size
        entries[relative] = Entry(path, sha256_file(path), size)
        if on_file is not None:
            on_file(size)
    return entries


def _unique(entries: Iterable[Entry]) -> dict[str, Entry]:
    """One entry per hash: a file used twice in the tree is sent once."""
    return {entry.sha256: entry for entry in entries}


def missing(client: FarmhandClient, hashes: list[str]) -> set[str]:
    lacking: set[str] = set()
    for start in range(0, len(hashes), MISSING_BATCH):
        lacking.update(client.missing_blobs(hashes[start : start + MISSING_BATCH]))
    return lacking


class Uploader:
    """Sends the blobs of a manifest the manager lacks, `threads` at a time."""

    def __init__(
        self,
        client: FarmhandClient,
        threads: int = DEFAULT_THREADS,
        policy: RetryPolicy | None = None,
        advance: Advance | None = None,
        resumable_from: int = RESUMABLE_FROM,
    ) -> None:
        self.client = client
        self.resumable_from = resumable_from
        self.threads = max(1, threads)
        self.policy = policy or UPLOAD_RETRY
        self.advance = advance
        self._lock = threading.Lock()
        self.outage = OutageLog()
        self.begun: dict[str, int] = {}
        """The blobs whose upload sent (or was about to send) its first request, by hash,
        with their sizes: what a canceled submit frees again (`submission.py`). The
        manager may keep what one sent even if its answer never arrived."""
        """Shared by every file's retries: a manager gone mid-upload is one outage, said
        once (and told its watchers once), not once for each file being sent."""

    def plan(self, entries: Mapping[str, Entry]) -> list[Entry]:
        """The distinct blobs of `entries` the manager does not hold. Asked under the
        upload's retry policy, as the uploads are: the manager marks the blobs it holds
        as just named (a write), which a locked database answers with a `503` and
        `Retry-After` a busy timeout later, and a submit used to stop there."""
        unique = _unique(entries.values())
        hashes = list(unique)
        lacking = call_with_retry(
            lambda: missing(self.client, hashes),
            "ask which files are missing",
            self.policy,
            outage=self.outage,
        )
        return [entry for sha, entry in unique.items() if sha in lacking]

    def upload(self, entries: Mapping[str, Entry]) -> UploadReport:
        unique = _unique(entries.values())
        report = UploadReport(len(unique), sum(e.size for e in unique.values()))
        todo = self.plan(entries)
        if self.advance is not None:
            already = [e for e in unique.values() if e not in todo]
            self.advance(sum(e.size for e in already), len(already))
        if not todo:
            return report
        abort = threading.Event()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="upload")
        try:
            for entry in pool.map(lambda e: self._one(e, report, abort), todo):
                with self._lock:
                    report.uploaded_files += 1
                    report.uploaded_bytes += entry.size
                if self.advance is not None:
                    self.advance(0, 1)
        except BaseException:
            # Ctrl-C (or a file that failed): leaving `with ThreadPoolExecutor` would wait
            # for a thread blocked writing to a stalled manager, for minutes.
            with self._lock:  # from now on no upload begins (`_begin`)
                abort.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self.client.interrupt()
            raise
        pool.shutdown()
        return report

    def _begin(self, entry: Entry, abort: threading.Event) -> None:
        """Note the upload in `begun` before its first request, unless the uploads were
        stopped: under the lock `upload` stops them with, so that no thread still running
        after a cancel begins one that the cancel would not know to free."""
        with self._lock:
            if abort.is_set():
                raise UploadAborted(entry.path.name)
            self.begun[entry.sha256] = entry.size

    def _one(self, entry: Entry, report: UploadReport, abort: threading.Event) -> Entry:
        """Upload one blob to the end, resuming from the manager's offset after a break;
        `UploadAborted` (or `RetryAborted`) soon after `abort` is set."""

        def check() -> None:
            if abort.is_set():
                raise UploadAborted(entry.path.name)

        shown = 0
        """Bytes of this file counted in the progress: what was read for sending, less
        what a break lost. An attempt restarts the count where the manager's copy ends
        (0 for a file sent whole), so a resumed upload counts no byte twice: it used to
        end at 103% after a manager restart."""

        def show(size: int) -> None:
            nonlocal shown
            shown += size
            if self.advance is not None and size != 0:
                self.advance(size, 0)

        def sent(size: int) -> None:
            with self._lock:
                report.bytes_sent += size
            show(size)
            check()  # after each chunk: raised into the request, which stops sending

        def whole(entry: Entry) -> None:
            last = 0

            def delta(done: int, total: int) -> None:
                nonlocal last
                sent(done - last)
                last = done

            self.client.upload_blob(entry.path, entry.sha256, delta)

        def attempt() -> None:
            self._begin(entry, abort)
            if entry.size < self.resumable_from:
                show(-shown)  # sent again from its first byte
                whole(entry)
                return
            status = self.client.start_upload(entry.sha256, entry.size)
            while True:
                # From where the manager's copy ends (an earlier run or attempt): bytes
                # read for a request that broke, but never stored, are taken back.
                show(status.offset - shown)
                if status.complete:
                    return
                check()
                try:
                    status = self.client.send_upload(status.id, entry.path, status.offset, sent)
                except FarmhandError as error:
                    if error.status_code != 409:  # 409: another sender moved the offset
                        raise
                    self._begin(entry, abort)
                    status = self.client.start_upload(entry.sha256, entry.size)

        call_with_retry(
            attempt, f"upload {entry.path.name}", self.policy, abort, outage=self.outage
        )
        return entry
