"""Which Blender saved a .blend, read from its header, and which Blenders may open it."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
import zstandard

from farmhand.shared.blendfile import (
    best_version,
    cannot_open,
    check_spec,
    in_range,
    oldest_in_range,
    saved_version,
    version_fits,
)
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


@pytest.mark.parametrize(
    ("saved", "spec", "opens"),
    [
        ("5.0", "<4", False),
        ("5.0", ">=4.2,<5", False),
        ("5.0", "<5", False),
        ("5.0", "4.2", False),
        ("4.3", "==4.2", False),
        ("3.4", ">=3,<3.4", False),  # ">3" is 4.0 and later: ">3,<3.4" holds none
        ("3.4", "<4", True),  # an older file opens in newer Blenders
        ("3.4", ">=4.2,<5", True),
        ("5.0", "<=5.0", True),
        ("5.0", "<5.0.1", True),  # 5.0.0
        ("5.0", "<5.1", True),
        ("5.0", "!=5", True),  # 6.0, when it comes
        ("4.2", "!=4.2", True),  # 4.3
        ("5.0", None, True),
        (None, "<4", True),  # unknown: the workers' Blender says
    ],
)
def test_a_range_that_only_older_blenders_are_in_cannot_open_the_file(
    saved: str | None, spec: str | None, opens: bool
) -> None:
    problem = cannot_open(saved, spec)
    assert (problem is None) is opens
    if not opens:
        assert problem == (
            f"the file was saved by Blender {saved}, which a Blender in the range {spec} "
            "cannot open (a .blend opens only in the Blender that saved it or a newer one): "
            f"allow Blender {saved} or newer in the job's Blender range"
        )


@pytest.mark.parametrize("spec", [">=5,<5", "<4,>5", "==5.0,!=5", "<0"])
def test_a_range_no_version_is_in_is_refused_as_such_whatever_the_file(spec: str) -> None:
    """Not blamed on the file's Blender: 'allow Blender 3.4 or newer' cannot be followed
    when the range holds no Blender at all."""
    said = f"the Blender range {spec!r} allows no version"
    with pytest.raises(ValueError) as refused:
        check_spec(spec)
    assert str(refused.value) == said
    with pytest.raises(ValueError, match=re.escape(said)):
        JobSettings(blender_version=spec)
    for saved in ("3.4", "5.0", None):
        assert cannot_open(saved, spec) == said, saved
    assert in_range("5.0.1", spec) is False, "a stored job's empty range is read, not refused"


GRID = [f"{a}.{b}.{c}" for a in range(8) for b in range(0, 6) for c in range(0, 4)]
"""Every version the ranges below can tell apart (their bounds are inside it)."""


@pytest.mark.parametrize(
    "spec",
    ["<4", ">=4.2,<5", ">4.2", "!=4.2,<4.4", "==5.0.2", ">5,<4", "!=5,!=6", "<=3.4.1,>3.4"],
)
@pytest.mark.parametrize("saved", [None, "2.5", "3.4", "4.2", "5.0"])
def test_the_oldest_version_in_a_range_is_the_first_of_every_version_in_it(
    spec: str, saved: str | None
) -> None:
    """Checked against every version of a grid: the answer rests on the bounds a range
    names, not on any list of existing Blenders."""
    fitting = [v for v in GRID if version_fits(v, saved, spec)]
    assert oldest_in_range(spec, saved) == (fitting[0] if fitting else None)
