"""`requested_part`'s reading of a Range header's numbers (RFC 9110 §14.1.1): digits
with leading zeros are valid and mean what they say, however many zeros there are.
A number of more than 18 digits used to count as past every file's end before its
leading zeros were stripped, so `bytes=0000000000000000001-2` sent the whole file
(200) instead of bytes 1-2, and `bytes=0000000000000000000-` answered 416."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from farmhand.manager.api.ranges import etag_of, requested_part

ETAG = etag_of("ab" * 32)


def _part(header: str, size: int = 10) -> tuple[int, str]:
    part = requested_part({"range": header}, size, ETAG)
    return part.status_code, part.headers.get("Content-Range", "")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0000000000000000001-2", (206, "bytes 1-2/10")),
        ("bytes=0000000000000000000-", (206, "bytes 0-9/10")),
        (
            "bytes=00000000000000000000000000000003-00000000000000000000000000004",
            (206, "bytes 3-4/10"),
        ),
        ("bytes=-0000000000000000000000002", (206, "bytes 8-9/10")),
        ("bytes=1-0000000000000000000000000000000000000099", (206, "bytes 1-9/10")),
        ("bytes=1-2", (206, "bytes 1-2/10")),
    ],
)
def test_leading_zeros_do_not_change_a_range(header: str, expected: tuple[int, str]) -> None:
    assert _part(header) == expected


def test_a_huge_number_is_still_past_the_end() -> None:
    """Numbers of more than 18 significant digits still count as past any file's end."""
    assert _part("bytes=1-" + "9" * 40) == (206, "bytes 1-9/10")
    with pytest.raises(HTTPException) as raised:
        _part("bytes=" + "0" * 10 + "1" + "0" * 30 + "-")
    assert raised.value.status_code == 416
    assert raised.value.headers == {
        "Content-Range": "bytes */10",
        "Accept-Ranges": "bytes",
        "ETag": ETAG,
    }
