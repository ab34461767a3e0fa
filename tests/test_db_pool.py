"""The PostgreSQL pool's check before handing out a connection (store/db.py IdlePing):
a connection the server dropped is replaced, a recently used live one is not pinged."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from tipline.store.db import IdlePing, make_engine

pytestmark = pytest.mark.postgres


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin(postgres_admin_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_admin_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pooled(postgres_admin_url: str) -> Iterator[tuple[Engine, IdlePing, Clock]]:
    engine = make_engine(postgres_admin_url)
    clock = Clock()
    ping = IdlePing.install(engine, idle_seconds=5.0, clock=clock)
    yield engine, ping, clock
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(admin: Engine, pid: int) -> None:
    """Terminate backend ``pid`` and wait (on the condition, bounded) until it is gone."""
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        conn.commit()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            gone = not conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).scalar()
            conn.commit()
            if gone:
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} still running")


def _pooled_socket(engine: Engine) -> Any:
    """The driver connection of the one connection in the pool (checked out and back)."""
    raw = engine.raw_connection()
    try:
        return raw.driver_connection
    finally:
        raw.close()


def _wait_readable(driver_connection: Any) -> None:
    readable, _, _ = select.select([driver_connection.fileno()], [], [], 60)
    assert readable, "the server's close never reached the pooled socket"


def test_live_connection_used_recently_is_not_pinged(
    pooled: tuple[Engine, IdlePing, Clock],
) -> None:
    engine, ping, clock = pooled
    pid = _backend_pid(engine)  # a new connection: not pinged
    for _ in range(5):
        clock.now += 4.9
        assert _backend_pid(engine) == pid
    assert ping.pings == 0
    clock.now += 5.1  # idle past the threshold: pinged, alive, kept
    assert _backend_pid(engine) == pid
    assert (ping.pings, ping.dropped) == (1, 0)


def test_connection_dropped_while_idle_past_threshold_is_replaced(
    pooled: tuple[Engine, IdlePing, Clock], admin: Engine
) -> None:
    engine, ping, clock = pooled
    pid = _backend_pid(engine)
    _terminate(admin, pid)
    clock.now += 60
    new_pid = _backend_pid(engine)  # no error: the ping found it dead, a new one is used
    assert new_pid != pid
    assert (ping.pings, ping.dropped) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_connection_dropped_within_threshold_is_replaced_once_its_socket_says_so(
    pooled: tuple[Engine, IdlePing, Clock], admin: Engine
) -> None:
    engine, ping, _clock = pooled
    pid = _backend_pid(engine)
    driver = _pooled_socket(engine)
    _terminate(admin, pid)
    _wait_readable(driver)  # the server's FATAL message and EOF have arrived
    # the clock has not moved: the readable socket alone makes the pool ping
    assert _backend_pid(engine) != pid
    assert (ping.pings, ping.dropped) == (1, 1)


def test_connection_dropped_after_checkout_fails_one_call_then_the_pool_recovers(
    pooled: tuple[Engine, IdlePing, Clock], admin: Engine
) -> None:
    engine, _ping, _clock = pooled
    pid = _backend_pid(engine)
    with engine.connect() as conn:
        assert int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()) == pid
        conn.commit()
        _terminate(admin, pid)
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text("SELECT 1"))
        assert caught.value.connection_invalidated
    # SQLAlchemy invalidated it: the next checkout connects anew and works
    assert _backend_pid(engine) != pid
