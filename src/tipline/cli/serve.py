"""``tipline serve``: run the HTTP API with uvicorn (migrations applied first)."""

from __future__ import annotations

import enum
import os
import shutil
from typing import TYPE_CHECKING, Any

import typer

from tipline.cli import serve_workers
from tipline.cli.console import err_console
from tipline.config import Settings, get_settings

if TYPE_CHECKING:
    from tipline.services.database import Database


class Role(enum.StrEnum):
    """What a ``tipline serve`` process does."""

    PROVIDER = "provider"
    CLEARINGHOUSE = "clearinghouse"
    BOTH = "both"


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0 = any free port)."),
    workers: int = typer.Option(1, min=1, max=64, help="uvicorn worker processes."),
    demo: bool = typer.Option(
        False, "--demo", help="Seed a 'demo' bank from bundled benign sample images."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    role: Role | None = typer.Option(
        None,
        "--role",
        help="provider (match, review, report; the default), clearinghouse (the "
        "CyberTipline-compatible intake under /ispws) or both. Default: TIPLINE_ROLE.",
    ),
) -> None:
    """Serve the native /v1 API and the HMA-compatible endpoints.

    Data lives under ./tipline-data (SQLite) unless TIPLINE_DATABASE_URL points at
    PostgreSQL. Migrations are applied before the workers start.
    """
    import uvicorn

    from tipline.services.database import open_database

    if role is not None:
        # workers read their settings from the environment
        os.environ["TIPLINE_ROLE"] = role.value
        get_settings.cache_clear()
    settings = get_settings()
    db = open_database(settings=settings)
    try:
        # after the database answered: an unusable database stays a one-line error
        _check_vault(settings)
        if demo:
            from tipline.demo import seed_demo

            info = seed_demo(settings, db, f"http://{host}:{port}")
            err_console.print(info, markup=False, highlight=False)
        if settings.role != "clearinghouse":
            _build_index(settings, db)
    finally:
        db.close()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share metric files so that any worker's /metrics shows the sum.
        metrics_dir = settings.data_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    options: dict[str, Any] = {
        "app": "tipline.api.app:serve_app",
        "factory": True,
        "log_level": log_level,
        "proxy_headers": False,
        "server_header": False,
    }
    if workers > 1 and serve_workers.available():
        # One listening socket per worker: the kernel balances connections over them.
        code = serve_workers.run(options, host=host, port=port, workers=workers)
        if code:
            raise typer.Exit(code)
        return
    uvicorn.run(host=host, port=port, workers=workers, **options)


def _check_vault(settings: Settings) -> None:
    """Fail now on a malformed vault key; warn when none is set (matches sent to review
    then keep no media, which is audited as ``vault.not_kept``)."""
    from tipline.services.vault import Vault

    if Vault.from_settings(settings).keyring is None:
        err_console.print(
            "warning: the evidence vault has no master key (TIPLINE_VAULT_MASTER_KEY or"
            " TIPLINE_VAULT_MASTER_KEY_FILE): media sent to review will not be kept",
            markup=False,
            highlight=False,
        )


def _build_index(settings: Settings, db: Database) -> None:
    """Build (or catch up) the index files once here, so workers only open them."""
    from tipline.services.matching import Matcher

    Matcher(db, settings.resolved_index_dir()).close()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root command."""
    app.command("serve")(serve)
