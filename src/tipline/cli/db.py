"""``tipline db``: database maintenance (migrations)."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from tipline.cli.console import out_console
from tipline.config import get_settings

db_app = typer.Typer(name="db", help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_command() -> None:
    """Apply every pending migration (every capability's branch) to the database."""
    from alembic.runtime.migration import MigrationContext

    from tipline.store.db import make_engine, upgrade
    from tipline.store.models import import_all_models

    settings = get_settings()
    url = settings.resolved_database_url()
    import_all_models()
    engine = make_engine(url, settings=settings)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            heads = sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    shown = make_url(url).render_as_string(hide_password=True)
    out_console.print(
        f"database {shown} is at {', '.join(heads) or 'no revision'}", markup=False, highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add ``tipline db`` to the root app."""
    app.add_typer(db_app, name="db")
