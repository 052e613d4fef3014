"""Reading an id from a URL path, for the servers that take it as text.

`farmhand node` (`GET /job/{id}`) and `farmhand orchestrator` (`GET /status/{id}`) take
their ids as strings so that anything else is their own documented "not found", not
FastAPI's 422. Python's digit tests are wider than an id: `isdigit()` is true for `²`
and `①`, which `int()` refuses (a 500), and `isdecimal()` for a full-width 5 (U+FF15), which
`int()` reads as 5, so one id would have many spellings and a header echoing the path
would hold characters HTTP cannot carry. An id here is ASCII digits only, and short
enough that `int()` never meets its digit limit.
"""

from __future__ import annotations

MAX_ID_DIGITS = 18
"""Every id either server hands out fits (the node's are below 2**53, 16 digits)."""


def path_id(text: str) -> int | None:
    """The id `text` names, or None when it is not 1 to `MAX_ID_DIGITS` ASCII digits."""
    if 0 < len(text) <= MAX_ID_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
