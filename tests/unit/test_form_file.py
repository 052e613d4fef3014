"""`FormFile`: the one file of a multipart body, read as it arrives (`/api/blend-info`).

The route reads its own form so it can refuse an upload before it is received; these
pin down that hostile forms are a `400` that holds nothing much in memory, and that a
well-formed one yields the file's bytes exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest
from fastapi import HTTPException

from farmhand.manager.api.form_file import FormFile

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def _body(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _part(headers: bytes, data: bytes) -> bytes:
    return b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"


def _end() -> bytes:
    return b"--" + BOUNDARY.encode() + b"--\r\n"


def _read(pieces: Iterable[bytes]) -> tuple[str, bytes]:
    async def run() -> tuple[str, bytes]:
        form = FormFile(CONTENT_TYPE, _body(pieces))
        name = await form.filename()
        return name, b"".join([chunk async for chunk in form.chunks()])

    return asyncio.run(run())


def test_the_file_of_a_form_is_read_whole_past_other_fields() -> None:
    data = bytes(range(256)) * 1000
    body = (
        _part(b'Content-Disposition: form-data; name="note"', b"hello")
        + _part(b'Content-Disposition: form-data; name="file"; filename="shot.blend"', data)
        + _end()
    )
    # In small pieces, as a slow client sends it: a boundary may fall across two.
    pieces = [body[i : i + 777] for i in range(0, len(body), 777)]
    assert _read(pieces) == ("shot.blend", data)


def test_an_endless_part_header_is_refused_without_gathering_it() -> None:
    """A header line with no end (a body may run to gigabytes for a .blend) is a `400`
    once it passes what any real header holds (the parser's limit), not gathered."""
    gathered: list[int] = []

    def endless() -> Iterable[bytes]:
        yield b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="x'
        for _ in range(100_000):  # 6.4 GB, were it all read
            gathered.append(1)
            yield b"x" * 65536

    with pytest.raises(HTTPException) as refused:
        _read(endless())
    assert refused.value.status_code == 400
    assert "malformed" in refused.value.detail
    assert len(gathered) <= 2


def test_a_body_ending_inside_the_file_is_refused() -> None:
    body = _part(b'Content-Disposition: form-data; name="file"; filename="a.blend"', b"B" * 5000)
    with pytest.raises(HTTPException) as refused:
        _read([body[:-1000]])
    assert refused.value.status_code == 400
    assert "ended before its file did" in refused.value.detail


def test_two_files_in_the_field_are_refused() -> None:
    disposition = b'Content-Disposition: form-data; name="file"; filename="a.blend"'
    body = _part(disposition, b"one") + _part(disposition, b"two") + _end()
    with pytest.raises(HTTPException) as refused:
        _read([body])
    assert refused.value.status_code == 400
    assert "not several" in refused.value.detail


# ------------------------------------------------- small text fields beside the file
# `POST /api/jobs` (settings) and `POST /api/jobs/{id}/upload` (path) read their forms
# with `FormFile` too, and need their text fields: before the file, to check them before
# its bytes arrive, or after it, as curl sends them in `-F` order.


def _text(name: bytes, value: bytes) -> bytes:
    return _part(b'Content-Disposition: form-data; name="' + name + b'"', value)


FILE = _part(b'Content-Disposition: form-data; name="file"; filename="a.blend"', b"BLEND" * 100)


def _texts(pieces: Iterable[bytes], *names: str) -> tuple[dict[str, str | None], ...]:
    """The fields `names` as known once the file's name is, and once the file is read."""

    async def run() -> tuple[dict[str, str | None], ...]:
        form = FormFile(CONTENT_TYPE, _body(pieces), texts=names)
        await form.filename()
        early = {name: form.text(name) for name in names}
        async for _ in form.chunks():
            pass
        return early, {name: form.text(name) for name in names}

    return asyncio.run(run())


def test_text_fields_before_the_file_are_known_before_its_bytes() -> None:
    body = _text(b"settings", b'{"frame_end": 9}') + _text(b"note", b"hi") + FILE + _end()
    early, late = _texts([body], "settings")
    assert early == late == {"settings": '{"frame_end": 9}'}


def test_text_fields_after_the_file_are_known_once_it_is_read() -> None:
    body = FILE + _text(b"path", "tex/wood é.png".encode()) + _end()
    early, late = _texts([body[i : i + 100] for i in range(0, len(body), 100)], "path")
    assert early == {"path": None}
    assert late == {"path": "tex/wood é.png"}


def test_an_endless_text_field_is_refused_without_gathering_it() -> None:
    """A "field" of a gigabyte is a `400` at its first bytes past the cap, whether the
    route wants it or not: at most two pieces are read, and none is kept whole."""
    gathered: list[int] = []

    def endless(name: bytes) -> Iterable[bytes]:
        yield b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="' + name
        yield b'"\r\n\r\n'
        for _ in range(16_000):  # 1 GB, were it all read
            gathered.append(1)
            yield b"x" * 65536

    for name in (b"settings", b"junk"):
        gathered.clear()
        with pytest.raises(HTTPException) as refused:
            _texts(endless(name), "settings")
        assert refused.value.status_code == 400
        assert f"{name.decode()!r} is over" in refused.value.detail
        assert len(gathered) <= 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_text(b"a", b"1") * 1 + _text(b"b", b"2") + _text(b"c", b"3") + _text(b"d", b"4")
         + _text(b"e", b"5") + FILE + _end(), "more than 4 fields"),
        (_text(b"settings", b"{}") + _text(b"settings", b"{}") + FILE + _end(), "once"),
        (_part(b'Content-Disposition: form-data; name="settings"; filename="s.json"', b"{}")
         + FILE + _end(), "as a text field"),
        (_text(b"settings", b"\xff\xfe") + FILE + _end(), "not UTF-8"),
    ],
    ids=["too many fields", "a field twice", "a field as a file", "not text"],
)  # fmt: skip
def test_hostile_text_fields_are_refused(body: bytes, words: str) -> None:
    with pytest.raises(HTTPException) as refused:
        _texts([body], "settings")
    assert refused.value.status_code == 400
    assert words in refused.value.detail
