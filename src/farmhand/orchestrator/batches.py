"""Splitting a frame range into batches, and the state of one render's batches.

Plain data and functions, no I/O: the dispatcher moves batches between states under one
lock, so `next_batch` and `batch_failed` are where the retry policy lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Batch:
    first: int
    last: int
    state: BatchState = BatchState.PENDING
    node: str | None = None
    failed_on: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.first}-{self.last}"


def split(first: int, last: int, size: int) -> list[Batch]:
    """`first..last` (inclusive) in batches of at most `size` frames, in frame order."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    if last < first:
        raise ValueError(f"'to' ({last}) is before 'from' ({first})")
    return [Batch(start, min(start + size - 1, last)) for start in range(first, last + 1, size)]


def next_batch(batches: list[Batch], node: str, nodes: int) -> Batch | None:
    """The first pending batch `node` may take: one it has not failed, unless every
    node has failed it (then anyone may try again, within the attempt limit)."""
    for batch in batches:
        if batch.state is BatchState.PENDING and (
            node not in batch.failed_on or len(batch.failed_on) >= nodes
        ):
            return batch
    return None


def batch_failed(batch: Batch, node: str, error: str, max_attempts: int) -> None:
    """A node failed the batch: back to pending for another node, or failed for good."""
    batch.failed_on.add(node)
    batch.errors.append(f"{node}: {error}")
    batch.node = None
    batch.state = BatchState.FAILED if len(batch.errors) >= max_attempts else BatchState.PENDING
