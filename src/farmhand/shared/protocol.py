"""Which worker/manager protocol a worker speaks, so that a manager never hands a task to
a worker too old to do it.

A worker and its manager are separate programs, upgraded one machine at a time: a worker
of an older farmhand may keep running across a manager upgrade. Without a word on what
it speaks, the manager handed such a worker tasks it could not do (a tile of a still,
from before tiled stills: it rendered no frames, its completion was refused, the task
came back to it, forever). So a worker says which protocol it speaks
(`WorkerCapabilities.protocol`, at registration and in every heartbeat), and a manager
gives no task to one below `MIN_WORKER_PROTOCOL` (`426 Upgrade Required`, see
`too_old`).

A registration that sends no capabilities at all says nothing of its protocol, so it is
not known to be new enough; it is still stored as speaking the manager's own
`WORKER_PROTOCOL` (`api/runner._declared`). Every farmhand worker has always sent its
capabilities, so such a registration is a script driving the REST API, as JiggaBlend's
runners and the scripts ported from them do (docs/API.md): taken as too old, each of
them would be answered 426 and never get a task. The stored number is the one of the
manager it registered with: should a later manager raise `MIN_WORKER_PROTOCOL`, the
script is listed too old and refused until it registers again.
"""

from __future__ import annotations

from typing import Any

WORKER_PROTOCOL = 1
"""The protocol this farmhand's worker speaks, and its manager's highest.

Raise it when a manager starts handing out work an older worker would do wrong or not
at all: a new task type or task shape (as tiles were: protocol 1), a field of
`TaskAssignment` a worker must act on, a new rule a completion must meet. Raise
`MIN_WORKER_PROTOCOL` with it when older workers must get no task at all (the usual
case); a change that older workers may safely ignore needs neither.

0 is "older than this field": every worker before it (which includes those from before
tiled stills)."""

MIN_WORKER_PROTOCOL = 1
"""The oldest worker protocol this manager hands tasks to."""


def declared_protocol(capabilities: dict[str, Any]) -> int:
    """The protocol stored `capabilities` declare: 0 if they do not say (a worker from
    before the field, or a record stored before it)."""
    protocol = capabilities.get("protocol")
    return protocol if isinstance(protocol, int) else 0


def too_old(capabilities: dict[str, Any]) -> str | None:
    """Why a worker with these capabilities gets no task, or None if it may get one."""
    protocol = declared_protocol(capabilities)
    if protocol >= MIN_WORKER_PROTOCOL:
        return None
    return (
        f"this worker runs an older farmhand (protocol {protocol}) than this manager needs "
        f"({MIN_WORKER_PROTOCOL}): upgrade it"
    )


TOO_OLD_NOTE = "too old: upgrade"
"""What a runners listing says of a worker that `too_old` refuses."""


def status_note(capabilities: dict[str, Any]) -> str | None:
    """What a runners listing adds to a runner's status, or None: its `idle` would
    otherwise claim a worker ready for work that this manager gives no task.

    The manager puts it in each runner's summary (`RunnerInfo.status_note`), and
    `farmhand runners` and the web's runners page show that, so the rule lives here only.
    A worker backing off after a fault of its own machine is not said: it gives the task
    back with a reason (the task's `last_error`), but tells the manager nothing of its
    pause, so the manager cannot know when it takes work again."""
    return TOO_OLD_NOTE if too_old(capabilities) is not None else None
