"""Mount the web UI into an app: its routes under ``/web`` and its static files. The
provider role serves the review pages, the clearinghouse role the analyst's desk, and
``both`` serves both.

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
from tipline.web import (
    pages_auth,
    pages_desk,
    pages_desk_actions,
    pages_exchanges,
    pages_review,
)
from tipline.web.context import HERE, PREFIX, WebContext, make_templates


def mount(app: FastAPI, *, db: Database, settings: Settings, vault: Callable[[], Vault]) -> None:
    """Add the web UI to ``app``."""
    templates = make_templates()
    # review reads the provider's matches; the analyst's desk the clearinghouse's reports
    review_enabled = settings.role != "clearinghouse"
    desk_enabled = settings.role != "provider"
    templates.globals["review_enabled"] = review_enabled
    templates.globals["desk_enabled"] = desk_enabled
    app.state.web = WebContext(
        db=db,
        settings=settings,
        vault=vault,
        templates=templates,
        review_enabled=review_enabled,
        desk_enabled=desk_enabled,
    )
    app.include_router(pages_auth.router)
    if review_enabled:
        app.include_router(pages_review.router)
        app.include_router(pages_exchanges.router)
    if desk_enabled:
        app.include_router(pages_desk.router)
        app.include_router(pages_desk_actions.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="web-static")
