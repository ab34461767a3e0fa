"""The application factory: one FastAPI app per process, built from one Settings object.

Nothing happens at import time. :func:`create_app` opens the database engine, applies
migrations when asked, and mounts the native ``/v1`` API, the HMA-compatible routes,
health, readiness and ``/metrics``. ``tipline serve`` runs uvicorn with
:func:`serve_app` (settings from the environment, migrations already applied by the
parent process so several workers never race on them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tipline import __version__
from tipline.api import problems
from tipline.api.context import ServiceContext
from tipline.api.limits import BodyLimitMiddleware
from tipline.api.metrics import Metrics, MetricsMiddleware
from tipline.config import Settings, get_settings

_log = logging.getLogger("tipline.api")

#: Route modules mounted by the factory, in order; each exposes ``router``.
ROUTE_MODULES: tuple[str, ...] = (
    "routes_system",
    "routes_v1_hash",
    "routes_v1_banks",
    "routes_v1_match",
    "routes_v1_submissions",
    "routes_v1_webhooks",
    "routes_v1_vault",
    "routes_v1_reports",
    "routes_v1_exchanges",
    "routes_hma",
)

#: The web UI (HTML pages under /web): review for the provider role, the analyst's desk
#: for the clearinghouse role. Loaded by name like the route modules: the adapters share
#: this process's state, not each other's code.
WEB_MODULE = "tipline.web.app"

#: Route modules of the clearinghouse role (the ISPWS-compatible intake).
CLEARINGHOUSE_ROUTE_MODULES: tuple[str, ...] = (
    "routes_ispws",
    "routes_v1_feeds",
    "routes_v1_clearinghouse",
    "routes_referrals",
)


def route_modules(settings: Settings) -> tuple[str, ...]:
    """The route modules ``settings.role`` mounts (health, readiness and metrics always)."""
    provider = ROUTE_MODULES if settings.role != "clearinghouse" else ("routes_system",)
    extra = CLEARINGHOUSE_ROUTE_MODULES if settings.role != "provider" else ()
    return provider + extra


_DESCRIPTION = """\
Perceptual-hash matching of known material for trust and safety teams.

* `/v1/...`: the native API (integer distances, problem+json errors, tenants).
* `/h`, `/m`, `/c`, `/status`: HMA 1.1-compatible endpoints (same paths, parameters,
  response shapes and status codes as OpenMediaMatch), so an HMA integration switches by
  changing its base URL (keyless HMA clients: the `hma_compat_role` setting).

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the app for ``settings`` (the environment's when None).

    ``migrate`` applies database migrations now (tests, single process); ``tipline
    serve`` migrates once in the parent and builds workers with ``migrate=False``.
    """
    import importlib

    settings = settings or get_settings()
    metrics = Metrics()
    ctx = ServiceContext.open(settings, metrics=metrics, migrate=migrate)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx.close()

    app = FastAPI(
        title="tipline",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # FastAPI's native OpenTelemetry layer asks the global providers on every request
        # (~35 us each); tipline's own metrics are Prometheus (/metrics)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    problems.install(app)
    modules = [importlib.import_module(f"tipline.api.{name}") for name in route_modules(settings)]
    for module in modules:
        app.include_router(module.router)
    importlib.import_module(WEB_MODULE).mount(app, db=ctx.db, settings=settings, vault=ctx.vault)
    for module in modules:  # innermost middleware: inside the body limit and metrics
        fast_path = getattr(module, "install_fast_path", None)
        if fast_path is not None:
            fast_path(app, ctx)
    # Outermost first: metrics see every response, including 413s from the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


#: GIL switch interval of a ``tipline serve`` worker (Python's default is 5 ms). A worker
#: runs the event loop, database calls and media hashing on threads; hashing runs
#: without the GIL, and a thread coming back from the database (often holding the audit
#: chain's row lock) otherwise waits up to the full interval for the GIL at each round
#: trip. Measured with ``bench/service.py``: upload-and-match +40% at 0.5 ms.
WORKER_SWITCH_INTERVAL = 0.0005


def serve_app() -> FastAPI:
    """Factory for uvicorn workers: settings from the environment, no migrations; a
    short GIL switch interval (:data:`WORKER_SWITCH_INTERVAL`)."""
    sys.setswitchinterval(WORKER_SWITCH_INTERVAL)
    return create_app(get_settings(), migrate=False)
