"""A PostgreSQL server that vanished without refusing connections (a host down, a
network blackhole) must fail a connection attempt after a while, so that requests get
their 503 instead of hanging with it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from farmhand.manager.db import engine as engines
from farmhand.manager.db.presence import unavailable


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose listener completes TCP handshakes (the kernel does) and then never
    says a word, as a server whose process hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_connection_to_a_silent_server_gives_up(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engines, "POSTGRESQL_CONNECT_TIMEOUT", 1)
    engine = engines.make_engine(f"postgresql+psycopg://fh:pw@127.0.0.1:{silent_server}/farm")
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(timeout=120)  # libpq's default waits for ever: this only bounds a failure
    assert not attempt.is_alive(), "the connection attempt still hangs"
    assert len(outcome) == 1 and isinstance(outcome[0], OperationalError), outcome
    assert unavailable(outcome[0]), "counted as the database being away: a 503"
    engine.dispose()


def test_a_timeout_in_the_url_is_kept() -> None:
    engine = engines.make_engine("postgresql+psycopg://fh@127.0.0.1:1/farm?connect_timeout=3")
    _args, params = engine.dialect.create_connect_args(engine.url)
    assert str(params.get("connect_timeout")) == "3"
    engine.dispose()
