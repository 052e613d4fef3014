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

from dataclasses import dataclass
from typing import Any

from farmhand.shared.schemas import WorkerStatus

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


@dataclass(frozen=True)
class GaveBack:
    """The last task a runner gave back itself (`POST /api/runner/tasks/{id}/release`)
    with no task handed to it since, as the manager finds it at listing time
    (`api/admin`). `task` names it for a person (`task 3 of job 7`); `worker` is the
    runner's name, which the worker's own reasons start with (`worker w3 cannot work:
    …`)."""

    task: str
    reason: str
    worker: str


NOTE_REASON_CHARS = 120
"""How much of a give-back's reason a status note keeps: it sits beside the status in a
table; the task's `last_error` keeps all of it."""


def gave_back_note(gave_back: GaveBack) -> str:
    """`gave task 3 of job 7 back: cannot work: [Errno 28] No space left on device …`:
    the reason without the runner's name (the row names it), cut at a word."""
    reason = gave_back.reason.strip()
    own = f"worker {gave_back.worker} "
    if reason.startswith(own):
        reason = reason[len(own) :]
    if len(reason) > NOTE_REASON_CHARS:
        cut = reason[:NOTE_REASON_CHARS]
        reason = (cut.rsplit(" ", 1)[0] if " " in cut[NOTE_REASON_CHARS // 2 :] else cut) + " …"
    return f"gave {gave_back.task} back: {reason}"


def status_note(
    capabilities: dict[str, Any], status: WorkerStatus, gave_back: GaveBack | None = None
) -> str | None:
    """What a runners listing adds to a runner's status, or None: its `idle` would
    otherwise claim a worker ready for work that is not.

    The manager puts it in each runner's summary (`RunnerInfo.status_note`), and
    `farmhand runners` and the web's runners page show that, so the rule lives here only.
    A runner too old for this manager gets no task at all: that comes first. Then one
    that gave a task back and has been handed none since (`gave_back`): a worker whose
    machine cannot work (disk full, work dir not writable) gives the task back with the
    reason and takes no task for 30 s to 10 minutes while the fault lasts, and does not
    tell the manager of that pause (no request body says it: an older manager would
    refuse the field). So the note says what happened, not that the worker is paused:
    whether the fault still lasts, only its next task tells. It is said only of an idle
    runner: busy, it has a task; offline, disabled, draining or asleep, its status
    says why it renders nothing. A worker stopping gives its task back too, then signs
    off (offline) and its give-back is forgotten (`api/runner`), so a clean stop shows
    no note; a stopping worker killed before its sign-off shows `gave … back: worker
    shutting down` until it is marked offline, which is what happened."""
    if too_old(capabilities) is not None:
        return TOO_OLD_NOTE
    if gave_back is not None and status is WorkerStatus.IDLE:
        return gave_back_note(gave_back)
    return None
