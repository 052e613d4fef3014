"""Structured logging for every farmhand process: key=value lines (or JSON lines).

Log events carry `job_id`, `task_id` and `worker` as fields so a farm's logs can be
filtered by what they are about; `FARMHAND_LOG_JSON=1` switches to one JSON object a line
for log shippers.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def trace_ids() -> structlog.typing.Processor | None:
    """A processor adding `trace_id` and `span_id` of the OpenTelemetry span a line was
    logged in, when tracing is on (docs/API.md, *Tracing*): a log line leads to its
    request's trace. None without OpenTelemetry (FastAPI before 0.165 goes without)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None

    def add_trace_ids(
        _logger: object, _method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
            event["span_id"] = format(context.span_id, "016x")
        return event

    return add_trace_ids


def configure_logging(
    process: str, level: str = "INFO", json_lines: bool | None = None, traced: bool = False
) -> None:
    """`traced`: add the current span's ids to each line (the manager, a FastAPI app)."""
    tracer = trace_ids() if traced else None
    if json_lines is None:
        json_lines = os.environ.get("FARMHAND_LOG_JSON", "") not in ("", "0")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *([tracer] if tracer is not None else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    # One line per HTTP request drowns what matters; the agent logs its own calls.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
