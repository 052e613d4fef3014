"""`GET /api/jobs/{id}/files/{file_id}/thumbnail`: a small JPEG of one frame.

Thumbnails are made with Pillow (fitted into 256 by 256, or another of a few fixed
sizes) the first time they are asked for and kept in `<data-dir>/thumbnails/`, named
after the SHA-256 of what they are made from: content never changes under a hash, so the
cache never goes stale and identical frames share one file. The cache's layout, its
sizes and what removes its files are `storage/thumbnail_cache.py`'s.

When the worker's Blender made a preview of the frame (a JPEG through the scene's own
colour management: view transform, look, exposure; a `preview` file of the job), the
thumbnail is made from that, so an EXR frame looks as the artist set it up. Without one
(a frame merged from tiles, a preview refused), EXR frames, which Pillow cannot read,
are decoded with the OpenEXR library and shown through the standard sRGB view (linear
light, clipped, sRGB curve): a preview to recognise the frame by, not a graded image.
The manager has no Blender and no scene, so of a multilayer frame with several view
layers it shows the layer the file suggests (`worker/exr.image_channels`), which in
Blender 3.4's file need not be the scene's first, where the worker's video shows the
scene's. Unreadable files get a labelled placeholder tile instead, never an error, so
one odd frame does not break the grid.

An EXR is read a band of rows at a time (`exr_preview`), each band made into display
values and averaged down before the next is read: some 16 MiB for an 8192 by 8192
frame, where decoding it whole held 1.4 GiB. Only a picture outside the file's first
part is read whole, up to `WHOLE_READ_BYTES` (the OpenEXR package reads a range of rows
of the first part only).

A cached thumbnail is served at once. Making one takes its turn (`context.thumbnails`,
two at a time, waiting without a thread): it still reads and decodes the whole file,
and requests for one frame's first thumbnail at once each made it. A request
that gets its turn looks in the cache again, so the others use the one the first made;
one kept waiting too long is answered 503 with Retry-After (`file_reads.FileReadsBusy`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farmhand.manager.api.deps import Context, UserDep
from farmhand.manager.db.models import Job, JobFile
from farmhand.manager.file_reads import FileReads, FileReadsBusy
from farmhand.manager.storage import thumbnail_cache
from farmhand.manager.storage.thumbnail_cache import (
    DEFAULT_SIZE,
    MAX_SIZE,
    MIN_SIZE,
    SIZES,
    TMP_PREFIX,
    placeholder_path,
    served_size,
    thumbnail_path,
)
from farmhand.shared.images import ImageError
from farmhand.shared.schemas import ErrorResponse

if TYPE_CHECKING:  # numpy is imported where an EXR thumbnail is made (`exr_preview`)
    import numpy as np
    import numpy.typing as npt

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/jobs", tags=["jobs"])

SIZE = DEFAULT_SIZE
BACKGROUND = (40, 44, 52)


def _atomic_save(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX, suffix=".jpg")
    os.close(fd)
    try:
        image.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def placeholder(cache_dir: Path, label: str) -> Path:
    """A dark 4:3 tile saying `label` (e.g. "EXR")."""
    target = placeholder_path(cache_dir, label)
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


WHOLE_READ_BYTES = 512 * 2**20
"""The most an EXR thumbnail may hold to read its frame whole, which it does only when
the picture is not in the file's first part (`exr.PictureBands`): a 4K Blender 5 frame
with its Depth, Mist and Normal passes fits; an 8K one gets the 'EXR' tile."""

BAND_PIXELS = 2**18
"""About how many pixels of an EXR frame a thumbnail reads at a time: 32 rows of an 8K
frame (whole chunks of a ZIP, PIZ or DWAA file), some 16 MiB as they are read and made
into display values (float32 RGB and the sRGB curve's own arrays), whatever the frame's
height (bands twice as large made an 8K thumbnail no faster)."""


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The size Pillow's `Image.thumbnail((size, size))` gives a `width` x `height` image
    (the aspect ratio kept as closely as whole pixels allow, at least 1), so an EXR's
    thumbnail, made with no image of the whole frame to call it on, is as large as
    before."""
    if size >= width and size >= height:
        return width, height
    aspect = width / height
    if aspect <= 1:
        high = size * aspect
        x = min(math.floor(high), math.ceil(high), key=lambda n: abs(aspect - n / size))
        return max(x, 1), size
    wide = size / aspect
    y = min(math.floor(wide), math.ceil(wide), key=lambda n: abs(aspect - size / n) if n else 0)
    return size, max(y, 1)


def _block_means(values: npt.NDArray[np.float32], fx: int, fy: int) -> npt.NDArray[np.uint8]:
    """Each `fx` by `fy` block of `values` (rows, columns, 3) as its mean, rounded half
    up (a last, partial block over the pixels it has): Pillow's `Image.reduce`."""
    import numpy as np

    columns = np.arange(0, values.shape[1], fx)
    rows = np.arange(0, values.shape[0], fy)
    # Along a row in float32, exact for whole 8-bit values (a sum below 2**24: blocks under
    # 65,000 pixels wide), not in a float64 copy of the band; down the columns in float64.
    across = np.add.reduceat(values, columns, axis=1)
    sums = np.add.reduceat(across, rows, axis=0, dtype=np.float64)
    counts = np.outer(
        np.diff(rows, append=values.shape[0]), np.diff(columns, append=values.shape[1])
    )
    sums /= counts[..., np.newaxis]
    sums += 0.5
    means: npt.NDArray[np.uint8] = np.floor(sums).astype(np.uint8)
    return means


def exr_preview(source: Path, size: int = SIZE) -> Image.Image:
    """An 8-bit sRGB image of an EXR's picture fitted into `size` by `size`, as a video
    of a Standard-view scene shows it: the channels `worker/exr.image_channels` picks
    without the scene (a bare RGB, else the compositor's or the first Combined pass of
    a multilayer file, in whichever part of a multi-part one) through the sRGB curve
    (`to_srgb`), never a Depth or Normal pass.

    Made as Pillow's `thumbnail` makes one of the whole frame in display values (the
    sRGB curve before any averaging, as the frame looks), with the frame read a band of
    rows at a time (`exr.PictureBands`, `BAND_PIXELS`): each band through the curve to
    8-bit values, then averaged in blocks (`Image.reduce`'s), and the small image so
    made resized with Pillow's bicubic filter. So the memory is a band's and the small
    image's, whatever the frame's size, where decoding a whole 8K frame held 1.4 GiB.
    A picture outside the file's first part must be read whole (`PictureBands`): only
    up to `WHOLE_READ_BYTES`, else ImageError (the caller shows the 'EXR' tile).

    Imported here, not at the top: numpy and OpenEXR are loaded only once a server
    process makes an EXR thumbnail."""
    import numpy as np

    from farmhand.worker.exr import PictureBands, to_srgb

    picture = PictureBands(source)
    try:
        width, height = picture.size
        if not picture.in_bands and picture.whole_read_bytes > WHOLE_READ_BYTES:
            raise ImageError(
                f"{source.name}: its picture is not in the first part, and reading it whole"
                f" would hold {picture.whole_read_bytes // 2**20} MiB"
            )
        target = fitted_size(width, height, size)
        # Pillow's two steps (`reducing_gap` 2): whole blocks, then the filter.
        fx = int(width / target[0] / 2) or 1
        fy = int(height / target[1] / 2) or 1
        rows = max(fy, BAND_PIXELS // width // fy * fy)  # whole blocks in every band
        reduced = np.empty((-(-height // fy), -(-width // fx), 3), dtype=np.uint8)
        for first in range(0, height, rows):
            display = to_srgb(picture.read(first, min(rows, height - first)))
            display *= np.float32(255)
            display += np.float32(0.5)
            np.floor(display, out=display)  # the 8-bit values a whole-frame image has
            reduced[first // fy : (first + len(display) - 1) // fy + 1] = _block_means(
                display, fx, fy
            )
    finally:
        picture.close()
    image = Image.fromarray(reduced, "RGB")
    if image.size == target:
        return image
    return image.resize(target, Image.Resampling.BICUBIC, box=(0, 0, width / fx, height / fy))


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def thumbnail(cache_dir: Path, source: Path, sha256: str, path: str, size: int = SIZE) -> Path:
    """The cached preview of a stored frame, at most `size` pixels a side, made on first use."""
    target = thumbnail_path(cache_dir, sha256, size)
    if target.exists():
        return target
    try:
        if PurePosixPath(path).suffix.lower() == ".exr":
            flat = exr_preview(source, size)
        else:
            with Image.open(source) as image:
                image.draft("RGB", (size, size))
                image.thumbnail((size, size))
                flat = _flatten(image)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        RuntimeError,
        Image.DecompressionBombError,
    ) as error:
        log.info("no preview for a frame", path=path, error=str(error))
        return placeholder(cache_dir, "EXR" if path.lower().endswith(".exr") else "?")
    _atomic_save(flat, target)
    return target


class OneAtATime:
    """Requests for one thumbnail (its path in the cache) take turns to make it, so that
    those sent together do not each decode the frame: the first makes it, the next find
    it made. Each waits without a thread, for as long as a turn to make one may be
    waited for (`turns.wait`: then `FileReadsBusy`). Used on the event loop only."""

    def __init__(self) -> None:
        self._locks: dict[Path, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def one_at_a_time(self, key: Path, turns: FileReads) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            with anyio.move_on_after(turns.wait) as waiting:
                await lock.acquire()
            if waiting.cancelled_caught:
                raise FileReadsBusy(turns.at_once, turns.wait, turns.doing)
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_making = OneAtATime()

THUMBNAIL_KINDS = ("output", "preview", "pass")


def blender_preview(session: Session, job_id: int, frame: int) -> JobFile | None:
    """The JPEG the worker's Blender made of `frame`, if it sent one."""
    return session.scalars(
        select(JobFile)
        .where(JobFile.job_id == job_id, JobFile.kind == "preview", JobFile.frame == frame)
        .limit(1)
    ).first()


def use_preview(frame_path: str, preview: Path, size: int) -> bool:
    """Whether to show Blender's preview rather than the frame itself.

    Always for EXR (only Blender knows the scene's colour management); for PNG/JPEG,
    whose pixels already are what the artist sees, only while the preview is at least
    as large as asked (the large view of a 4K PNG is made from the PNG).
    """
    if PurePosixPath(frame_path).suffix.lower() == ".exr":
        return True
    try:
        with Image.open(preview) as image:
            return max(image.size) >= size
    except (OSError, UnidentifiedImageError):
        return False


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
    200: {
        "content": {"image/jpeg": {}},
        "description": "A JPEG at most the served size (256 by default) px on each side.",
    },
}


@router.get(
    "/{job_id}/files/{file_id}/thumbnail",
    response_class=Response,
    responses=ERRORS,
    summary="A JPEG preview of an output frame (EXR too), at most `size` px a side",
    description=(
        "`size` is served as the smallest of "
        + ", ".join(str(s) for s in SIZES)
        + " px at least as large (the cache holds a few sizes per frame, not one per"
        " pixel count): a browser scales the image to the size it shows."
    ),
)
async def get_thumbnail(
    job_id: int,
    file_id: int,
    context: Context,
    caller: UserDep,
    size: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE)] = SIZE,
) -> Response:
    size = served_size(size)

    def find() -> tuple[str, str]:
        # Only reads: a long write (a job's deletion, a purge) must not hold it up.
        with context.db.read() as session:
            job = session.get(Job, job_id)
            if not caller.sees(job):
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
            row = session.get(JobFile, file_id)
            if row is None or row.job_id != job_id or row.kind not in THUMBNAIL_KINDS:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"output {file_id} not found")
            if row.kind == "output" and row.frame is not None:
                preview = blender_preview(session, job_id, row.frame)
                if preview is not None and use_preview(
                    row.path, context.blobs.path_for(preview.sha256), size
                ):
                    return preview.sha256, preview.path
            return row.sha256, row.path

    sha256, path = await run_in_threadpool(find)
    cache_dir = thumbnail_cache.cache_dir(context.settings.data_dir)

    def cached() -> bytes | None:
        try:
            return thumbnail_path(cache_dir, sha256, size).read_bytes()
        except FileNotFoundError:
            return None

    def make_and_read() -> bytes:
        # Read here, not streamed from the path later: deleting the job may remove the
        # cached file between making it and sending it, which must be a 404, not a 500.
        # `thumbnail` looks in the cache first: another request may have made it while
        # this one waited for its turn.
        made = thumbnail(cache_dir, context.blobs.path_for(sha256), sha256, path, size)
        try:
            return made.read_bytes()
        except FileNotFoundError:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"output {file_id} not found (deleted meanwhile)"
            ) from None

    # A cached one is served without a turn. Requests for one not made yet queue for it
    # (one thumbnail, one decode), and the first in line waits for a turn to make it: two
    # at a time (FileReadsBusy, 503, when the wait is too long).
    image = await run_in_threadpool(cached)
    if image is None:
        target = thumbnail_path(cache_dir, sha256, size)
        async with _making.one_at_a_time(target, context.thumbnails):
            image = await run_in_threadpool(cached)  # made meanwhile by the one before
            if image is None:
                image = await context.thumbnails.run(make_and_read)
    return Response(
        image,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )
