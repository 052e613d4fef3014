"""`GET /api/jobs/{id}/files/{file_id}/thumbnail`: a small JPEG of one frame.

Thumbnails are made with Pillow (fitted into 256 by 256) the first time they are asked
for and kept in `<data-dir>/thumbnails/`, named after the frame's SHA-256: content
never changes under a hash, so the cache never goes stale and identical frames share
one file. EXR frames (which Pillow cannot read) and unreadable files get a labelled
placeholder tile instead, never an error, so one odd frame does not break the grid.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, UserDep
from farmhand.manager.db.models import Job, JobFile
from farmhand.shared.schemas import ErrorResponse

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

SIZE = 256
BACKGROUND = (40, 44, 52)
VERSION = "v1"
"""Part of the cache file name: bump it when the thumbnail recipe changes."""


def _atomic_save(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
    os.close(fd)
    try:
        image.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def placeholder(cache_dir: Path, label: str) -> Path:
    """A dark 4:3 tile saying `label` (e.g. "EXR")."""
    target = cache_dir / f"placeholder-{VERSION}-{label}.jpg"
    if not target.exists():
        image = Image.new("RGB", (SIZE, SIZE * 3 // 4), BACKGROUND)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=48)
        box = draw.textbbox((0, 0), label, font=font)
        x = (image.width - (box[2] - box[0])) // 2 - box[0]
        y = (image.height - (box[3] - box[1])) // 2 - box[1]
        draw.text((x, y), label, fill=(200, 205, 215), font=font)
        _atomic_save(image, target)
    return target


def thumbnail(cache_dir: Path, source: Path, sha256: str, path: str) -> Path:
    """The cached thumbnail of a stored frame, made on first use."""
    if PurePosixPath(path).suffix.lower() == ".exr":
        return placeholder(cache_dir, "EXR")
    target = cache_dir / sha256[:2] / f"{sha256}-{VERSION}.jpg"
    if target.exists():
        return target
    try:
        with Image.open(source) as image:
            image.draft("RGB", (SIZE, SIZE))
            image.thumbnail((SIZE, SIZE))
            if image.mode in ("RGBA", "LA", "P"):
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, BACKGROUND)
                flat.paste(rgba, mask=rgba.getchannel("A"))
            else:
                flat = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return placeholder(cache_dir, "?")
    _atomic_save(flat, target)
    return target


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    200: {"content": {"image/jpeg": {}}, "description": "A JPEG at most 256 px on each side."},
}


@router.get(
    "/{job_id}/files/{file_id}/thumbnail",
    response_class=FileResponse,
    responses=ERRORS,
    summary="A small JPEG of an output frame (EXR: a placeholder tile)",
)
async def get_thumbnail(
    job_id: int, file_id: int, context: Context, caller: UserDep
) -> FileResponse:
    def find() -> tuple[str, str]:
        with context.db.transaction() as session:
            job = session.get(Job, job_id)
            if job is None or (job.owner_id != caller.user_id and not caller.is_admin):
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
            row = session.get(JobFile, file_id)
            if row is None or row.job_id != job_id or row.kind != "output":
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"output {file_id} not found")
            return row.sha256, row.path

    sha256, path = await run_in_threadpool(find)
    cache_dir = context.settings.data_dir / "thumbnails"
    made = await run_in_threadpool(
        thumbnail, cache_dir, context.blobs.path_for(sha256), sha256, path
    )
    return FileResponse(
        made,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )
