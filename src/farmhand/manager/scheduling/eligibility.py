"""Which workers may run which work: availability, fit (tags, task types, Blender
version, device, the job's pinned Blender), blocklist.

Used by the claim (may *this* worker take *this* job?) and by the retry and blocklist
rules (is there *any other* worker that could?), so both ask the same questions; and by
the job views, to say why a job waits when no available worker fits it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from farmhand.manager.db.models import Blocklist, Job, Worker
from farmhand.shared.blendfile import best_version, parse_version
from farmhand.shared.schemas import WorkerStatus


def available(worker: Worker) -> bool:
    """Online, enabled and awake: the worker may take new work at all."""
    return (
        worker.status != WorkerStatus.OFFLINE.value
        and worker.admin_state == "enabled"
        and not worker.asleep
    )


def task_types(worker: Worker) -> list[str]:
    types: list[str] = worker.capabilities.get("task_types") or ["render"]
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
    versions: list[str] = worker.capabilities.get("blender_versions") or []
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
    return unfit_reason(worker, job_settings, task_type, saved, pinned) is None


def pinned_reason(pinned: str) -> str:
    return (
        f"the job needs Blender {pinned}, which its first render task used "
        "(every tile and frame of a job renders with one Blender)"
    )


def unfit_reason(
    worker: Worker,
    job_settings: dict[str, Any],
    task_type: str,
    saved: str | None = None,
    pinned: str | None = None,
) -> str | None:
    """Why `worker` may not run this job's `task_type` tasks, or None if it may.

    A job's render tasks are `pinned` to the Blender series its first one was claimed
    with (`claim.py`): tiles or frames of one job rendered by two Blender versions differ
    visibly (a seam in a still, flicker in an animation). A worker may take them when it
    *can* render with that series — one of its Blenders fits the file, the job's range
    and the pin — whatever else it has: its assignment names the range narrowed to the
    pin (`pinned_range`), so it picks that Blender. Merge and video tasks run no Blender
    and are not pinned. A worker that names no Blender is not checked, as for the
    file's version.
    """
    caps = worker.capabilities
    if task_type not in task_types(worker):
        return f"no worker runs {task_type} tasks"
    missing = set(job_settings.get("required_tags") or ()) - set(caps.get("tags") or ())
    if missing:
        return f"no worker has the tags {', '.join(sorted(missing))}"
    device = job_settings.get("device")
    if device and (caps.get("device") or "CPU") != device:
        return f"no worker renders on {device}"
    if task_type == "render":
        versions: list[str] = caps.get("blender_versions") or []
        wanted = job_settings.get("blender_version")
        if not versions:
            return None
        if pinned and best_version(versions, saved, pinned_range(wanted, pinned)):
            return None  # the claim's usual case for a pinned job: one look
        if best_version(versions, saved, wanted) is None:
            need = [f"Blender {saved} or newer"] if saved else []
            need += [f"Blender {wanted}"] if wanted else []
            return f"the job needs {' in '.join(need) if need else 'another Blender'}"
        if pinned:
            return pinned_reason(pinned)
    return None


def available_workers(session: Session) -> list[Worker]:
    """Every worker that may take new work now (`available`, as one query)."""
    return list(
        session.scalars(
            select(Worker).where(
                Worker.status != WorkerStatus.OFFLINE.value,
                Worker.admin_state == "enabled",
                Worker.asleep.is_(False),
            )
        )
    )


def wait_reason(job: Job, workers: list[Worker], task_type: str = "render") -> str | None:
    """Why none of the available `workers` takes the job's queued tasks, or None.

    A file saved by a newer Blender than any worker has waits (it would fail on garbage
    in an older one), and so does a job pinned to a Blender series no online worker
    has any more: this names what it needs and what the workers have (for a pin, what
    they would render it with).
    """
    if not workers:
        return None
    pinned = job.blender_pinned
    reasons = [unfit_reason(w, job.settings, task_type, job.blender_saved, pinned) for w in workers]
    if any(reason is None for reason in reasons):
        return None
    first = next(reason for reason in reasons if reason is not None)
    if pinned and first == pinned_reason(pinned):
        would = {render_series(w, job.settings, job.blender_saved) for w in workers}
        used = sorted((s for s in would if s is not None), key=parse_version)
        return f"waiting: {first}; the online workers would render it with {', '.join(used)}"
    have = sorted(
        {v for w in workers for v in (w.capabilities.get("blender_versions") or [])},
        key=lambda v: [int(p) for p in v.split(".") if p.isdigit()],
    )
    if first.startswith("the job needs"):
        first += f"; the online workers have {', '.join(have) or 'no Blender'}"
    return f"waiting: {first}"


def eligible_workers(
    session: Session, job: Job, task_type: str, exclude: Collection[int] = ()
) -> list[Worker]:
    """Available workers that fit the job (its Blender pin included) and are not
    blocklisted from it."""
    blocked = set(
        session.scalars(
            select(Blocklist.worker_id).where(
                Blocklist.job_id == job.id, Blocklist.task_type == task_type
            )
        )
    )
    return [
        worker
        for worker in available_workers(session)
        if worker.id not in blocked
        and worker.id not in exclude
        and fits(worker, job.settings, task_type, job.blender_saved, job.blender_pinned)
    ]
