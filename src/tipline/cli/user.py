"""``tipline user add|passwd|disable|list``: people who log in to the web UI. Passwords
are read from the terminal (asked twice) or one line of standard input, never from the
command line (other users can see it) and never stored in clear."""

from __future__ import annotations

import json
import sys

import typer

from tipline.cli.console import err_console, out_console
from tipline.services import web_auth
from tipline.services.database import open_database

user_app = typer.Typer(help="Web UI users (reviewers, admins).", no_args_is_help=True)

_STDIN = typer.Option(
    False, "--password-stdin", help="Read the password from standard input (one line)."
)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@user_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option(
        "reviewer", help="Role: reviewer, analyst (the clearinghouse desk) or admin (see `apikey`)."
    ),
    tenant: str | None = typer.Option(None, help="Tenant the user is bound to."),
    password_stdin: bool = _STDIN,
) -> None:
    """Create a user (password at least 12 characters)."""
    password = _password(password_stdin)
    db = open_database()
    try:
        info = web_auth.add_user(db.sessions, name, password, role=role, tenant=tenant)
    finally:
        db.close()
    where = f", tenant {info.tenant}" if info.tenant else ""
    err_console.print(f"added user {info.name} ({info.role.value}{where})", markup=False)


@user_app.command("passwd")
def passwd_command(
    name: str = typer.Argument(..., help="Login name."), password_stdin: bool = _STDIN
) -> None:
    """Set a new password (ends the user's sessions)."""
    password = _password(password_stdin)
    db = open_database()
    try:
        web_auth.set_password(db.sessions, name, password)
    finally:
        db.close()
    err_console.print(f"password of {name} changed; their sessions ended", markup=False)


@user_app.command("disable")
def disable_command(name: str = typer.Argument(..., help="Login name.")) -> None:
    """Refuse further logins and end the user's sessions."""
    db = open_database()
    try:
        web_auth.disable_user(db.sessions, name)
    finally:
        db.close()
    err_console.print(f"disabled user {name}", markup=False)


@user_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List users (never passwords)."""
    db = open_database()
    try:
        found = web_auth.list_users(db.sessions)
    finally:
        db.close()
    for info in found:
        if as_json:
            line = json.dumps(
                {
                    "name": info.name,
                    "role": info.role.value,
                    "tenant": info.tenant,
                    "enabled": info.enabled,
                    "created_at": info.created_at.isoformat(),
                },
                sort_keys=True,
            )
        else:
            state = "enabled" if info.enabled else "disabled"
            line = f"{info.name}\t{info.role.value}\t{info.tenant or '-'}\t{state}"
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``user`` to the root command."""
    app.add_typer(user_app, name="user")
