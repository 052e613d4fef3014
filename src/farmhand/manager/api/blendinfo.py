"""`POST /api/blend-info`: read a .blend's scene settings to pre-fill the submit form.

The manager runs Blender once on the uploaded file with the driver's `open` command
(scripts in the file never run: `-Y` / `use_scripts=False`) and answers the `opened`
event's scene facts. The upload is kept as a blob, so the form then creates the job
from its hash without sending the file again.

Which Blender: every one discovery finds (`find_blender`: FARMHAND_BLENDER, PATH, then
also the bpy module), newest first, falling back to an older one if the newest cannot
open the file. Newest first because a .blend saved by a newer Blender does not open in
an older one, while the reverse works. No Blender at all → 503 and the form keeps its
defaults. Blender runs on `context.file_reads` (`manager/file_reads.py`): a few at once,
since each costs hundreds of MB, and those waiting hold no thread the other requests
need.

The answer names two Blenders: the one that read the file here (`blender_version`) and
the one that saved it (`saved_with`, from the file's header: the same reader as at job
submit). With `farm_blenders` (the reader and the enabled workers' Blenders) the form can
warn about a file saved by a newer Blender than any of them: its job would wait.

The form is read by the route (`form_file.py`), not by FastAPI before it, so an upload
the sender's quota cannot take is refused before it is received: before a byte of the
body when its declared length says so, else at the first bytes that pass what the
sender may store (a chunked body); nothing of it is stored. One user's uploads here take
turns, among all the manager's processes (`_turn_of`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import AbstractAsyncContextManager
from functools import cache, partial
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Caller, Context, UserDep
from farmhand.manager.api.form_file import FORM_FILE_BODY, FormFile
from farmhand.manager.api.limits import (
    QuotaExceeded,
    declared_length,
    enforce_quota,
    refuse_hopeless_upload,
    within_allowance,
)
from farmhand.manager.api.uploads import (
    KeptUpload,
    checked_name,
    receive_body,
    receiving,
    record_blob,
)
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Worker
from farmhand.manager.file_reads import RETRY_AFTER_SECONDS, FileReadsBusy
from farmhand.manager.storage.access import readable
from farmhand.manager.storage.blobs import CHUNK, StoredBlob
from farmhand.manager.storage.turns import turn
from farmhand.shared.blendfile import (
    HEADER_BYTES,
    looks_like_blend,
    parse_version,
    saved_version_of,
)
from farmhand.shared.images import rendered_format
from farmhand.shared.schemas import ErrorResponse
from farmhand.shared.web_schemas import BlendInfo
from farmhand.worker.blender.discovery import BlenderInstall, BlenderNotFound, find_blender
from farmhand.worker.blender.orphans import run_briefly
from farmhand.worker.blender.process import blender_command

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api", tags=["jobs"])

MARK = "@@farmhand@@"
SAVED_WITH = "saved_with"
"""The key `read_scene` adds to Blender's facts: the version in the file's header."""
OPEN_TIMEOUT = 120.0
FACTS_CACHE_SIZE = 256
BLOB_HEADER = "X-Blob-Sha256"
"""Set on the 503 answer too, and on a 422 for a file saved by a newer Blender than the
manager's: the file was stored, a job can still use it. A 422 for anything else keeps
nothing (the file is no .blend a job could render), so it costs no quota."""

TURNS_DIR = Path("run", "turns", "blend-info")
"""Where each user's lock file for their turn here lives, under the data dir (`_turn_of`)."""

_facts_cache: dict[str, tuple[str, dict[str, Any]]] = {}


class SceneReadError(RuntimeError):
    """Blender ran but could not open the file; the message is Blender's."""


def _version_key(install: BlenderInstall) -> tuple[int, ...]:
    return tuple(int(part) for part in install.version.split(".") if part.isdigit())


@cache
def _module_install() -> BlenderInstall | None:
    try:
        return find_blender("bpy")
    except BlenderNotFound:
        return None


def blenders() -> list[BlenderInstall]:
    """Every Blender the manager can use, newest first; [] when there is none."""
    found: list[BlenderInstall] = []
    with contextlib.suppress(BlenderNotFound):
        found.append(find_blender())
    module = _module_install()
    if module is not None and all(install.kind != "module" for install in found):
        found.append(module)
    return sorted(found, key=_version_key, reverse=True)


