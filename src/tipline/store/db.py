"""Engines, sessions and migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    any_,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings, get_settings
from tipline.errors import ConfigError, DatabaseUnavailableError

_MIGRATIONS = Path(__file__).parent / "migrations"
# an arbitrary constant: serializes `upgrade` across processes on PostgreSQL
_MIGRATION_LOCK = 7_302_145_001
#: URLs this process has migrated (later opens skip the Alembic round trips)
_MIGRATED: set[str] = set()
_MIGRATED_LOCK = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _pg_async_commit(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit = off")
    cursor.close()
    dbapi_connection.commit()


def make_engine(
    url: str | None = None, *, settings: Settings | None = None, async_commit: bool = False
) -> Engine:
    """An engine for ``url`` (or the configured URL); creates the SQLite folder.

    ``async_commit``: on PostgreSQL, its transactions commit without waiting for their
    WAL to reach the disk (a crash of the server or machine can lose the last few
    hundred milliseconds of them, never half of one, and a later durable commit
    flushes every earlier one: :func:`commit_durably`). SQLite's WAL mode with
    ``synchronous=NORMAL`` already commits this way."""
    settings = settings or get_settings()
    url = url or settings.resolved_database_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = "not a folder" if folder.exists() else exc.strerror or str(exc)
                raise ConfigError(
                    f"cannot create the database folder {folder}: {reason}"
                    " (check TIPLINE_DATA_DIR or TIPLINE_DATABASE_URL)"
                ) from None
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        engine = create_engine(url, pool_size=10, max_overflow=20)
        IdlePing.install(engine)
        if async_commit:
            event.listen(engine, "connect", _pg_async_commit)
        return engine
    raise ConfigError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


#: a pooled connection idle longer than this (seconds) is pinged before it is handed out
IDLE_PING_SECONDS = 5.0
_CHECKED_IN = "tipline.checked_in"


class IdlePing:
    """The pool's check of a connection before handing it out (PostgreSQL engines).

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout. Here a
    connection is pinged only when it sat in the pool for longer than ``idle_seconds``
    (by ``clock``, from its last checkin), or when its socket is readable while it sat
    idle: the server closing it (``pg_terminate_backend``, a restart) leaves the
    socket readable (the FATAL message and EOF), which one ``poll`` with no wait sees
    without a round trip. A failed ping invalidates the pool's older connections and
    the checkout takes a fresh one (SQLAlchemy's own pre-ping does the same), so a
    connection the server dropped is replaced, never handed out. A new connection is
    not pinged.

    What the check cannot see is a connection dropped after it was handed out (or
    whose EOF had not arrived yet): its first statement raises ``DBAPIError`` with
    ``connection_invalidated`` set, SQLAlchemy invalidates it and the pool's older
    connections, and the next checkout works. That one call fails; it is not retried.
    """

    def __init__(
        self,
        dialect: Any,
        *,
        idle_seconds: float = IDLE_PING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dialect = dialect
        self.idle_seconds = idle_seconds
        self.clock = clock
        #: pings sent, and connections they found dropped (for tests and benches)
        self.pings = 0
        self.dropped = 0

    @classmethod
    def install(
        cls,
        engine: Engine,
        *,
        idle_seconds: float = IDLE_PING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> IdlePing:
        """Listen on ``engine``'s pool; the engine keeps it as ``engine.idle_ping``
        (replacing one installed before)."""
        old: IdlePing | None = getattr(engine, "idle_ping", None)
        if old is not None:
            event.remove(engine.pool, "checkin", old._checkin)
            event.remove(engine.pool, "checkout", old._checkout)
        ping = cls(engine.dialect, idle_seconds=idle_seconds, clock=clock)
        event.listen(engine.pool, "checkin", ping._checkin)
        event.listen(engine.pool, "checkout", ping._checkout)
        engine.idle_ping = ping  # type: ignore[attr-defined]
        return ping

    def _checkin(self, _dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = self.clock()

    def _checkout(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_CHECKED_IN, None)
        if since is None:  # new (or replaced) connection: nothing to check
            return
        if self.clock() - since <= self.idle_seconds and not _readable(dbapi_connection):
            return
        self.pings += 1
        dialect = self._dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            self.dropped += 1
            raise InvalidatePoolError(f"pooled connection dropped: {exc}") from exc


def _readable(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read (EOF included),
    without waiting; an unknown socket counts as readable (the caller pings)."""
    try:
        fd = dbapi_connection.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except Exception:  # no socket, or the driver's error for a closed connection
        return True


def unavailable(engine: Engine, exc: BaseException) -> DatabaseUnavailableError:
    """A one-line :class:`DatabaseUnavailableError` for a failed connection to ``engine``
    (the URL without its password, and the driver's first line of explanation)."""
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(str(orig).strip().splitlines()[0].split()) if str(orig).strip() else ""
    reason = reason.removeprefix("connection failed: ") or type(orig).__name__
    shown = engine.url.render_as_string(hide_password=True)
    hint = " (check TIPLINE_DATA_DIR)" if engine.dialect.name == "sqlite" else ""
    return DatabaseUnavailableError(f"database {shown} unavailable: {reason}{hint}")


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """``engine.connect()``, where failing to connect at all raises
    :class:`DatabaseUnavailableError` (errors after connecting pass through unchanged)."""
    try:
        connection = engine.connect()
    except (DBAPIError, OSError) as exc:
        raise unavailable(engine, exc) from None
    with connection:
        yield connection


#: makes the transaction's commit wait for its WAL to reach the disk (PostgreSQL)
_DURABLE = text("SET LOCAL synchronous_commit = on")


def commit_durably(session: Session) -> None:
    """This transaction's commit waits for the disk, also on an ``async_commit``
    engine; being a flush of the whole WAL up to it, it makes every earlier commit
    durable too (PostgreSQL; nothing to do on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_DURABLE)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` (objects stay usable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Apply Alembic migrations (every branch head by default) on ``engine``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with connect(engine) as connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def apply_migrations(engine: Engine) -> None:
    """Apply every pending migration on ``engine``; on PostgreSQL under an advisory lock,
    so that several processes starting at once do not migrate at the same time."""
    if engine.dialect.name != "postgresql":
        upgrade(engine)
        return
    with connect(engine) as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
        try:
            upgrade(engine)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
            connection.commit()


def open_database(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    migrate: bool = True,
    async_commit: bool = False,
) -> Engine:
    """The one bootstrap: every model imported, an engine on ``url`` (or the settings'
    URL; ``async_commit``: see :func:`make_engine`) and, when ``migrate``, every
    migration applied (once per URL per process)."""
    from tipline.store.models import import_all_models

    settings = settings or get_settings()
    url = url or settings.resolved_database_url()
    import_all_models()
    engine = make_engine(url, settings=settings, async_commit=async_commit)
    if migrate:
        with _MIGRATED_LOCK:
            if url not in _MIGRATED:
                apply_migrations(engine)
                _MIGRATED.add(url)
    return engine


def current_heads(engine: Engine) -> list[str]:
    """The Alembic revisions (one per branch) the database is at, sorted."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return sorted(MigrationContext.configure(connection).get_current_heads())


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with connect(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ids_in(session: Session, column: Any, ids: list[str]) -> ColumnElement[bool]:
    """``column IN ids`` as one array parameter on PostgreSQL (``= ANY(%s)``): the
    statement's text is the same however many ids, so psycopg converts it once and
    caches it instead of parsing a new statement of hundreds of placeholders on every
    call (``IN`` elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(ids)  # type: ignore[no-any-return]
