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


def configure_logging(process: str, level: str = "INFO", json_lines: bool | None = None) -> None:
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
