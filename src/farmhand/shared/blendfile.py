"""Recognising a .blend from its first bytes, without Blender.

A .blend starts with `BLENDER`; Blender may also save it gzip-compressed (before 3.0) or
zstd-compressed (3.0 and later). Anything else is refused at upload, before a worker
wastes an attempt on it.
"""

from __future__ import annotations

BLEND_MAGIC = b"BLENDER"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HEADER_BYTES = 16


def looks_like_blend(header: bytes) -> bool:
    return header.startswith((BLEND_MAGIC, GZIP_MAGIC, ZSTD_MAGIC))
