"""Which workers may run which work: availability, fit (a farmhand new enough for this
manager, tags, task types, Blender version, device, the job's pinned Blender), blocklist.

Used by the claim (may *this* worker take *this* job?) and by the retry and blocklist
rules (is there *any other* worker that could?), so both ask the same questions; and by
the job views, to say why a job waits when no available worker fits it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Blocklist, Job, Worker
from farmhand.manager.db.prepared import Prepared
from farmhand.shared.blendfile import best_version, cannot_open, oldest_in_range, parse_version
from farmhand.shared.protocol import MIN_WORKER_PROTOCOL, too_old
from farmhand.shared.schemas import WorkerStatus

TOO_OLD_REASON = (
    f"no worker runs a farmhand this manager hands work to (worker protocol "
    f"{MIN_WORKER_PROTOCOL} or newer): the online ones are too old, upgrade them"
)


def available(worker: Worker) -> bool:
    """Online, enabled and awake: the worker may take new work at all."""
    return (
        worker.status != WorkerStatus.OFFLINE.value
        and worker.admin_state == "enabled"
        and not worker.asleep
    )


def task_types(worker: Worker) -> list[str]:
    return _types(worker.capabilities)


def _types(caps: dict[str, Any]) -> list[str]:
    types: list[str] = caps.get("task_types") or ["render"]
    return types


def series(version: str) -> str:
    """`5.0.1` → `5.0`: the granularity of a job's Blender pin.

    A Blender series (major.minor) changes colour management defaults, render engines
    and file versioning; its patch releases only fix bugs. Pinning the exact patch would
    make a job wait for one machine's 4.2.1 while the farm's other 4.2.3s sit idle.
    """
    return ".".join(str(part) for part in parse_version(version)[:2])


def render_series(worker: Worker, job_settings: dict[str, Any], saved: str | None) -> str | None:
    """The Blender series `worker` would render the job's render tasks with, or None when
    it names no Blender (a stand-in) or none of its Blenders fits.

    The worker picks the newest of its Blenders that fits the file and the job's range
    (`best_version`, as `worker/blender/renderer.install_for` does), so this is what
    it *will* use, not merely what it has.
    """
    return _series(worker.capabilities, job_settings, saved)


def _series(caps: dict[str, Any], job_settings: dict[str, Any], saved: str | None) -> str | None:
    versions: list[str] = caps.get("blender_versions") or []
    best = best_version(versions, saved, job_settings.get("blender_version"))
    return series(best) if best is not None else None


def pinned_range(spec: str | None, pinned: str | None) -> str | None:
    """The job's Blender range `spec` narrowed to the series it is `pinned` to.

    This is what the claim checks a worker against and what its assignment names
    (`api/runner._assignment`): a worker picks the newest of its Blenders inside the
    range it is sent (`best_version`), so one with 5.0 and 5.1 sent the job's own range
    would render a job pinned to 5.0 with 5.1; sent this, it renders with its 5.0.
    `==5.0` takes every 5.0.x (a version compares on the parts the range names).
    """
    if not pinned:
        return spec
    return f"{spec},=={pinned}" if spec else f"=={pinned}"


def fits(
    worker: Worker,
    job_settings: dict[str, Any],
    task_type: str,
    saved: str | None = None,
    pinned: str | None = None,
) -> bool:
    """The worker runs this task type, has every tag the job requires, renders on the
    job's device and has a Blender that can open the file (saved by `saved`) — the
    series the job is `pinned` to, if it is."""
    return next(unmet(worker.capabilities, job_settings, task_type, saved, pinned), None) is None


def pinned_reason(pinned: str) -> str:
    return (
        f"the job needs Blender {pinned}, which its first render task used "
        "(every tile and frame of a job renders with one Blender)"
    )


@dataclass(frozen=True)
class Need:
    """One thing a job asks for that a worker does not offer."""

    key: str
    """Which requirement: `protocol` (a worker new enough for this manager), `type`,
    `tag:NAME`, `device` or `blender` (the file's Blender, the job's range or its pin:
    one Blender does all three)."""
    name: str
    """It in a list of things no one worker has together: `tag highmem`, `device OPTIX`."""
    reason: str
    """Why the job waits when no worker meets it: `no worker renders on OPTIX`."""


def unmet(
    caps: dict[str, Any],
    job_settings: dict[str, Any],
    task_type: str,
    saved: str | None = None,
    pinned: str | None = None,
) -> Iterator[Need]:
    """What a worker offering `caps` lacks to run this job's `task_type` tasks, in the
    order it is checked; nothing if it may. A generator: the claim stops at the first.

    A job's render tasks are `pinned` to the Blender series its first one was claimed
    with (`claim.py`): tiles or frames of one job rendered by two Blender versions differ
    visibly (a seam in a still, flicker in an animation). A worker may take them when it
    *can* render with that series — one of its Blenders fits the file, the job's range
    and the pin — whatever else it has: its assignment names the range narrowed to the
    pin (`pinned_range`), so it picks that Blender. Merge and video tasks run no Blender
    and are not pinned. A worker that names no Blender is not checked, as for the
    file's version.
    """
    old = too_old(caps)
    if old is not None:
        # First: whatever else it offers, a worker too old for this manager gets no task
        # (`api/runner._claim_in` refuses its claims), so it must not count as one that
        # could run the job, nor hide why the job waits.
        yield Need("protocol", "an up-to-date farmhand", TOO_OLD_REASON)
    if task_type not in _types(caps):
        yield Need("type", f"the {task_type} task type", f"no worker runs {task_type} tasks")
    have = set(caps.get("tags") or ())
    for tag in sorted(set(job_settings.get("required_tags") or ()) - have):
        yield Need(f"tag:{tag}", f"tag {tag}", f"no worker has the tag {tag}")
    device = job_settings.get("device")
    if device and (caps.get("device") or "CPU") != device:
        yield Need("device", f"device {device}", f"no worker renders on {device}")
    if task_type == "render":
        versions: list[str] = caps.get("blender_versions") or []
        wanted = job_settings.get("blender_version")
        if not versions:
            return
        if pinned and best_version(versions, saved, pinned_range(wanted, pinned)):
            return  # the claim's usual case for a pinned job: one look
        if best_version(versions, saved, wanted) is None:
            said = _blender_wanted(saved, wanted)
            # A job stored before submissions were checked (`cannot_open`) may still ask
            # for a range no Blender that opens its file is in: say that, not what to add.
            never = cannot_open(saved, wanted, "the job's file")
            yield Need(
                "blender", f"Blender {pinned}" if pinned else said, never or f"the job needs {said}"
            )
        elif pinned:
            yield Need("blender", f"Blender {pinned}", pinned_reason(pinned))


def _blender_wanted(saved: str | None, wanted: str | None) -> str:
    """The Blenders that may render a job, in words: `Blender 5.0 or newer` (the file's),
    `a Blender in the range >=4.2,<5`, or `Blender 4.2 or newer in the range <4.4`
    when both narrow it (the file's version is left out when the range implies it)."""
    if wanted and (not saved or oldest_in_range(wanted) == oldest_in_range(wanted, saved)):
        return f"a Blender in the range {wanted}"
    if wanted:
        return f"Blender {saved} or newer in the range {wanted}"
    return f"Blender {saved} or newer" if saved else "another Blender"


_AVAILABLE = (
    Worker.status != WorkerStatus.OFFLINE.value,
    Worker.admin_state == "enabled",
    Worker.asleep.is_(False),
)


def available_workers(session: Session) -> list[Worker]:
    """Every worker that may take new work now (`available`, as one query)."""
    return list(session.scalars(select(Worker).where(*_AVAILABLE)))


def resting_workers(session: Session) -> list[Worker]:
    """Every worker that may not take work now: offline, disabled, draining or asleep
    (for `WaitReasons` to say which of them could run a waiting job)."""
    return list(session.scalars(select(Worker).where(~and_(*_AVAILABLE)).order_by(Worker.name)))


def _resting_as(worker: Worker) -> str:
    """Why a worker takes no work, as a waiting reason says it: what an admin decided
    first, then its sleep schedule, then whether it is reachable."""
    if worker.admin_state != "enabled":
        return worker.admin_state
    return "asleep" if worker.asleep else "offline"


MOST_NAMED = 6
"""A waiting reason names at most this many tags, requirements or versions, then says
how many more: it is one line in a table."""


def _listed(names: list[str], most: int = MOST_NAMED) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _both(names: list[str]) -> str:
    if len(names) == 2:
        return f"both {names[0]} and {names[1]}"
    if len(names) > MOST_NAMED:
        return f"all of {_listed(names)}"
    return f"all of {', '.join(names[:-1])} and {names[-1]}"


def _version_key(version: str) -> list[int]:
    return [int(p) for p in version.split(".") if p.isdigit()]


class WaitReasons:
    """Why jobs with queued tasks wait, for one look at the available `workers`.

    Built once per listing: the workers are grouped by what they offer (a farm of a
    hundred alike machines is one check per job, not a hundred), and jobs asking the
    same of them are answered once.

    A reason names what *no* available worker offers (every such thing: fixing one would
    otherwise reveal the next). When each thing the job asks for is offered by some
    worker but no one worker offers them all, it says that, naming the things that
    split them: "no one worker has both tag highmem and device OPTIX". A file saved by a
    newer Blender than any worker has waits (it would fail on garbage in an older one),
    and so does a job pinned to a Blender series no online worker has any more: the
    reason names what it needs and what the workers have (for a pin, what they would
    render it with).
    """

    def __init__(
        self,
        workers: list[Worker],
        resting: Sequence[Worker] = (),
        barred: dict[tuple[int, str], set[int]] | None = None,
    ) -> None:
        self._resting = [(w.id, f"{w.name} ({_resting_as(w)})", w.capabilities) for w in resting]
        """Workers that may not work now (`resting_workers`): a job that none of the
        others can run says which of these could, and why they don't (`g1 (asleep)`),
        rather than send the admin off to re-tag machines that have the tag. Not one
        blocklisted from the job's tasks of that type (`barred`, by job and type)."""
        self._barred = barred or {}
        offers: dict[tuple[Any, ...], tuple[dict[str, Any], set[int]]] = {}
        for worker in workers:
            caps = worker.capabilities
            offers.setdefault(
                (
                    frozenset(_types(caps)),
                    frozenset(caps.get("tags") or ()),
                    caps.get("device") or "CPU",
                    frozenset(caps.get("blender_versions") or ()),
                    too_old(caps) is None,
                ),
                (caps, set()),
            )[1].add(worker.id)
        self._groups = list(offers.values())
        """What the workers that may work now offer, alike ones together, with their ids."""
        self._offers = [caps for caps, _ in self._groups]
        self._said: dict[tuple[Any, ...], list[str] | None] = {}
        self._could: dict[tuple[Any, ...], list[tuple[int, str]]] = {}

    @classmethod
    def of_farm(cls, session: Session) -> WaitReasons:
        """For the farm's workers as they are now: those that may work, the rest, and
        the blocklist."""
        barred: dict[tuple[int, str], set[int]] = {}
        for job_id, task_type, worker_id in session.execute(
            select(Blocklist.job_id, Blocklist.task_type, Blocklist.worker_id)
        ):
            barred.setdefault((job_id, task_type), set()).add(worker_id)
        return cls(available_workers(session), resting_workers(session), barred)

    def reason(self, job: Job, task_type: str = "render") -> str | None:
        """Why none of the workers takes the job's queued `task_type` tasks, or None."""
        settings = job.settings
        saved, pinned = job.blender_saved, job.blender_pinned
        asked = (
            task_type,
            frozenset(settings.get("required_tags") or ()),
            settings.get("device"),
            settings.get("blender_version"),
            saved,
            pinned,
        )
        if asked not in self._said:
            self._said[asked] = self._reason(settings, task_type, saved, pinned, self._offers)
            self._could[asked] = [
                (worker_id, named)
                for worker_id, named, caps in self._resting
                if next(unmet(caps, settings, task_type, saved, pinned), None) is None
            ]
        said = self._said[asked]
        barred = self._barred.get((job.id, task_type), set())
        if barred and any(ids & barred for _, ids in self._groups):
            # Only the workers not blocklisted from this job's tasks of this type count.
            usable = [caps for caps, ids in self._groups if not ids <= barred]
            said = self._reason(settings, task_type, saved, pinned, usable)
            if said == []:
                said = [f"every worker that may work now is blocklisted from its {task_type} tasks"]
                could = self._resting_could(job, task_type, asked)
                return f"waiting: {'; '.join([*said, *could])}"
        if said is None:
            return None
        could = self._resting_could(job, task_type, asked)
        if not could:
            return f"waiting: {'; '.join(said)}" if said else None
        if not said:
            return f"waiting: no worker may work now; {could[0]}"
        # Not "no worker has the tag gpu" alone, when g1 has it and is asleep.
        return f"waiting: among the workers that may work now, {'; '.join(said)}; {could[0]}"

    def _resting_could(self, job: Job, task_type: str, asked: tuple[Any, ...]) -> list[str]:
        """`g1 (asleep), g2 (disabled) could run it`, of the workers that may not work now
        and are not blocklisted from the job's `task_type` tasks; [] if none could."""
        barred = self._barred.get((job.id, task_type), set())
        could = [named for worker_id, named in self._could[asked] if worker_id not in barred]
        return [f"{_listed(could)} could run it"] if could else []

    def _reason(
        self,
        settings: dict[str, Any],
        task_type: str,
        saved: str | None,
        pinned: str | None,
        offers: list[dict[str, Any]],
    ) -> list[str] | None:
        """What none of `offers` (workers that may work now) offers, in words; None if
        one of them may run the job, [] if there is none."""
        if not offers:
            return []
        lacking: list[list[Need]] = []
        for caps in offers:
            needs = list(unmet(caps, settings, task_type, saved, pinned))
            if not needs:
                return None
            lacking.append(needs)
        missed = [{need.key for need in needs} for needs in lacking]
        nowhere = set.intersection(*missed)
        first: dict[str, Need] = {}
        for needs in lacking:
            for need in needs:
                first.setdefault(need.key, need)
        order = sorted(first, key=lambda key: (_ORDER[key.partition(":")[0]], key))
        if not nowhere:
            return [f"no one worker has {_both([first[key].name for key in order])}"]
        return self._nowhere(nowhere, order, first, lacking, saved, pinned, settings, offers)

    def _nowhere(
        self,
        nowhere: set[str],
        order: list[str],
        first: dict[str, Need],
        lacking: list[list[Need]],
        saved: str | None,
        pinned: str | None,
        settings: dict[str, Any],
        offers: list[dict[str, Any]],
    ) -> list[str]:
        """What no worker that may work now offers, each in words."""
        said = []
        if "protocol" in nowhere:
            said.append(first["protocol"].reason)
        if "type" in nowhere:
            said.append(first["type"].reason)
        tags = [key.partition(":")[2] for key in order if key.startswith("tag:") and key in nowhere]
        if tags:
            said.append(f"no worker has the tag{'s' if len(tags) > 1 else ''} {_listed(tags)}")
        if "device" in nowhere:
            said.append(first["device"].reason)
        if "blender" in nowhere:
            said.append(self._blender(lacking, saved, pinned, settings, offers))
        return said

    def _blender(
        self,
        lacking: list[list[Need]],
        saved: str | None,
        pinned: str | None,
        settings: dict[str, Any],
        offers: list[dict[str, Any]],
    ) -> str:
        """No worker has a Blender for the job: which it needs, and what they have."""
        reasons = {need.reason for needs in lacking for need in needs if need.key == "blender"}
        if pinned and pinned_reason(pinned) in reasons:
            would = {_series(caps, settings, saved) for caps in offers}
            used = sorted((s for s in would if s is not None), key=parse_version)
            return (
                f"{pinned_reason(pinned)}; the online workers would render it with {_listed(used)}"
            )
        have = sorted(
            {v for caps in offers for v in (caps.get("blender_versions") or [])},
            key=_version_key,
        )
        needs = next(iter(reasons))
        return f"{needs}; the online workers have {_listed(have, 12) or 'no Blender'}"


_ORDER = {"protocol": -1, "type": 0, "tag": 1, "device": 2, "blender": 3}
"""The order `unmet` checks in, which reasons keep."""


# The blocklist's rule, read here only: an entry bars one worker from one job's tasks of
# one type (`Blocklist.task_type`), not from the whole job, so a worker blocklisted from
# a job's renders may still assemble its video. The claim asks it per worker (which of
# the jobs' task types is this worker barred from?), the retry and blocklist rules per
# job (who is barred from this type?). `state._maybe_blocklist` writes the entries.

_BARRED_TYPES = Prepared(
    select(Blocklist.job_id, Blocklist.task_type).where(Blocklist.worker_id == bindparam("worker"))
)


def barred_types(connection: Connection, worker_id: int) -> dict[int, set[str]]:
    """The task types of each job that the worker is blocklisted from: one query,
    usually empty (the claim's hot path, hence a prepared statement on the connection)."""
    barred: dict[int, set[str]] = {}
    for job_id, task_type in _BARRED_TYPES.all(connection, {"worker": worker_id}):
        barred.setdefault(job_id, set()).add(task_type)
    return barred


def barred_workers(session: Session, job_id: int, task_type: str) -> set[int]:
    """The workers blocklisted from the job's `task_type` tasks."""
    return set(
        session.scalars(
            select(Blocklist.worker_id).where(
                Blocklist.job_id == job_id, Blocklist.task_type == task_type
            )
        )
    )


def eligible_workers(
    session: Session, job: Job, task_type: str, exclude: Collection[int] = ()
) -> list[Worker]:
    """Available workers that fit the job (its Blender pin included) and are not
    blocklisted from it."""
    blocked = barred_workers(session, job.id, task_type)
    return [
        worker
        for worker in available_workers(session)
        if worker.id not in blocked
        and worker.id not in exclude
        and fits(worker, job.settings, task_type, job.blender_saved, job.blender_pinned)
    ]
