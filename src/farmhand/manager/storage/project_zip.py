"""A zip of a packed project (a .blend with its textures, libraries, caches) → blobs.

People drop such zips on the web UI. A zip is hostile input: entry names may climb out
of the folder (`../`), be absolute, be links, be encrypted, or inflate a few kilobytes
into gigabytes. Every entry is checked before its bytes are stored, and stored through
the blob store (hashed while streamed, never unpacked to a folder).
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from farmhand.manager.storage.blobs import BlobStore, StoredBlob
from farmhand.shared.paths import UnsafePathError, check_coexisting, safe_relative_path

MAX_ENTRIES = 20_000
MAX_RATIO = 200
"""Uncompressed/compressed size above which a large entry is taken for a zip bomb."""
SKIPPED_PREFIXES = ("__MACOSX/",)
UNPACKABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
"""The compression methods Python's zipfile unpacks: any other is refused by name before
a byte is stored (Windows Explorer zips big files with Deflate64, method 9)."""
_METHOD_NAMES = {
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


@dataclass
class Project:
    files: dict[str, StoredBlob] = field(default_factory=dict)

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
    if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ProjectError(f"zip entry {name!r} inflates {info.file_size} bytes from "
                           f"{info.compress_size}: refused as a likely zip bomb")  # fmt: skip
    return name


class _Member:
    """An entry being read, whose read errors say which entry is damaged and how.

    Only the reading side is wrapped: an error of the blob store writing it (a full
    disk, a 507) is no fault of the zip and passes through unchanged."""

    def __init__(self, name: str, member: IO[bytes]) -> None:
        self.name = name
        self.member = member

    def read(self, size: int = -1) -> bytes:
        try:
            return self.member.read(size)
        except _READ_ERRORS as error:
            raise _damaged(self.name, error) from error


def _damaged(name: str, error: BaseException) -> ProjectError:
    return ProjectError(f"zip entry {name!r} cannot be unpacked: {error or type(error).__name__}")


def ingest_project(blobs: BlobStore, source: BinaryIO | Path, max_total: int) -> Project:
    """Check every entry, then stream each file into the blob store."""
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
            raise ProjectError(f"the zip unpacks to {total} bytes; at most {max_total}")
        names = [_check(info) for info in entries]
        try:
            check_coexisting(names)
        except UnsafePathError as error:
            raise ProjectError(f"the zip cannot be a job's files: {error}") from error
        if not any(PurePosixPath(name).suffix.lower() == ".blend" for name in names):
            raise ProjectError("the zip holds no .blend file")
        project = Project()
        for name, info in zip(names, entries, strict=True):
            try:
                member = archive.open(info)
            except _READ_ERRORS as error:
                raise _damaged(name, error) from error
            with member:
                project.files[name] = blobs.ingest_file(_Member(name, member))
    return project
