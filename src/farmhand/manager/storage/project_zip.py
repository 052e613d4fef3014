"""A zip of a packed project (a .blend with its textures, libraries, caches) → blobs.

People drop such zips on the web UI. A zip is hostile input: entry names may climb out
of the folder (`../`), be absolute, be links, be encrypted, or inflate a few kilobytes
into gigabytes. Every entry is checked before its bytes are stored, and stored through
the blob store (hashed while streamed, never unpacked to a folder).

Sizes are decided before a byte is stored, from what the central directory declares:
the total is held to the manager's upload limit (`ProjectTooLarge`), to a ratio against
the zip's own size (`MAX_RATIO`, for the whole zip as for each entry: three thousand
entries of exactly 1 MiB of zeros, each under the entry rule's floor, made a 3 MB zip
that unpacked to 3 GiB), and by the caller's `admit` (the route's quota check, which
may ask for the entries' hashes, `Contents`: a pass that unpacks without storing). The
declared sizes are then not trusted: the bytes really unpacked are counted, and an entry
giving more than it declared (or a total passing the admitted one) stops the unpacking.
Whatever stops it, the blobs this request created are handed to `discard`, so a refused
zip leaves nothing behind (QA round 7: a zip refused for the quota only after it was
stored left 3 GiB on the disk for the grace period, each time it was sent).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from farmhand.manager.storage.blobs import CHUNK, BlobStore, StoredBlob
from farmhand.shared.paths import UnsafePathError, check_coexisting, safe_relative_path

MAX_ENTRIES = 20_000
MAX_RATIO = 200
"""Uncompressed/compressed size above which a large entry, or a large zip's whole
content against the zip's size, is taken for a zip bomb."""
RATIO_FLOOR = 1 << 20
"""Sizes up to which `MAX_RATIO` is not applied: a small file of zeros is no bomb."""
SKIPPED_PREFIXES = ("__MACOSX/",)
UNPACKABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
"""The compression methods farmhand unpacks: any other is refused by name before a byte
is stored (Windows Explorer zips big files with Deflate64, method 9). Python's zipfile
reads bzip2 (12) and LZMA (14) too, but inflates a whole chunk of either into memory at
once, whatever the entry declares: an 876-byte bzip2 zip took the manager to 1.6 GB
before any count of its bytes could stop it (QA, 2026-11-24). Deflate is inflated a
bounded piece at a time, and is what zip tools write unless told otherwise."""
_METHOD_NAMES = {
    12: "bzip2",
    14: "LZMA",
    1: "Shrink",
    2: "Reduce",
    3: "Reduce",
    4: "Reduce",
    5: "Reduce",
    6: "Implode",
    9: "Deflate64",
    10: "PKWARE DCL Implode",
    18: "IBM TERSE",
    19: "IBM LZ77",
    93: "Zstandard",
    95: "xz",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
}
"""Names of the methods people meet (APPNOTE.TXT 4.4.5), to say which one in the 400."""
_READ_ERRORS = (
    zipfile.BadZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)
"""What reading a hostile entry can raise: a bad CRC or header (BadZipFile), a feature
zipfile lacks (NotImplementedError), a password (RuntimeError), bytes that do not
decompress (zlib.error, LZMAError, OSError from bz2), a cut-off member (EOFError)."""


class ProjectError(ValueError):
    """The zip cannot be used as a project; the message says which entry and why."""


class ProjectTooLarge(ProjectError):
    """The zip unpacks to more than the manager takes in one upload (a 413)."""


Contents = Callable[[], dict[str, int]]
"""The hashes of a zip's files and their sizes, found by unpacking it without storing."""


@dataclass
class Project:
    files: dict[str, StoredBlob] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    """The hashes of the blobs this request stored that the store did not hold before:
    what to remove if the zip is refused after unpacking (the route's last quota check)."""

    @property
    def blend_files(self) -> list[str]:
        """The .blend files, shallowest first: the likely main file leads."""
        blends = [p for p in self.files if PurePosixPath(p).suffix.lower() == ".blend"]
        return sorted(blends, key=lambda p: (p.count("/"), p.lower()))


def _check(info: zipfile.ZipInfo) -> str:
    try:
        name = safe_relative_path(info.filename)
    except UnsafePathError as error:
        raise ProjectError(f"zip entry {info.filename!r}: {error}") from error
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ProjectError(f"zip entry {name!r} is a link; links are not followed")
    if info.flag_bits & 0x1 or info.compress_type == 99:
        raise ProjectError(
            f"zip entry {name!r} is encrypted; farmhand cannot unpack it: zip it again "
            "without a password"
        )
    if info.compress_type not in UNPACKABLE:
        method = _METHOD_NAMES.get(info.compress_type, "unknown")
        raise ProjectError(
            f"zip entry {name!r} uses compression method {info.compress_type} ({method}), "
            "which farmhand cannot unpack: zip it again with Deflate or Store"
        )
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ProjectError(f"zip entry {name!r} inflates {info.file_size} bytes from "
                           f"{info.compress_size}: refused as a likely zip bomb")  # fmt: skip
    return name


class _Member:
    """An entry being read, whose read errors say which entry is damaged and how, and
    whose bytes are counted as they come, whatever the zip declared.

    Only the reading side is wrapped: an error of the blob store writing it (a full
    disk, a 507) is no fault of the zip and passes through unchanged. The bytes are
    hashed here only when asked (`hashed`): measuring a zip's contents needs each
    file's hash, storing it does not (the store hashes what it writes)."""

    def __init__(
        self, name: str, member: IO[bytes], declared: int, budget: _Budget, hashed: bool
    ) -> None:
        self.name = name
        self.member = member
        self.declared = declared
        self.budget = budget
        self.size = 0
        self.digest = hashlib.sha256() if hashed else None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.member.read(size)
        except _READ_ERRORS as error:
            raise _damaged(self.name, error) from error
        self.size += len(data)
        if self.size > self.declared:
            raise ProjectError(
                f"zip entry {self.name!r} unpacks to more than the {self.declared} bytes "
                "the zip declares for it: refused as a likely zip bomb"
            )
        self.budget.spend(len(data))
        if self.digest is not None:
            self.digest.update(data)
        return data


