"""Frame checks on many threads at once leave the process's warnings as they found them.

QA round 7: after workers uploaded frames at once, every 413 of the manager became a
500 for the rest of its life. `verify_image` made Pillow's warnings errors with
`warnings.catch_warnings`, which saves and restores the process's one list of filters;
two threads checking at once restored each other's, and "every warning is an error" was
left on, so the deprecation warning of a status constant raised in every request that
used it.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from farmhand.shared import images
from farmhand.shared.images import verify_image


def _png(path: Path, size: int) -> Path:
    Image.new("RGB", (size, size), (200, 40, 40)).save(path)
    return path


def test_checks_at_once_leave_the_warning_filters_as_they_were(tmp_path: Path) -> None:
    frames = [_png(tmp_path / f"{n}.png", 256 + n) for n in range(8)]
    before = list(warnings.filters)

    def check_all(rounds: int) -> None:
        for _ in range(rounds):
            for frame in frames:
                verify_image(frame)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check_all, [40] * 8))

    assert warnings.filters == before, "no check's filter was left behind"
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn("a deprecated constant", DeprecationWarning, stacklevel=1)
    assert len(seen) == 1, "a warning elsewhere is still only a warning"


def test_a_warning_elsewhere_while_an_image_is_checked_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread's warning, issued while a check is decoding, stays a warning:
    only Pillow's own warnings are the check's errors."""
    frame = _png(tmp_path / "frame.png", 64)
    decoding, warned = threading.Event(), threading.Event()
    real_open = Image.open

    def open_and_wait(handle: io.BufferedReader) -> Image.Image:
        decoding.set()
        warned.wait(10)
        return real_open(handle)

    monkeypatch.setattr(Image, "open", open_and_wait)
    checking = threading.Thread(target=verify_image, args=(frame,))
    checking.start()
    assert decoding.wait(10)
    raised: list[BaseException] = []
    try:
        warnings.warn("a deprecated constant", DeprecationWarning, stacklevel=1)
    except DeprecationWarning as error:
        raised.append(error)
    finally:
        warned.set()
        checking.join(10)
    assert raised == [], "the check made another thread's warning an exception"


def test_pillows_own_warnings_still_refuse_a_frame(tmp_path: Path) -> None:
    """What the filter is for: an image Pillow only warns about (here one over its
    decompression-bomb threshold) is not counted as a good frame."""
    frame = _png(tmp_path / "big.png", 64)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 64 * 64 - 1  # 64x64 is now just past it: a warning
    try:
        with pytest.raises(images.ImageError, match="decompression bomb"):
            verify_image(frame)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


# Checks that overlap. Until they did, checks took turns for the whole decode (a lock
# around `catch_warnings`), so each upload thread of the manager waited for every other
# frame's; these fail then, on a bounded wait that the other check never lets finish.

WAIT = 10
"""Seconds any wait below may take before the test fails rather than hangs."""


def _damaged_tiff(path: Path) -> Path:
    """A TIFF whose description tag claims more bytes than the file has: Pillow skips
    the tag with a warning ("Tag data larger than file") and reads the pixels fine."""
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = "x" * 100  # ImageDescription, stored past the directory
    Image.new("RGB", (32, 24), (1, 2, 3)).save(path, tiffinfo=info)
    data = bytearray(path.read_bytes())
    (directory,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[directory : directory + 2])
    for entry in range(directory + 2, directory + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry : entry + 2])[0] == 270:
            data[entry + 4 : entry + 8] = struct.pack("<L", 10**6)
    path.write_bytes(data)
    return path


@pytest.fixture
def bomb_limit() -> Iterator[int]:
    """Pillow's decompression-bomb threshold lowered to just under 64x64 pixels: a 64x64
    image warns (`DecompressionBombWarning`), a 16x16 one does not."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 64 * 64 - 1
    try:
        yield Image.MAX_IMAGE_PIXELS
    finally:
        Image.MAX_IMAGE_PIXELS = limit


BOMB = (
    "it is damaged or truncated: Image size (4096 pixels) exceeds limit of 4095 pixels, "
    "could be decompression bomb DOS attack."
)
DAMAGED_TIFF = "it is damaged or truncated: Tag data larger than file. Skipping tag 270"


def _refusal(path: Path) -> str | None:
    try:
        verify_image(path)
    except images.ImageError as error:
        return error.reason
    return None


class _HeldDecode:
    """Makes the decode (`load`) of the frame `held` wait until `release`, saying when
    it has begun: a check of a big frame, caught in the middle."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held: Path) -> None:
        self.decoding, self.release = threading.Event(), threading.Event()
        real_load = ImageFile.ImageFile.load

        def load(image: ImageFile.ImageFile) -> object:
            if getattr(image.fp, "name", None) == str(held):
                self.decoding.set()
                self.release.wait(WAIT * 3)
            return real_load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", load)
        self.thread = threading.Thread(target=verify_image, args=(held,))

    def __enter__(self) -> _HeldDecode:
        self.thread.start()
        assert self.decoding.wait(WAIT), "the held check never began to decode"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(WAIT * 4)


