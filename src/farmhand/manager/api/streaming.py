"""Streamed answers (downloads, zips, the live view) that let go of what they stream as
soon as they end, however they end.

A client that goes away in the middle of one, or is cut off for not reading it
(`farmhand.manager.connections`), ends it with a cancellation. Starlette leaves the
stream's iterator as it was, and the cancellation's traceback keeps its frame, with an
open blob file, a zip being written or a subscription to live events, in a reference
cycle: held until the garbage collector's next full pass, seconds to minutes later (a
full pass costs tens of milliseconds of the event loop, too much to force per client).
`ClosingStreamingResponse` closes it on the way out instead, so a generator's `with` and
`finally` blocks run at once.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import ContentStream, StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStreamingResponse(StreamingResponse):
    """`StreamingResponse` that closes its content when the answer ends (see the module's
    docstring)."""

    def __init__(self, content: ContentStream, *args: Any, **kwargs: Any) -> None:
        super().__init__(content, *args, **kwargs)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The thread-pool wrapper of a plain iterator first, then the iterator: by
            # now no thread runs it (a cancelled step waits for its thread to return).
            await _close(self.body_iterator)
            if self._content is not self.body_iterator:
                await _close(self._content)


async def _close(content: object) -> None:
    aclose = getattr(content, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(content, "close", None)
    if close is not None:
        close()
