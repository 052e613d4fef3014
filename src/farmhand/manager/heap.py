"""The manager's long-lived objects, set aside from Python's garbage collector.

A server process holds a few hundred thousand objects that live as long as it does:
modules, classes, FastAPI's routes and pydantic's schemas, SQLAlchemy's tables. Python's
cyclic collector walks all of them in every full collection, and a request that makes
many containers sets off such collections while it runs. A JSON body of a megabyte of
empty lists (350,000 of them), which FastAPI parses on the event loop before a route
knows who sent it, took 0.9 to 1.2 s of the event loop that way, most of it the collector
walking the manager's own objects; anyone, without a token, could send one after
another (QA, 2026-11-24). `gc.freeze` moves what exists at start to a generation the
collector never walks: the same parse then takes about 0.09 s.

Called once the app is built and before it serves, in the server process (`farmhand
manager`, each of `--processes N`), not in `create_app`: a test process builds many apps,
and freezing there would keep each test's leftovers from ever being collected.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)


def freeze_startup_objects() -> int:
    """Collect what start-up left over, then freeze the rest; how many objects were."""
    gc.collect()  # garbage of the imports and migrations is freed, not kept for good
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("start-up objects set aside from the garbage collector", objects=frozen)
    return frozen
