"""``tipline apikey create|revoke|list``: manage API keys (secrets are shown once)."""

from __future__ import annotations

import typer

from tipline.cli.console import err_console, out_console
from tipline.services import auth
from tipline.services.database import in_transaction, open_database

apikey_app = typer.Typer(help="Create, revoke and list API keys.", no_args_is_help=True)


@apikey_app.command("create")
def create_command(
    name: str = typer.Option(..., "--name", help="What the key is for (shown in lists)."),
    role: auth.Role = typer.Option(..., "--role", help="Permissions of the key."),
    tenant: str | None = typer.Option(None, "--tenant", help="Bind the key to a tenant."),
) -> None:
    """Create a key and print it once; only its hash is stored."""
    db = open_database()
    try:
        created = in_transaction(db.sessions, auth.create_key, name=name, role=role, tenant=tenant)
    finally:
        db.close()
    err_console.print(
        f"created key {created.key_id} (role {created.role.value}"
        + (f", tenant {created.tenant}" if created.tenant else "")
        + "); store it now, it cannot be shown again:",
        markup=False,
    )
    out_console.print(created.secret, markup=False)


@apikey_app.command("revoke")
def revoke_command(
    key_id: str = typer.Argument(..., help="The key id, or the whole key (tpl_<key id>_...)."),
) -> None:
    """Revoke a key; requests with it fail from now on."""
    db = open_database()
    try:
        key_id = in_transaction(db.sessions, auth.revoke_key, key_id)
    finally:
        db.close()
    err_console.print(f"revoked key {key_id}", markup=False)


@apikey_app.command("list")
def list_command() -> None:
    """List keys (id, name, role, tenant, state); never secrets."""
    db = open_database()
    try:
        keys = in_transaction(db.sessions, auth.list_keys)
    finally:
        db.close()
    for key in keys:
        state = "revoked" if key["revoked_at"] else "active"
        out_console.print(
            f"{key['key_id']}\t{key['role']}\t{key['tenant'] or '-'}\t{state}\t{key['name']}",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add ``tipline apikey`` to the root app."""
    app.add_typer(apikey_app, name="apikey")
