"""File names in download headers, for every download of the manager.

An HTTP header is Latin-1 bytes (Starlette encodes it so, and fails with a 500 on
`日本.png`), and a file name is any Unicode a job may hold: so a name is never put in
a header as it is.

- `Content-Disposition` (`attachment`): RFC 6266 with RFC 8187's `filename*=UTF-8''…`
  (percent-encoded UTF-8, what browsers and curl `-J` save under), and a plain
  `filename="…"` for clients without it: the name with every run of characters other than
  ASCII letters, digits, `.`, `_`, `-` and space made `_`, so no quote, backslash,
  CR/LF or non-ASCII byte reaches the header.
- `X-Output-Name` (a frame's name by a template, with its folders: `ショット 10/0001.png`):
  percent-encoded UTF-8 (`header_text`) except printable ASCII other than `%`, so an
  ASCII name reads as it is and a reader always gets the name back with one
  percent-decoding (`urllib.parse.unquote`, as `FarmhandClient.download_frame` does).
"""

from __future__ import annotations

import re
from urllib.parse import quote

_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._ -]+")
_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def attachment(filename: str) -> str:
    """`Content-Disposition` saving the download as `filename` (a name, no folders)."""
    plain = _NOT_PLAIN.sub("_", filename).strip() or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def header_text(text: str) -> str:
    """`text` as a header value: UTF-8 percent-encoded but for printable ASCII (not `%`)."""
    return quote(text, safe=_PRINTABLE_ASCII)
