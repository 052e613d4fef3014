"""A zip of a packed project (a .blend with its textures, libraries, caches) → blobs.

People drop such zips on the web UI. A zip is hostile input: entry names may climb out
of the folder (`../`), be absolute, be links, be encrypted, or inflate a few kilobytes
into gigabytes. Every entry is checked before its bytes are stored, and stored through
the blob store (hashed while streamed, never unpacked to a folder).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from farmhand.manager.storage.blobs import BlobStore, StoredBlob
from farmhand.shared.paths import UnsafePathError, safe_relative_path

MAX_ENTRIES = 20_000
MAX_RATIO = 200
"""Uncompressed/compressed size above which a large entry is taken for a zip bomb."""
SKIPPED_PREFIXES = ("__MACOSX/",)


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
    if info.flag_bits & 0x1:
        raise ProjectError(f"zip entry {name!r} is encrypted")
    if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ProjectError(f"zip entry {name!r} inflates {info.file_size} bytes from "
                           f"{info.compress_size}: refused as a likely zip bomb")  # fmt: skip
    return name


def ingest_project(blobs: BlobStore, source: BinaryIO | Path, max_total: int) -> Project:
    """Check every entry, then stream each file into the blob store."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
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
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ProjectError(f"the zip holds {sorted(duplicates)[0]!r} twice")
        if not any(PurePosixPath(name).suffix.lower() == ".blend" for name in names):
            raise ProjectError("the zip holds no .blend file")
        project = Project()
        for name, info in zip(names, entries, strict=True):
            try:
                with archive.open(info) as member:
                    project.files[name] = blobs.ingest_file(member)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise ProjectError(f"zip entry {name!r} is damaged: {error}") from error
    return project