def test_two_frames_decode_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each decode waits for the other to begin: with checks taking turns, the first
    waits in vain (the barrier breaks) while the second waits for its turn."""
    frames = [_png(tmp_path / f"{n}.png", 64) for n in range(2)]
    both_decoding = threading.Barrier(2, timeout=WAIT)
    met: list[bool] = []
    real_load = ImageFile.ImageFile.load

    def load(image: ImageFile.ImageFile) -> object:
        try:
            both_decoding.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with ThreadPoolExecutor(2) as pool:
        infos = list(pool.map(verify_image, frames))
    assert met == [True, True], "one decode ran alone: the checks took turns"
    assert [(info.format, info.width) for info in infos] == [("PNG", 64), ("PNG", 64)]


def test_while_a_frame_decodes_damaged_and_oversized_images_are_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb_limit: int
) -> None:
    """The refusals Pillow's warnings make, with the same words, from a check that
    runs while another thread's check is in the middle of decoding a frame."""
    tiff, bomb = _damaged_tiff(tmp_path / "bad.tif"), _png(tmp_path / "big.png", 64)
    # The pool is left last, after the held decode is let go: never a hang.
    with ThreadPoolExecutor(1) as pool, _HeldDecode(monkeypatch, _png(tmp_path / "f.png", 16)):
        refusals = pool.submit(lambda: [_refusal(tiff), _refusal(bomb)])
        done, _ = wait([refusals], timeout=WAIT)
        assert done, "the checks waited for the other frame's decode"
    assert refusals.result() == [DAMAGED_TIFF, BOMB]
    assert not any(entry[2] is images._WarningInACheck for entry in warnings.filters)


def test_a_check_that_outlasts_the_one_before_it_still_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb_limit: int
) -> None:
    """Check A begins, B begins, A ends, then B meets Pillow's warning: B still refuses
    its image (what A's check set up for Pillow's warnings is not undone under B)."""
    frame, bomb = _png(tmp_path / "frame.png", 16), _png(tmp_path / "big.png", 64)
    b_open, a_done = threading.Event(), threading.Event()
    a_saw_b: list[bool] = []
    real_open = Image.open

    def open_image(handle: io.BufferedReader) -> ImageFile.ImageFile:
        if handle.name == str(frame):  # A: stays in its check until B is in its own
            a_saw_b.append(b_open.wait(WAIT))
        else:  # B: reads its header (Pillow warns then) only once A has ended
            b_open.set()
            a_done.wait(WAIT * 3)
        return real_open(handle)

    monkeypatch.setattr(Image, "open", open_image)
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(verify_image, frame)
        b = pool.submit(_refusal, bomb)
        assert a.result(WAIT * 3).width == 16
        a_done.set()
        assert b.result(WAIT * 3) == BOMB
    assert a_saw_b == [True], "B's check could not begin while A's ran"


def test_pillows_warning_in_another_thread_during_a_check_stays_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thumbnail made while a frame is checked (the manager does both at once) gets
    Pillow's warning about a damaged TIFF as a warning, not an exception; and the same
    warning, already shown once, still refuses the TIFF in the next check."""
    tiff = _damaged_tiff(tmp_path / "bad.tif")
    with _HeldDecode(monkeypatch, _png(tmp_path / "frame.png", 16)):
        # No `catch_warnings` here: leaving one would make the machinery forget what it
        # has shown. The warning is shown as by default, once (pytest records it).
        try:
            with Image.open(tiff) as image:
                image.load()
        except Warning as error:
            pytest.fail(f"another thread's check made Pillow's warning an error: {error}")
        assert _refusal(tiff) == DAMAGED_TIFF, "the warning shown once passed unnoticed"


def test_pillows_warning_shown_elsewhere_during_a_check_does_not_let_the_frame_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thumbnail of the same damaged TIFF made while a check of it has begun (its filter
    in place, the file not yet opened): the warnings machinery noted the thumbnail's
    warning as shown and skipped the check's own, the same words from the same line,
    without looking at the filters, so the damaged frame passed (QA round 12)."""
    tiff = _damaged_tiff(tmp_path / "bad.tif")
    began, go = threading.Event(), threading.Event()
    real_open = Image.open

    def open_after_the_thumbnail(fp: object, *args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "checker":
            began.set()
            go.wait(WAIT)
        return real_open(fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", open_after_the_thumbnail)
    said: list[str | None] = []
    checker = threading.Thread(target=lambda: said.append(_refusal(tiff)), name="checker")
    checker.start()
    try:
        assert began.wait(WAIT), "the check never began"
        with real_open(tiff) as image:  # the thumbnail, in a thread not checking
            image.load()
    finally:
        go.set()
        checker.join(WAIT)
    assert said == [DAMAGED_TIFF], "the damaged frame passed its check"
    assert _refusal(tiff) == DAMAGED_TIFF
