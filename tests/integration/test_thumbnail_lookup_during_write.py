"""A frame's thumbnail answers while a long write holds the database.

Looking up the frame a thumbnail is of (its job, its row, Blender's preview of it) only
reads, so it takes a read transaction: on SQLite a write transaction takes this
process's write lock and the database's, and a thumbnail looked up in one waited for a
big job's deletion or a purge to finish, and queued among the writers meanwhile.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpx
import pytest

from tests.integration.conftest import Farm
from tests.integration.test_heavy_work_turns import exr_frame
from tests.integration.test_reads_without_write_lock import WAIT, write_held
from tests.integration.test_scheduling import manager_of


def test_a_thumbnail_is_made_and_served_while_a_write_is_held(farm: Farm) -> None:
    url = exr_frame(farm)
    pool = ThreadPoolExecutor(1)
    try:
        with write_held(manager_of(farm)):
            asked = pool.submit(lambda: farm.client.get(url, headers=farm.admin))
            try:
                answer: httpx.Response = asked.result(timeout=WAIT)
            except FutureTimeout:
                pytest.fail(f"the thumbnail waited for a write it does not need ({WAIT} s)")
    finally:
        pool.shutdown(wait=False)  # a stuck request ends once the write lets go
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
