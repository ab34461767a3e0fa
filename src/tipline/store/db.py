"""Engines, sessions and migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings, get_settings
from tipline.errors import ConfigError, DatabaseUnavailableError

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | None = None, *, settings: Settings | None = None) -> Engine:
    """An engine for ``url`` (or the configured URL); creates the SQLite folder."""
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
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    raise ConfigError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


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


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with connect(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()