def open_with(install: BlenderInstall, blend: Path) -> dict[str, Any]:
    """The driver's scene facts for `blend`, from one short-lived Blender."""
    commands = [{"cmd": "open", "blend": str(blend)}, {"cmd": "quit"}]
    stdin = "".join(json.dumps(command) + "\n" for command in commands)
    try:
        result = run_briefly(
            blender_command(install),
            input=stdin.encode(),
            timeout=OPEN_TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired as error:
        raise SceneReadError(f"Blender took more than {OPEN_TIMEOUT:.0f} s to open it") from error
    except OSError as error:
        raise SceneReadError(f"cannot start Blender: {error}") from error
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line.startswith(MARK):
            continue
        try:
            event = json.loads(line[len(MARK) :])
        except json.JSONDecodeError:
            continue
        if event.get("event") == "opened":
            return dict(event)
        if event.get("event") == "error":
            raise SceneReadError(str(event.get("message") or "Blender could not open the file"))
    said = (result.stderr or result.stdout).decode("utf-8", "replace")
    tail = said.strip().splitlines()[-3:]
    raise SceneReadError("Blender did not open the file: " + (" | ".join(tail) or "no output"))


def read_scene(path: Path, name: str, sha256: str) -> tuple[str, dict[str, Any]]:
    """(Blender version, scene facts) of a stored .blend; cached by content hash. Run it
    on `context.file_reads`, which bounds how many run at once.

    The facts are Blender's, plus `SAVED_WITH`: the version in the file's header.
    """
    cached = _facts_cache.get(sha256)
    if cached is not None:
        return cached
    installs = blenders()
    if not installs:
        raise BlenderNotFound("no Blender is installed on the manager")
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="farmhand-blendinfo-") as tmp:
        # Blender wants a name ending in .blend, and may write beside the file.
        blend = Path(tmp) / name
        try:
            os.link(path, blend)
        except OSError:
            shutil.copyfile(path, blend)
        for install in installs:
            try:
                facts = open_with(install, blend)
            except SceneReadError as error:
                errors.append(f"Blender {install.version}: {error}")
                continue
            facts[SAVED_WITH] = saved_version_of(path)
            if len(_facts_cache) >= FACTS_CACHE_SIZE:
                _facts_cache.pop(next(iter(_facts_cache)))
            _facts_cache[sha256] = (install.version, facts)
            return install.version, facts
    raise SceneReadError("; ".join(errors))


def farm_blenders(context: ManagerContext, reader: str) -> list[str]:
    """The Blender that read the file and those of every enabled worker, oldest first.

    Offline and sleeping workers count: they come back. Disabled ones do not. (Not
    `blenders()`: that asks each Blender its version, a process per request.)
    """
    with context.db.read() as session:
        capabilities = session.scalars(
            select(Worker.capabilities).where(Worker.admin_state == "enabled")
        ).all()
    versions = {reader}
    for capability in capabilities:
        found = (capability or {}).get("blender_versions") or []
        versions.update(v for v in found if isinstance(v, str))
    return sorted(versions, key=_sort_key)


def _sort_key(version: str) -> tuple[int, ...]:
    try:
        return parse_version(version)
    except ValueError:
        return ()


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@router.post(
    "/blend-info",
    response_model=BlendInfo,
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        413: {
            "model": ErrorResponse,
            "description": "Over the caller's storage quota, or the manager's upload limit.",
        },
        422: {"model": ErrorResponse, "description": "Blender could not open the file."},
        503: {"model": ErrorResponse, "description": "No Blender on the manager."},
    },
    summary="Upload a .blend and read its scene settings (frame range, resolution, …)",
    openapi_extra=FORM_FILE_BODY,
)
async def blend_info(request: Request, context: Context, caller: UserDep) -> BlendInfo:
    """The form's file is read here (`form_file.FormFile`), not by FastAPI before the
    route, so a refused upload is refused before it is received: by its declared length
    before a byte of the body is read, and as it streams in at the first byte that
    takes it past what the caller may store (`limits.upload_allowance`); nothing of it
    is kept."""
    await run_in_threadpool(refuse_hopeless_upload, context, caller, declared_length(request.scope))
    async with receiving(request, user=caller.name) as body:
        form = FormFile(body.headers.get("content-type", ""), body.stream())
        name = checked_name(await form.filename(), ".blend")
        if not looks_like_blend(await form.peek(HEADER_BYTES)):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"{name!r} is not a .blend file (its first bytes say otherwise)",
            )
        async with _turn_of(context, caller.user_id):
            return await _stored_and_read(context, caller, form, name)


def _turn_of(context: ManagerContext, user_id: int) -> AbstractAsyncContextManager[None]:
    """One user's uploads here go one at a time. They share the user's claim to a file
    (the same .blend sent twice at once: a double click): one refused for the quota
    undid that claim, and with it the blob the other was reading (a 500, or a record
    whose file was gone, still counted against the quota). The page sends one file at a
    time, so a person never waits for this.

    One at a time among all the manager's processes (`--processes N`), which share the
    blob store and the database, and two of one user's requests can reach two of them:
    an `asyncio.Lock` alone (as this was) left those two side by side. The turn is an
    `flock` on the user's lock file in the data dir, waited for in a worker thread so
    the event loop never blocks, behind the in-process lock so that one process's
    waiting requests hold no threads (`storage/turns.py`)."""
    return turn(context.settings.data_dir / TURNS_DIR / f"{user_id}.lock")


