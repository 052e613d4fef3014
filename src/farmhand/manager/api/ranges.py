"""Range requests (RFC 9110 §14) on the manager's single-file downloads: a frame, a
job's output or input file, a runner's input.

Why: without them every download answered `200` with the whole file, so one cut off
at 590 MB of a 600 MB video started again from zero; download managers, `curl -C -`,
browsers and `farmhand`'s own client resume with `Range: bytes=<what they have>-`.

What is honoured, and the one place that decides it (`requested_part`):

- one range of bytes: `bytes=a-b`, `bytes=a-`, `bytes=-n` (the last n), answered `206`
  with `Content-Range` and that part's `Content-Length`. An end past the file's is the
  file's end; a suffix longer than the file is the whole file.
- several ranges at once, another unit, or a header that does not parse: the header is
  ignored and the whole file sent (`200`), as RFC 9110 §14.2 allows: a client asking
  for a resume it cannot have is better served whole than refused.
- a range starting at or past the file's end (or any range of an empty file, or
  `bytes=-0`): `416` with `Content-Range: bytes */<size>`, so the client learns the size.
- `If-Range` (§13.1.5) with the download's `ETag`, a strong validator: blobs are
  content-addressed, so the ETag is the file's SHA-256 and two files with one ETag have
  the same bytes. Any other `If-Range` (another ETag, a weak one, a date: these answers
  have no `Last-Modified`) means the file changed since the client's part: the whole
  file, `200`, never a part of another file spliced onto it.

Every answer says `Accept-Ranges: bytes` and the `ETag`. A job's zips are ranged the
same way: laid out in advance (`storage/zipplan.py`), their ETag names their layout and
the hashes of their files, so it is as strong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import HTTPException, status

_ONE_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE)
_BEYOND = 10**18
"""Longer numbers than Python parses by default (4,300 digits) are valid in a Range: any
number of more than 18 significant digits (leading zeros do not count) is past the end
of any file, and counts as this one."""


@dataclass(frozen=True)
class Part:
    """What a download sends: bytes `start` to `start + length` of the file, answered
    with `status_code` and `headers` (`Content-Length` and the range headers)."""

    start: int
    length: int | None
    """None: to the end of a file whose size is not known (no range then)."""
    status_code: int = status.HTTP_200_OK
    headers: dict[str, str] = field(default_factory=dict)


def etag_of(sha256: str) -> str:
    """A content-addressed file's ETag: its SHA-256, quoted (a strong validator)."""
    return f'"{sha256}"'


def requested_part(request_headers: Mapping[str, str], size: int | None, etag: str) -> Part:
    """The part of a file of `size` bytes (None: unknown, sent whole) whose `ETag` is
    `etag` that a GET with these headers asks for (see the module's docstring); `416`
    (HTTPException) for a range that lies past its end."""
    if size is None:
        return Part(0, None, headers={"ETag": etag})
    whole = Part(
        0, size, headers={"Content-Length": str(size), "Accept-Ranges": "bytes", "ETag": etag}
    )
    header = request_headers.get("range")
    if header is None:
        return whole
    if_range = request_headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return whole
    asked = _one_range(header)
    if asked is None:
        return whole
    first, last = asked
    if first is None:  # the last `last` bytes
        assert last is not None
        first, last = max(size - last, 0), size - 1
        satisfiable = last >= first  # not `bytes=-0`, nor an empty file
    else:
        last = size - 1 if last is None else min(last, size - 1)
        satisfiable = first < size
    if not satisfiable:
        raise HTTPException(
            status.HTTP_416_RANGE_NOT_SATISFIABLE,
            f"the range {header.strip()!r} lies past the end of this file of {size} bytes",
            headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes", "ETag": etag},
        )
    length = last - first + 1
    return Part(
        first,
        length,
        status.HTTP_206_PARTIAL_CONTENT,
        {
            "Content-Length": str(length),
            "Content-Range": f"bytes {first}-{last}/{size}",
            "Accept-Ranges": "bytes",
            "ETag": etag,
        },
    )


def _one_range(header: str) -> tuple[int | None, int | None] | None:
    """`(first, last)` of a Range header of one byte range (`first` None: a suffix of
    `last` bytes; `last` None: to the end); None for anything else, which is ignored."""
    match = _ONE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (_number(text) for text in match.groups())
    if first is None and last is None:
        return None
    if first is not None and last is not None and last < first:
        return None  # invalid (RFC 9110 §14.1.1): ignored
    return first, last


def _number(digits: str) -> int | None:
    """The number `digits` spell (None: none); `_BEYOND` for one of more than 18
    significant digits. Leading zeros are stripped before counting: RFC 9110 allows
    them, and `0000000000000000001` is 1, not a number past every file's end."""
    if not digits:
        return None
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 18 else _BEYOND
