"""The services' handle on the database: what adapters open once and pass to services.

Adapters (``cli``, ``api``, ``demo``) never import :mod:`tipline.store`; they open a
:class:`Database` here and hand it (or its ``sessions``) to service functions, which own
their transactions. The bootstrap itself (models, engine, migrations) is written once,
in :func:`tipline.store.db.open_database`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings, get_settings
from tipline.store import db as store_db

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Database:
    """An engine and session factory on the configured database (migrated)."""

    engine: Engine
    sessions: sessionmaker[Session]
    url: str

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def with_async_commit(self, settings: Settings | None = None) -> Database:
        """A handle on the same database whose commits do not wait for the disk unless
        a transaction asks (:func:`tipline.store.db.commit_durably`): its own engine on
        PostgreSQL (close it too), this handle on SQLite (which commits so already)."""
        if self.engine.dialect.name != "postgresql":
            return self
        return open_database(self.url, settings=settings, migrate=False, async_commit=True)

    def ready(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


def open_database(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    migrate: bool = True,
    async_commit: bool = False,
) -> Database:
    """Open the database (``url`` or the settings' URL), applying migrations once per
    process on first use. ``async_commit``: on PostgreSQL, commits do not wait for the
    disk unless a transaction asks (:func:`tipline.store.db.commit_durably`)."""
    settings = settings or get_settings()
    url = url or settings.resolved_database_url()
    engine = store_db.open_database(
        url, settings=settings, migrate=migrate, async_commit=async_commit
    )
    return Database(engine, store_db.session_factory(engine), url)


def upgrade_database(settings: Settings | None = None) -> tuple[str, list[str]]:
    """Apply every pending migration (always, even if this process migrated before);
    return the URL (password hidden) and the revision of each branch head."""
    settings = settings or get_settings()
    url = settings.resolved_database_url()
    engine = store_db.open_database(url, settings=settings, migrate=False)
    try:
        store_db.apply_migrations(engine)
        heads = store_db.current_heads(engine)
    finally:
        engine.dispose()
    return make_url(url).render_as_string(hide_password=True), heads


def in_transaction(
    sessions: sessionmaker[Session],
    work: Callable[Concatenate[Session, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run one service function that writes in the caller's session, in a transaction
    of its own: committed when it returns, rolled back on any error."""
    with store_db.transaction(sessions) as session:
        return work(session, *args, **kwargs)
