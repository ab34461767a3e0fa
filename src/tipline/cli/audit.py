"""``tipline audit verify|show``: check the hash chain, print recent records."""

from __future__ import annotations

import json

import typer

from tipline.cli.console import out_console
from tipline.errors import AuditChainError
from tipline.services import audit
from tipline.services.database import in_transaction, open_database

audit_app = typer.Typer(help="Verify and read the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify_command() -> None:
    """Walk the whole chain; exit non-zero naming the first bad record."""
    db = open_database()
    try:
        report = in_transaction(db.sessions, audit.verify)
    finally:
        db.close()
    if not report.ok:
        raise AuditChainError(report.describe())
    out_console.print(report.describe(), markup=False)


@audit_app.command("show")
def show_command(
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Newest records to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print the newest records, oldest first."""
    db = open_database()
    try:
        recent = in_transaction(db.sessions, audit.recent, limit=limit)
        records = [audit.record_as_dict(r) for r in recent]
    finally:
        db.close()
    for record in records:
        if as_json:
            out_console.print(json.dumps(record, sort_keys=True), markup=False, soft_wrap=True)
            continue
        target = f"{record['target_type']}:{record['target_id']}" if record["target_type"] else "-"
        out_console.print(
            f"{record['seq']}\t{record['at']}\t{record['actor']}\t{record['tenant'] or '-'}\t"
            f"{record['action']}\t{target}\t{json.dumps(record['details'], sort_keys=True)}",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add ``tipline audit`` to the root app."""
    app.add_typer(audit_app, name="audit")
