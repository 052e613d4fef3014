"""The manager's downloads (a job's file, a frame, its zips, a runner's input) answer
`HEAD` as they answer `GET`, without a body.

Why: FastAPI routes a `GET` route's path for `GET` only, so `curl -I`, a download
manager, or a script checking a file's size and `ETag` before fetching it got `405`.
Now a `HEAD` gets the status and headers the `GET` would (`Content-Length`, `ETag`,
`Accept-Ranges`, `Content-Disposition`; `206` with `Content-Range` for a `Range`, `416`
past the end) and no body, the blob neither opened nor read (a zip's length and ETag
come from its plan, `storage/zipplan.py`, without building it).

The two halves, one home each:

- `download_route`: registers a route for `GET` and `HEAD` alike, so both go through
  the same function, its dependencies and its checks: who may see the job, which file
  it is. A `HEAD` is refused exactly as the `GET` (`401`, `404`), so it tells nobody
  what the `GET` would not.
- `download`: the answer, which the route builds once its headers are known: for a
  `HEAD` those headers and no body, the content never made; for a `GET` the content
  streamed (`ClosingStreamingResponse`).

`HEAD` stays out of the OpenAPI schema (as `HEAD /api/uploads/{id}` does): it is the
`GET` operation's, documented once, in docs/API.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.responses import ContentStream, StreamingResponse

from farmhand.manager.api.ranges import Part
from farmhand.manager.api.streaming import ClosingStreamingResponse
from farmhand.manager.context import ManagerContext

log = structlog.get_logger(__name__)

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def is_head(request: Request) -> bool:
    """Whether `request` is a `HEAD`: its answer's headers only (see the module)."""
    return request.method == "HEAD"


def download_route(
    router: APIRouter, path: str, **options: Any
) -> Callable[[_Endpoint], _Endpoint]:
    """`router.get(path, **options)` that also answers `HEAD` by the same function (not
    in the schema). The function builds its answer with `download`."""

    def register(endpoint: _Endpoint) -> _Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["HEAD"],
            name=f"{endpoint.__name__}_head",
            include_in_schema=False,
            response_class=options.get("response_class", StreamingResponse),
        )
        return router.get(path, **options)(endpoint)

    return register


def download(
    request: Request,
    content: Callable[[], ContentStream],
    *,
    status_code: int,
    media_type: str,
    headers: Mapping[str, str],
    streamed: Callable[..., StreamingResponse] = ClosingStreamingResponse,
) -> Response:
    """A download's answer: `content()` streamed by `streamed` with `status_code`,
    `media_type` and `headers` for a `GET`; for a `HEAD` the same status and headers
    without a body, `content` never called (no blob opened, no zip built)."""
    if not is_head(request):
        return streamed(content(), status_code=status_code, media_type=media_type, headers=headers)
    answer = Response(status_code=status_code, media_type=media_type, headers=dict(headers))
    if not any(name.lower() == "content-length" for name in headers):
        # The GET streams a file of unknown length without one: not "0 bytes".
        del answer.headers["content-length"]
    return answer


def blob_download(
    context: ManagerContext,
    request: Request,
    job_id: int,
    sha: str,
    name: str,
    part: Part,
    headers: dict[str, str],
) -> Response:
    """A stored file's download, job `job_id`'s `name` (`part` of it: `ranges.py`), with
    `headers` besides the part's: a person's (a job's file, a frame) and a runner's
    (its task's input) alike. The blob is opened before the answer begins
    (`BlobStore.iter_bytes`): one deleted since its job was read (the job purged
    meanwhile) is a `404` and a WARNING line, not a traceback of an unhandled error in the
    middle of the answer; once open, it is sent whole whatever deletes it. A `HEAD` only
    looks for the blob, so that one gone is the same `404`."""
    try:
        if is_head(request):
            if not context.blobs.has(sha):
                raise FileNotFoundError
            content: Iterator[bytes] = iter(())  # never sent: a HEAD has no body
        else:
            content = context.blobs.iter_bytes(sha, part.start, part.length)
    except FileNotFoundError:
        log.warning(
            "download refused: its file was deleted meanwhile", job=job_id, file=name, blob=sha
        )
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"job {job_id}'s file {name!r} was deleted meanwhile"
        ) from None
    return download(
        request,
        lambda: content,
        status_code=part.status_code,
        media_type="application/octet-stream",
        headers={**headers, **part.headers},
    )
