"""What every request handler needs: settings, database sessions, metrics, services.

One :class:`ServiceContext` per app (so one per uvicorn worker). Handlers get it with
:func:`get_ctx` as a FastAPI dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tipline.api.metrics import Metrics
from tipline.config import Settings
from tipline.services.database import Database, open_database
from tipline.services.vault import Vault


@dataclass
class ServiceContext:
    """Per-process service state shared by every request."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    metrics: Metrics
    #: the services' database handle (``engine`` and ``sessions`` are its parts)
    db: Database
    #: lazily built services (matcher, ...), keyed by name
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, metrics: Metrics, migrate: bool) -> ServiceContext:
        """Open the database for ``settings``; apply migrations when ``migrate``."""
        db = open_database(settings=settings, migrate=migrate)
        return cls(
            settings=settings,
            engine=db.engine,
            sessions=db.sessions,
            metrics=metrics,
            db=db,
        )

    def vault(self) -> Vault:
        """The evidence vault of these settings (built on first use; VaultKeyError when
        a configured master key is malformed)."""
        found = self.services.get("vault")
        if not isinstance(found, Vault):
            found = self.services.setdefault("vault", Vault.from_settings(self.settings))
        assert isinstance(found, Vault)
        return found

    def database_ready(self) -> bool:
        """True when the database answers a trivial query."""
        return self.db.ready()

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
