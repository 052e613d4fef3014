"""The one file of a `multipart/form-data` body, read by its route as the body arrives.

A route with an `UploadFile` parameter gets its form only after FastAPI has received
every byte of it (spooled to a temporary file past 1 MiB), before the route, or even
the caller's credentials, are looked at: an upload the route then refuses (over the
sender's quota) has been sent and spooled whole first. A route that takes its body with
`FormFile` instead decides before reading a byte (the declared `Content-Length`), after
the file's name and first bytes (`filename`, `peek`), and at every chunk of the file
while it streams into the blob store (`chunks`): what it refuses is not received
further, and nothing of it is kept.

A form's small text fields (a job's `settings`, an input's `path`) are collected when the
route names them (`texts`), wherever they come: those before the file are known once its
name is (`filename`), so a route can check them before a byte of the file is received;
those after it once the file has been read (`chunks` reads to the body's end). Every
text field is held to `TEXT_MAX_BYTES`, and a form to `MAX_TEXT_FIELDS` of them: a
hostile "field" of a gigabyte is a `400` at its first bytes past the cap, not gathered
in memory (Starlette's form parser, which these routes used before, held a field to
1 MiB and, for a job, the form to 4 fields). Together they stay well within
`limits.MULTIPART_SLACK`, the framing a declared length is allowed beside its file.
Other fields are read past and ignored, as are files in other fields; a second file
in the field is a `400`, as is a text field named in `texts` sent as a file or twice, a
body that is not a multipart form, or one that ends before its file does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:  # a TypedDict the module defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

TEXT_MAX_BYTES = 64 * 1024
"""The most bytes of one text field: a job's settings are a few hundred bytes of JSON,
an input's path at most 1024 characters."""
MAX_TEXT_FIELDS = 4
"""The most text fields a form may have, named in `texts` or not."""


def form_schema(
    texts: Mapping[str, Mapping[str, object]] | None = None, required: Collection[str] = ()
) -> dict[str, object]:
    """The JSON Schema of a form of the file field `file` and these text fields (name →
    schema), of which `required` must be sent."""
    return {
        "type": "object",
        "required": ["file", *required],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            **{name: dict(schema) for name, schema in (texts or {}).items()},
        },
    }


def form_body(
    texts: Mapping[str, Mapping[str, object]] | None = None, required: Collection[str] = ()
) -> dict[str, object]:
    """OpenAPI (a route's `openapi_extra`) for a body of `form_schema(texts, required)`:
    FastAPI infers none for a route that reads its own body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form_schema(texts, required)}},
        }
    }


FORM_FILE_BODY = form_body()
"""OpenAPI for a form of one file field `file`."""


def _bad(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail)


def _decoded(raw: bytes) -> str:
    """A header parameter as Starlette's form parser decodes it (UTF-8, else Latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FormFile:
    """The file sent in form field `field` of a request's multipart body.

    `body` is the body source the parser reads (`request.stream()`, inside
    `uploads.receiving`); it is read only as far as the caller asks: `filename` reads to
    the file's part headers, `peek` to its first bytes, `chunks` through the file and
    then to the end of the body. `texts`: the text fields to collect (`text`)."""

    def __init__(
        self,
        content_type: str,
        body: AsyncIterator[bytes],
        field: str = "file",
        texts: Collection[str] = (),
    ) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise _bad(f"send the file as multipart/form-data, in the field {field!r}")
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except (ValueError, FormParserError) as error:  # a boundary too long, say
            raise _bad(f"bad multipart boundary: {error}") from error
        self._body = body
        self._field = field
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._in_file = False
        self._name: str | None = None
        self._ended = False
        """The file's part is over (its closing boundary was parsed)."""
        self._pending: list[bytes] = []
        """The file's bytes parsed and not handed out yet."""
        self._pending_bytes = 0
        self._wanted = frozenset(texts)
        self._texts: dict[str, str] = {}
        """The text fields in `texts` read so far, by name."""
        self._text_fields = 0
        self._in_text = False
        self._text_name = ""
        """The text field being read."""
        self._keep = False
        """It is one of `texts`: its bytes are kept (else read past)."""
        self._text: list[bytes] = []
        self._text_bytes = 0

    # The parser's callbacks: they run inside `MultipartParser.write`.

    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _decoded(options.get(b"name", b""))
        if b"filename" not in options:
            self._begin_text(name)
            return
        if name in self._wanted:
            raise _bad(f"send {name!r} as a text field, not as a file")
        if name != self._field:
            return  # another field's file: read past
        if self._name is not None:
            raise _bad(f"send one file in the field {self._field!r}, not several")
        self._name = _decoded(options[b"filename"])
        self._in_file = True

    def _begin_text(self, name: str) -> None:
        self._text_fields += 1
        if self._text_fields > MAX_TEXT_FIELDS:
            raise _bad(f"the form has more than {MAX_TEXT_FIELDS} fields besides its file")
        if name in self._texts:
            raise _bad(f"send the field {name!r} once, not several times")
        self._in_text = True
        self._text_name = name
        self._keep = name in self._wanted
        self._text.clear()
        self._text_bytes = 0

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and end > start:
            self._pending.append(data[start:end])
            self._pending_bytes += end - start
        elif self._in_text and end > start:
            self._text_bytes += end - start
            if self._text_bytes > TEXT_MAX_BYTES:
                raise _bad(f"the form field {self._text_name!r} is over {TEXT_MAX_BYTES} bytes")
            if self._keep:
                self._text.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._ended = True
        elif self._in_text:
            self._in_text = False
            if self._keep:
                name = self._text_name
                try:
                    self._texts[name] = b"".join(self._text).decode("utf-8")
                except UnicodeDecodeError as error:
                    raise _bad(f"the form field {name!r} is not UTF-8 text") from error
            self._text.clear()

    async def _read_more(self) -> bool:
        """Parse the body's next chunk; False once the body is over."""
        try:
            chunk = await anext(self._body)
        except StopAsyncIteration:
            return False
        try:
            self._parser.write(chunk)
        except FormParserError as error:
            raise _bad(f"the multipart form is malformed: {error}") from error
        return True

    async def filename(self) -> str:
        """The file's name as its sender gave it (checked by the caller: `uploads.checked_name`),
        reading the body up to the file's part headers; `400` if it has no such file."""
        while self._name is None:
            if not await self._read_more():
                raise _bad(f"multipart field {self._field!r} (a file) is required")
        return self._name

    def text(self, name: str) -> str | None:
        """The text field `name` (one of `texts`), if the body read so far had it: after
        `filename`, the fields sent before the file; once `chunks` is over, all of them."""
        return self._texts.get(name)

    async def peek(self, size: int) -> bytes:
        """The file's first `size` bytes (fewer if it is shorter), which `chunks` still
        yields."""
        await self.filename()
        while self._pending_bytes < size and not self._ended:
            if not await self._read_more():
                break  # `chunks` says what is wrong with the body
        return b"".join(self._pending)[:size]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive, then the rest of the body read (and parsed)
        to its end; `400` if the body ends before the file does."""
        await self.filename()
        while True:
            if self._pending:
                data = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                yield data
            if self._ended:
                break
            if not await self._read_more():
                raise _bad("the multipart form ended before its file did")
        while await self._read_more():
            pass