async def _stored_and_read(
    context: ManagerContext, caller: Caller, form: FormFile, name: str
) -> BlendInfo:
    chunks = within_allowance(context, caller, form.chunks())
    stored = await receive_body(context, chunks, check=partial(_admit, context, caller))
    kept = await run_in_threadpool(_keep, context, caller, stored)
    blob_header = {BLOB_HEADER: stored.sha256}
    try:
        version, facts = await context.file_reads.run(
            partial(read_scene, _blob_path(context, stored.sha256), name, stored.sha256)
        )
    except (BlenderNotFound, FileReadsBusy) as error:
        busy = isinstance(error, FileReadsBusy)  # asking again later may then work
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"cannot read the file's settings: {error}; fill in the form by hand",
            headers={**blob_header, **({"Retry-After": str(RETRY_AFTER_SECONDS)} if busy else {})},
        ) from error
    except SceneReadError as error:
        log.info("blend-info could not open a file", file=name, error=str(error))
        saved = await run_in_threadpool(saved_version_of, _blob_path(context, stored.sha256))
        newer = saved is not None and await run_in_threadpool(_newer_than_readers, saved)
        if not newer:  # not a .blend any Blender here reads: nothing a job could use
            await run_in_threadpool(kept.undo)
        raise HTTPException(
            422,  # Unprocessable Content: Starlette's name for it changed between versions
            f"Blender could not open {name!r}: {error}"
            + (f" (the file was saved with Blender {saved})" if saved else ""),
            headers=blob_header if newer else None,
        ) from error
    farm = await run_in_threadpool(farm_blenders, context, version)
    return blend_info_model(stored.sha256, name, stored.size, version, facts, farm)


def _admit(context: ManagerContext, caller: Caller, received: Path) -> None:
    """413 (`QuotaExceeded`) before the received file is placed in the store if it would
    pass the caller's quota (`enforce_quota`, the one home of the rule): by its size,
    and if that is too much, by its hash, since a file the caller holds already (the
    same .blend chosen again in the form) costs nothing more. The blob store's `check`:
    it runs on the whole file, still in the store's temporary area, which a refusal
    removes."""
    try:
        enforce_quota(context, caller, (), received.stat().st_size)
    except QuotaExceeded:
        digest = hashlib.sha256()
        with received.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        with context.db.read() as session:
            held = readable(session, caller.user_id, [sha], admin=caller.is_admin)
        if sha not in held:
            raise
        enforce_quota(context, caller, held)


def _keep(context: ManagerContext, caller: Caller, stored: StoredBlob) -> KeptUpload:
    """Record the stored upload as the caller's (the page submits a job naming its hash
    next, also after a 503 or a 422 for a newer Blender's file), then ask the quota
    again, now with the blob counted as the caller's: an upload refused here is
    undone at once."""
    kept = KeptUpload(context, caller.user_id, stored.sha256, record_blob(context, stored))
    kept.claim(stored)
    try:
        enforce_quota(context, caller, [stored.sha256])
    except QuotaExceeded:
        kept.undo()
        raise
    return kept


def _newer_than_readers(saved: str) -> bool:
    """Whether a file saved with Blender `saved` is newer than every Blender here: then
    a worker's newer Blender may still render it, and the form may submit it."""
    try:
        version = parse_version(saved)
    except ValueError:
        return False
    return all(version > _sort_key(install.version) for install in blenders())


def blend_info_model(
    sha256: str,
    name: str,
    size: int,
    version: str,
    facts: dict[str, Any],
    farm: list[str],
) -> BlendInfo:
    """The answer for a .blend whose scene facts `read_scene` reported; `farm` is
    `farm_blenders`."""
    saved = facts.get(SAVED_WITH)
    return BlendInfo(
        sha256=sha256,
        file_name=name,
        size=size,
        blender_version=version,
        saved_with=saved if isinstance(saved, str) else None,
        farm_blenders=farm,
        scene=str(facts.get("scene", "")),
        frame_start=_int(facts.get("frame_start"), 1),
        frame_end=_int(facts.get("frame_end"), 1),
        frame_step=max(1, _int(facts.get("frame_step"), 1)),
        resolution_x=_int(facts.get("resolution_x"), 1920),
        resolution_y=_int(facts.get("resolution_y"), 1080),
        resolution_percentage=_int(facts.get("resolution_percentage"), 100),
        engine=str(facts.get("engine", "")),
        samples=facts["samples"] if isinstance(facts.get("samples"), int) else None,
        output_format=str(facts.get("output_format", "")),
        rendered_format=rendered_format(str(facts.get("output_format", ""))),
        fps=_scene_fps(facts),
        has_camera=bool(facts.get("has_camera", True)),
    )


def _scene_fps(facts: dict[str, Any]) -> float | None:
    """The scene's frame rate as Blender plays it: `fps / fps_base` (30 / 1.001 is NTSC's
    29.97), not the whole number alone; None if Blender did not say."""
    fps, base = facts.get("fps"), facts.get("fps_base", 1.0)
    if not isinstance(fps, int) or isinstance(fps, bool) or fps <= 0:
        return None
    if not isinstance(base, int | float) or isinstance(base, bool) or base <= 0:
        base = 1.0
    return round(fps / float(base), 3)


def _blob_path(context: ManagerContext, sha256: str) -> Path:
    return context.blobs.path_for(sha256)
