"""Mount the web UI into an app: its routes under ``/web`` and its static files.

The API's app factory calls :func:`mount` by module name (as it loads its route
modules), handing over the database, settings and vault it already opened: both
adapters share one process state, and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tipline.config import Settings
from tipline.services.database import Database
from tipline.services.vault import Vault
from tipline.web import pages_auth, pages_desk, pages_exchanges, pages_review
from tipline.web.context import HERE, PREFIX, WebContext, make_templates


def mount(app: FastAPI, *, db: Database, settings: Settings, vault: Callable[[], Vault]) -> None:
    """Add the web UI to ``app``."""
    templates = make_templates()
    # the analyst's desk reads the clearinghouse's reports: only where both roles run
    templates.globals["desk_enabled"] = settings.role == "both"
    app.state.web = WebContext(db=db, settings=settings, vault=vault, templates=templates)
    app.include_router(pages_auth.router)
    app.include_router(pages_review.router)
    app.include_router(pages_exchanges.router)
    if settings.role == "both":
        app.include_router(pages_desk.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="web-static")
