"""Everything a request handler needs, built once per app and passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from farmhand.manager.auth.runner_cache import RunnerIdCache
from farmhand.manager.db.engine import Database
from farmhand.manager.events import EventBus
from farmhand.manager.file_reads import FileReads
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.scheduling.reaper import ReaperClock
from farmhand.manager.scheduling.wakeup import Wakeup
from farmhand.manager.settings import ManagerSettings
from farmhand.manager.storage.blobs import BlobStore
from farmhand.manager.storage.logs import TaskLogs
from farmhand.manager.storage.reservations import Reservations

UNPACKS_AT_ONCE = 3
"""Projects' zips unpacked into the blob store at a time (`POST /api/projects`)."""
THUMBNAILS_AT_ONCE = 2
"""Thumbnails made at a time: an 8K EXR frame's decode takes 1.4 GiB."""


@dataclass
class ManagerContext:
    settings: ManagerSettings
    db: Database
    blobs: BlobStore
    logs: TaskLogs
    policy: Policy = field(default_factory=Policy)
    wakeup: Wakeup = field(default_factory=Wakeup)
    events: EventBus = field(default_factory=EventBus)
    runner_ids: RunnerIdCache = field(default_factory=RunnerIdCache)
    """Runner secret hash → worker id, for a minute (saves a lookup per request)."""
    reaper_clock: ReaperClock = field(default_factory=ReaperClock)
    """Since when silence counts: this process's start, or its last refusal for a full
    disk (the 507 handler notes each)."""
    file_reads: FileReads = field(default_factory=FileReads)
    """Where reads of users' .blend files run, in turn, off the shared thread pool."""
    unpacks: FileReads = field(
        default_factory=partial(FileReads, UNPACKS_AT_ONCE, doing="unpacking other projects")
    )
    """Where projects' zips are unpacked and stored, in turn, off the shared thread pool."""
    thumbnails: FileReads = field(
        default_factory=partial(FileReads, THUMBNAILS_AT_ONCE, doing="making other thumbnails")
    )
    """Where thumbnails not yet cached are made, in turn, off the shared thread pool; a
    cached one is served without waiting for a turn."""
    zip_reservations: Reservations = field(default_factory=Reservations)
    """Project zips admitted and not yet recorded, held against their senders' quota."""
