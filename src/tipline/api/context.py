"""What every request handler needs: settings, database sessions, metrics, services.

One :class:`ServiceContext` per app (so one per uvicorn worker). Handlers get it with
:func:`get_ctx` as a FastAPI dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tipline.api.metrics import Metrics
from tipline.config import Settings
from tipline.services.banks import Database
from tipline.store.db import make_engine, session_factory, upgrade


@dataclass
class ServiceContext:
    """Per-process service state shared by every request."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    metrics: Metrics
    #: the banks service's handle, sharing this engine
    banks: Database
    #: lazily built services (matcher, ...), keyed by name
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, metrics: Metrics, migrate: bool) -> ServiceContext:
        """Open the engine for ``settings``; apply migrations when ``migrate``."""
        from tipline.store.models import import_all_models

        import_all_models()
        engine = make_engine(settings=settings)
        if migrate:
            upgrade(engine)
        sessions = session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            metrics=metrics,
            banks=Database(engine, sessions, settings.resolved_database_url()),
        )

    def database_ready(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def close(self) -> None:
        """Release pooled connections and close services that hold resources."""
        for service in self.services.values():
            closer = getattr(service, "close", None)
            if callable(closer):
                closer()
        self.engine.dispose()


async def get_ctx(request: Request) -> ServiceContext:
    """FastAPI dependency: the app's :class:`ServiceContext`."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx
