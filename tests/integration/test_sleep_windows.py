"""Sleep windows that mean nothing are refused; those saved before still read.

A day listed twice, or a window that starts when it ends (`09:00-09:00`, which never
applies), used to be stored as given. Each is now a 400 naming the problem. An
overnight window (`22:00-06:00`) and the whole day (`00:00-24:00`) stay legal.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from farmhand.cli.runners_cmd import parse_window
from farmhand.manager.db.models import Worker
from tests.integration.conftest import Farm


def put_schedule(farm: Farm, worker_id: int, *windows: dict[str, Any]) -> Any:
    return farm.client.put(
        f"/api/admin/runners/{worker_id}/sleep-schedule",
        headers=farm.admin,
        json={"timezone": "UTC", "windows": list(windows)},
    )


@pytest.fixture
def worker_id(farm: Farm) -> int:
    farm.register_runner("w")
    runners = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return int(runners[0]["id"])


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"days": ["mon", "tue", "mon"], "start": "09:00", "end": "18:00"}, "mon listed more"),
        ({"days": ["sun", "sun"], "start": "22:00", "end": "06:00"}, "sun listed more"),
        ({"days": ["mon"], "start": "09:00", "end": "09:00"}, "from 09:00 to 09:00 never"),
        ({"days": ["mon"], "start": "00:00", "end": "00:00"}, "never applies"),
    ],
)
def test_a_meaningless_window_is_400_naming_the_problem(
    farm: Farm, worker_id: int, window: dict[str, Any], problem: str
) -> None:
    answer = put_schedule(farm, worker_id, window)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("windows.0")
    assert problem in answer.json()["detail"]
    runner = farm.client.get("/api/admin/runners", headers=farm.admin).json()[0]
    assert runner["sleep_schedule"] is None, "nothing was stored"


@pytest.mark.parametrize(
    "window",
    [
        {"days": ["mon", "tue"], "start": "22:00", "end": "06:00"},
        {"days": ["sat", "sun"], "start": "00:00", "end": "24:00"},
        {"days": ["fri"], "start": "18:00", "end": "17:59"},
    ],
)
def test_overnight_and_whole_day_windows_are_taken(
    farm: Farm, worker_id: int, window: dict[str, Any]
) -> None:
    answer = put_schedule(farm, worker_id, window)
    assert answer.status_code == 200, answer.text
    assert answer.json()["sleep_schedule"]["windows"] == [window]


def test_a_schedule_saved_before_the_checks_still_reads(farm: Farm, worker_id: int) -> None:
    """Nothing stored is lost: such a schedule lists, and the sleep loop runs on it."""
    twice = {"days": ["mon", "mon"], "start": "10:00", "end": "11:00"}
    never = {"days": ["tue"], "start": "09:00", "end": "09:00"}
    every_day = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                 "start": "00:00", "end": "24:00"}  # fmt: skip
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        worker = session.scalars(select(Worker).where(Worker.id == worker_id)).one()
        worker.sleep_schedule = {"timezone": "UTC", "windows": [twice, never, every_day],
                                 "when": "after-task"}  # fmt: skip
    answer = farm.client.get("/api/admin/runners", headers=farm.admin)
    assert answer.status_code == 200, answer.text
    windows = answer.json()[0]["sleep_schedule"]["windows"]
    assert windows == [{**twice, "days": ["mon"]}, every_day], "read as what it meant"
    deadline = time.monotonic() + 10
    while farm.client.get("/api/admin/runners", headers=farm.admin).json()[0]["status"] != "asleep":
        assert time.monotonic() < deadline, "the sleep loop never ran on it"
        time.sleep(0.1)


def test_the_cli_says_why_a_window_is_refused() -> None:
    """`farmhand runner sleep --window 'mon 09:00-09:00'` names the real problem, not
    the range of hours (both times are inside it)."""
    with pytest.raises(ValueError, match="from 09:00 to 09:00 never applies") as empty:
        parse_window("mon 09:00-09:00")
    assert "times go from" not in str(empty.value)
    with pytest.raises(ValueError, match="times go from 00:00 to 24:00"):
        parse_window("mon 24:30-01:00")
