"""Which Blender saved a .blend, read from its header, and which Blenders may open it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

from farmhand.shared.blendfile import best_version, check_spec, saved_version, version_fits
from farmhand.shared.schemas import JobSettings

OLD = b"BLENDER-v304REND" + bytes(48)
"""Blender 3.4's header: pointer size, endian, three digits."""
NEW = b"BLENDER17-01v0500REND" + bytes(48)
"""Blender 5.0's header: header size, format version, endian, four digits."""


@pytest.mark.parametrize(
    ("head", "version"),
    [
        (OLD, "3.4"),
        (b"BLENDER_v279REND", "2.79"),
        (NEW, "5.0"),
        (b"BLENDER17-01v0412REND", "4.12"),
        # mtime=0: a gzip header holds the time it was made, and pytest-xdist's workers
        # must collect the same test ids.
        (gzip.compress(OLD, mtime=0), "3.4"),
        (zstandard.ZstdCompressor().compress(NEW), "5.0"),
        (b"not a blend at all", None),
    ],
    ids=["3.4", "2.79", "5.0", "4.12", "gzip-3.4", "zstd-5.0", "not-a-blend"],
)
def test_the_saving_version_is_read_from_the_header(head: bytes, version: str | None) -> None:
    assert saved_version(head) == version


def test_a_zstd_file_is_read_from_its_first_bytes_only(tmp_path: Path) -> None:
    """Blender 5 compresses: the first 64 KiB of a large file are enough."""
    body = NEW + bytes(range(256)) * 4000
    compressed = zstandard.ZstdCompressor().compress(body)
    assert saved_version(compressed[:65536]) == "5.0"


def test_an_older_blender_never_fits_a_newer_file() -> None:
    assert not version_fits("3.4.1", "5.0", None)
    assert version_fits("5.0.1", "3.4", None)
    assert version_fits("5.0.1", "5.0", None)
    assert not version_fits("4.5.0", "3.4", "<4.2")
    assert version_fits("4.2.3", "3.4", ">=4.2,<5")
    assert not version_fits("5.0.0", "3.4", ">=4.2,<5")


def test_a_worker_renders_with_its_newest_fitting_blender() -> None:
    assert best_version(["3.4.1", "5.0.1"], "3.4", None) == "5.0.1"
    assert best_version(["3.4.1", "5.0.1"], "3.4", "<5") == "3.4.1"
    assert best_version(["3.4.1"], "5.0", None) is None


@pytest.mark.parametrize("spec", ["banana", ">=4.2,,", "~=4", ">= 4.x"])
def test_a_bad_version_range_is_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(ValueError, match="not a version range"):
        check_spec(spec)
    with pytest.raises(ValueError, match="not a version range"):
        JobSettings(blender_version=spec)
