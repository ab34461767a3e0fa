"""``tipline referral``: route finished intake reports to agencies (IP geolocation and
the routing table) and build referral packages for the agency a report was routed to."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tipline.cli.console import err_console, out_console
from tipline.config import get_settings
from tipline.services.auth import Principal
from tipline.services.clearinghouse import referral, routing
from tipline.services.database import open_database
from tipline.services.vault import Vault

referral_app = typer.Typer(
    help="Route clearinghouse reports to agencies and build referral packages.",
    no_args_is_help=True,
)


def _print(value: Any) -> None:
    out_console.print(
        json.dumps(value, sort_keys=True, default=str),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _line(d: routing.DecisionInfo) -> str:
    where = d.country or "-"
    if d.subdivision:
        where += f"-{d.subdivision}"
    return (
        f"{d.report_id}\t{d.agency or 'unrouted'}\t{d.rule}\t{where}\t{d.ip or '-'}\t"
        f"{d.explanation.get('summary', '')}"
    )


@referral_app.command("route")
def route_command(
    report_ids: list[int] = typer.Argument(
        None, help="Intake report ids (default: every finished report not routed yet)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One decision (JSON) per line."),
) -> None:
    """Route reports: locate their IP addresses and apply the routing table."""
    settings = get_settings()
    db = open_database(settings=settings)
    # a progress bar only on a terminal (a disabled one still writes a blank line)
    progress = (
        Progress(
            TextColumn("routing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        if err_console.is_terminal
        else None
    )
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task("route", total=None) if progress else None
            done = routing.route(
                db.sessions,
                settings,
                report_ids or None,
                actor=Principal.cli(),
                progress=(
                    (lambda n, total: progress.update(task, completed=n, total=total))
                    if progress is not None and task is not None
                    else None
                ),
            )
    finally:
        db.close()
    for decision in done:
        if as_json:
            _print(decision.as_dict())
        else:
            out_console.print(_line(decision), markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"routed {len(done)} report(s)", markup=False)


@referral_app.command("show")
def show_command(
    report_id: int = typer.Argument(..., help="Intake report id."),
    as_json: bool = typer.Option(False, "--json", help="The decision and packages as JSON."),
) -> None:
    """The routing decision in force for a report, its reasons, and its packages."""
    db = open_database()
    try:
        decision = routing.latest_decision(db.sessions, report_id)
        packages = referral.list_referrals(db.sessions, report_id)
    finally:
        db.close()
    if as_json:
        _print({"decision": decision.as_dict(), "packages": packages})
        return
    out_console.print(_line(decision), markup=False, highlight=False, soft_wrap=True)
    for address in decision.explanation.get("addresses", []):
        counted = "counted" if address["counted"] else "not counted"
        out_console.print(
            f"  {address['ip']}\t{address['source']}\t{address['status']}\t"
            f"{address.get('country') or '-'}\t{counted}: {address['why']}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    for package in packages:
        out_console.print(
            f"  package {package['id']}\t{package['agency']}\t{package['sha256']}\t"
            f"{package['media_files']} media file(s)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip


@referral_app.command("package")
def package_command(
    report_id: int = typer.Argument(..., help="Intake report id (routed)."),
    out: Path = typer.Option(..., "--out", "-o", help="Zip file to write (must not exist)."),
    media: bool | None = typer.Option(
        None,
        "--media/--no-media",
        help="Include the media files (default: when the routing rule allows it).",
    ),
) -> None:
    """Build the referral package (zip) of a routed report."""
    settings = get_settings()
    db = open_database(settings=settings)
    try:
        info = referral.build_referral(
            db.sessions, Vault.from_settings(settings), report_id, out,
            actor=Principal.cli(), media=media,
        )  # fmt: skip
    finally:
        db.close()
    err_console.print(
        f"referral {info.id} for {info.agency}: {out} ({info.size} bytes, "
        f"{info.media_files} media file(s)), sha256 {info.sha256}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``referral`` to the root command."""
    app.add_typer(referral_app, name="referral")
