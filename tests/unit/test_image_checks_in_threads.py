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
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

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
