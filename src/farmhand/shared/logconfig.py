"""Structured logging for every farmhand process: key=value lines (or JSON lines).

Log events carry `job_id`, `task_id` and `worker` as fields so a farm's logs can be
filtered by what they are about; `FARMHAND_LOG_JSON=1` switches to one JSON object a line
for log shippers.

Farmhand logs with structlog, but the libraries under it log with the standard library:
Alembic's database upgrade, uvicorn's server and access lines, SQLAlchemy's warnings.
Those records go through the same processors and the same renderer (`stdlib_formatter`),
so a log pipeline gets one format from a process, not farmhand's lines in JSON and the
rest as text it cannot parse. Uvicorn configures its own loggers when it starts a server
(with handlers of its own that print text); `configure_logging` takes them over when it
runs after that (the processes of `farmhand manager --processes N` build their app, and
so configure logging, once uvicorn has started them), and `uvicorn_log_config` is what
a process hands uvicorn so that it never installs them (`uvicorn.run(log_config=…)`,
or the `--log-config` file of `python -m uvicorn`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""Uvicorn's loggers: its own configuration gives them handlers that print text."""

QUIET_LOGGERS = {"httpx": "WARNING", "httpcore": "WARNING", "alembic.runtime.plugins": "WARNING"}
"""Loggers whose information lines drown what matters: one line per HTTP request (the
worker's agent logs its own calls), and Alembic's plugin list, at every import.
"""

_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
"""The arguments of a `uvicorn.access` record, in order, as fields of its line."""


def json_lines_wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether `FARMHAND_LOG_JSON` asks for JSON lines (set, and not `0`)."""
    env = os.environ if env is None else env
    return env.get("FARMHAND_LOG_JSON", "") not in ("", "0")


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


def _renderer(json_lines: bool) -> structlog.typing.Processor:
    if json_lines:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def _processors(tracer: structlog.typing.Processor | None) -> list[structlog.typing.Processor]:
    """What every line gets before it is rendered, farmhand's or a library's."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        *([tracer] if tracer is not None else []),
    ]


def _library_fields(process: str) -> structlog.typing.Processor:
    """A library's record as fields: the logger's name, the process (a thread the
    library started has not seen `bind_contextvars`), and an access line's parts."""

    def add(
        _logger: object, _method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        record = event.get("_record")
        arguments = event.pop("positional_args", ())
        if isinstance(record, logging.LogRecord):
            event.setdefault("logger", record.name)
            if record.name == "uvicorn.access" and len(arguments) == len(_ACCESS_FIELDS):
                event.update(zip(_ACCESS_FIELDS, arguments, strict=True))
        event.setdefault("process", process)
        return event

    return add


def stdlib_formatter(
    process: str, json_lines: bool | None = None, traced: bool = False
) -> logging.Formatter:
    """A `logging` formatter that renders a library's record as farmhand renders its own
    lines: same fields, same format (JSON with `FARMHAND_LOG_JSON`, else key=value).

    Named in `uvicorn_log_config` by its import path (`()`), so a process that never ran
    `configure_logging` (the supervisor `python -m uvicorn` of several manager processes)
    formats uvicorn's lines this way too."""
    if json_lines is None:
        json_lines = json_lines_wanted()
    tracer = trace_ids() if traced else None
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_processors(tracer), _library_fields(process)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(json_lines),
        ],
        pass_foreign_args=True,
    )


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler farmhand installs (on stderr): a second `configure_logging`, or
    uvicorn's configuration after it, replaces it rather than adding one more."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # as structlog's lines: wherever stderr is now
        super().emit(record)


def uvicorn_log_config(process: str, level: str = "INFO", traced: bool = False) -> dict[str, Any]:
    """The `log_config` a farmhand server hands uvicorn (`logging.config.dictConfig`).

    Uvicorn's default gives its loggers handlers that print text, whatever farmhand's
    own lines are; this leaves them none, so their records reach the root handler, which
    formats them as farmhand's lines (`stdlib_formatter`). As a dict it is
    `uvicorn.run(log_config=…)`; written to a `.json` file, `python -m uvicorn
    --log-config FILE` (the supervisor of several processes, and each process it starts).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "farmhand": {
                "()": f"{__name__}.stdlib_formatter",
                "process": process,
                "traced": traced,
            },
        },
        "handlers": {"stderr": {"()": f"{__name__}.StderrHandler", "formatter": "farmhand"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
            **{name: {"level": level} for name, level in QUIET_LOGGERS.items()},
        },
    }


def uvicorn_log_config_file(
    folder: Path, process: str, level: str = "INFO", traced: bool = False
) -> Path:
    """`uvicorn_log_config` written to `folder` as the `.json` file `python -m uvicorn
    --log-config` reads (the supervisor, and each process it starts or restarts, which
    is why it is kept in a folder that lasts as long as the server: the data dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{process}-logging.json"
    path.write_text(json.dumps(uvicorn_log_config(process, level, traced), indent=2) + "\n")
    return path


def configure_logging(
    process: str, level: str = "INFO", json_lines: bool | None = None, traced: bool = False
) -> None:
    """`traced`: add the current span's ids to each line (the manager, a FastAPI app)."""
    tracer = trace_ids() if traced else None
    if json_lines is None:
        json_lines = json_lines_wanted()
    structlog.configure(
        processors=[*_processors(tracer), _renderer(json_lines)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(stdlib_formatter(process, json_lines, traced))
    root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn may have configured its loggers already (it starts the processes of
    # `farmhand manager --processes N` before their app configures logging): their
    # handlers would print text, so their records go to the root handler instead. A
    # logger uvicorn silenced (no handlers, not propagating: `--no-access-log`) stays
    # silent: uvicorn writes access lines only to a logger that has somewhere to go.
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True
