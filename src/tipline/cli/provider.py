"""``tipline provider add|list|disable``: reporting-provider accounts of the
clearinghouse intake (HTTP Basic on ``/ispws``). Passwords are stored hashed and shown
once; they are never taken from the command line (it is visible to other users)."""

from __future__ import annotations

import json
import secrets
import sys

import typer

from tipline.cli.console import err_console, out_console
from tipline.services import clearinghouse
from tipline.services.database import open_database

provider_app = typer.Typer(
    help="Reporting providers allowed to file reports with the clearinghouse intake.",
    no_args_is_help=True,
)


@provider_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Account name (the HTTP Basic user name)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (one line)."
    ),
) -> None:
    """Create an account; without --password-stdin a random password is printed once."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else secrets.token_urlsafe(24)
    db = open_database()
    try:
        info = clearinghouse.add_provider(db.sessions, name, password)
    finally:
        db.close()
    err_console.print(f"added provider {info.name} ({info.id})", markup=False)
    if not password_stdin:
        err_console.print("its password (store it now, it cannot be shown again):", markup=False)
        out_console.print(password, markup=False)


@provider_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List accounts (never passwords)."""
    db = open_database()
    try:
        found = clearinghouse.list_providers(db.sessions)
    finally:
        db.close()
    for info in found:
        if as_json:
            line = json.dumps(
                {
                    "id": info.id,
                    "name": info.name,
                    "enabled": info.enabled,
                    "created_at": info.created_at.isoformat(),
                    "disabled_at": info.disabled_at.isoformat() if info.disabled_at else None,
                },
                sort_keys=True,
            )
        else:
            state = "enabled" if info.enabled else "disabled"
            line = f"{info.name}\t{state}\t{info.created_at.isoformat()}"
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)


@provider_app.command("disable")
def disable_command(
    name: str = typer.Argument(..., help="Account name."),
) -> None:
    """Refuse every further login of the account (its reports are kept)."""
    db = open_database()
    try:
        clearinghouse.disable_provider(db.sessions, name)
    finally:
        db.close()
    err_console.print(f"disabled provider {name}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``provider`` to the root command."""
    app.add_typer(provider_app, name="provider")