class _Budget:
    """The bytes a zip may unpack to in all: what its entries declared, admitted
    against the limits before the first was stored."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.spent = 0

    def spend(self, size: int) -> None:
        self.spent += size
        if self.spent > self.allowed:
            raise ProjectTooLarge(
                f"the zip unpacks to more than the {self.allowed} bytes it declares: refused"
            )


def _damaged(name: str, error: BaseException) -> ProjectError:
    return ProjectError(f"zip entry {name!r} cannot be unpacked: {error or type(error).__name__}")


def _zip_size(source: BinaryIO | Path) -> int:
    """The zip's own size in bytes: what its content is measured against (`MAX_RATIO`)."""
    if isinstance(source, Path):
        return source.stat().st_size
    position = source.tell()
    size = source.seek(0, os.SEEK_END)
    source.seek(position)
    return size


def _refuse_bomb(total: int, zip_size: int) -> None:
    """A zip whose files in all inflate more than `MAX_RATIO` times its size: entries
    each under `RATIO_FLOOR` escape the entry rule (`_check`), their sum does not."""
    if total > RATIO_FLOOR and total > MAX_RATIO * max(zip_size, 1):
        raise ProjectError(
            f"the zip's files unpack to {total} bytes from a zip of {zip_size} bytes, "
            f"{total // max(zip_size, 1)} times its size; more than {MAX_RATIO} times "
            f"(past {RATIO_FLOOR} bytes) is refused as a likely zip bomb"
        )


def ingest_project(
    blobs: BlobStore,
    source: BinaryIO | Path,
    max_total: int,
    admit: Callable[[int, Contents], object] | None = None,
    discard: Callable[[list[str]], object] | None = None,
) -> Project:
    """Check every entry, then stream each file into the blob store.

    `admit` is called with the total the entries declare once every check passed and
    before a byte is stored: it raises to refuse the zip (the caller's quota). Its second
    argument finds the files' hashes, when the total alone does not decide (files stored
    already cost nothing more). If the unpacking stops (a damaged entry, one unpacking to
    more than it declared, a full disk), `discard` is called with the hashes of the blobs
    this request created, none of which is recorded yet, before the error goes on: it
    removes those no one else recorded meanwhile. The project names them too
    (`Project.created`), for a refusal after unpacking."""
    try:
        archive = zipfile.ZipFile(source)
    except _READ_ERRORS as error:
        raise ProjectError(f"not a readable zip file: {error}") from error
    with archive:
        entries = [
            info
            for info in archive.infolist()
            if not info.is_dir() and not info.filename.startswith(SKIPPED_PREFIXES)
        ]
        if not entries:
            raise ProjectError("the zip holds no files")
        if len(entries) > MAX_ENTRIES:
            raise ProjectError(f"the zip holds {len(entries)} files; at most {MAX_ENTRIES}")
        total = sum(info.file_size for info in entries)
        if total > max_total:
            raise ProjectTooLarge(
                f"the zip unpacks to {total} bytes, more than this manager's limit of "
                f"{max_total} bytes for one upload"
            )
        names = [_check(info) for info in entries]
        try:
            check_coexisting(names)
        except UnsafePathError as error:
            raise ProjectError(f"the zip cannot be a job's files: {error}") from error
        if not any(PurePosixPath(name).suffix.lower() == ".blend" for name in names):
            raise ProjectError("the zip holds no .blend file")
        _refuse_bomb(total, _zip_size(source))
        if admit is not None:
            admit(total, partial(_contents, archive, names, entries, total))
        budget = _Budget(total)
        project = Project()
        try:
            for name, info in zip(names, entries, strict=True):
                project.files[name] = _store_entry(
                    blobs, archive, name, info, budget, project.created
                )
        except BaseException:
            if discard is not None and project.created:
                discard(project.created)
            raise
    return project


def _opened(archive: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> IO[bytes]:
    """An entry to read, or the 400 that names it when its header cannot be read."""
    try:
        return archive.open(info)
    except _READ_ERRORS as error:
        raise _damaged(name, error) from error


def _contents(
    archive: zipfile.ZipFile, names: list[str], entries: list[zipfile.ZipInfo], total: int
) -> dict[str, int]:
    """Each file's hash and size, unpacked and counted as storing does, but not stored."""
    budget = _Budget(total)
    contents: dict[str, int] = {}
    for name, info in zip(names, entries, strict=True):
        with _opened(archive, name, info) as member:
            reader = _Member(name, member, info.file_size, budget, hashed=True)
            while reader.read(CHUNK):
                pass
        assert reader.digest is not None
        contents[reader.digest.hexdigest()] = reader.size
    return contents


def _store_entry(
    blobs: BlobStore,
    archive: zipfile.ZipFile,
    name: str,
    info: zipfile.ZipInfo,
    budget: _Budget,
    created: list[str],
) -> StoredBlob:
    """Store one entry; its hash joins `created` if the store did not hold it before."""
    with _opened(archive, name, info) as member:
        stored = blobs.ingest_file(_Member(name, member, info.file_size, budget, hashed=False))
    if stored.new:
        created.append(stored.sha256)
    return stored
