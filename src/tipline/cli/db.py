"""``tipline db``: database maintenance (migrations)."""

from __future__ import annotations

import typer

from tipline.cli.console import out_console
from tipline.config import get_settings

db_app = typer.Typer(name="db", help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_command() -> None:
    """Apply every pending migration (every capability's branch) to the database."""
    from tipline.services.database import upgrade_database  # SQLAlchemy: not for --help

    shown, heads = upgrade_database(get_settings())
    out_console.print(
        f"database {shown} is at {', '.join(heads) or 'no revision'}", markup=False, highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add ``tipline db`` to the root app."""
    app.add_typer(db_app, name="db")
