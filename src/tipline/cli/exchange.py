"""``tipline exchange``: the hash lists this service syncs into its banks, and the key
that signs the feed it publishes. Credentials are named (an environment variable or a
file), never given on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from tipline.cli.console import err_console, out_console
from tipline.errors import InputError
from tipline.services import exchanges
from tipline.services.database import open_database

exchange_app = typer.Typer(
    help="Hash exchanges: sync shared hash lists into banks; sign the published feed.",
    no_args_is_help=True,
)


def _print(value: dict[str, Any] | str) -> None:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _line(status: exchanges.ExchangeStatus) -> str:
    t = status.totals
    state = "enabled" if status.enabled else "disabled"
    last = status.last_success_at.isoformat() if status.last_success_at else "never"
    error = f"\terror: {status.last_error}" if status.last_error else ""
    return (
        f"{status.name}\t{status.kind}\t-> {status.bank}\t{state}\tlast success {last}\t"
        f"+{t['added']} ~{t['updated']} -{t['removed']}{error}"
    )


@exchange_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Exchange name (a-z 0-9 _ . -)."),
    kind: str = typer.Option(..., "--kind", help="tipline-feed, ncmec or threatexchange"),
    bank: str = typer.Option(..., "--bank", help="The bank entries go to (must exist)."),
    url: str | None = typer.Option(None, "--url", help="Source URL (tipline-feed: /v1/feeds/B)."),
    public_key: str | None = typer.Option(
        None, "--public-key", help="tipline-feed: the publisher's base64 Ed25519 public key."
    ),
    environment: str | None = typer.Option(
        None, "--environment", help="ncmec: industry, ngo, test-industry, ... (or --url)."
    ),
    username: str | None = typer.Option(None, "--username", help="ncmec: the account name."),
    window_seconds: int | None = typer.Option(
        None, "--window-seconds", help="ncmec: seconds of entries read per window."
    ),
    start: int | None = typer.Option(
        None, "--start", help="ncmec, threatexchange: unix time to start from."
    ),
    privacy_group: int | None = typer.Option(
        None, "--privacy-group", help="threatexchange: the privacy group id."
    ),
    route: list[str] = typer.Option(
        [], "--route", help="ncmec: CLASSIFICATION=BANK (e.g. A1=ncmec-a1); repeatable."
    ),
    credential_env: str | None = typer.Option(
        None,
        "--credential-env",
        help="Environment variable holding the credential (feed: API key; ncmec: password; "
        "threatexchange: access token).",
    ),
    credential_file: Path | None = typer.Option(
        None, "--credential-file", help="File holding the credential."
    ),
    interval: int = typer.Option(3600, "--interval", help="Seconds between scheduled syncs."),
) -> None:
    """Configure an exchange (synced by `tipline exchange sync` and `tipline worker`)."""
    routes: dict[str, str] = {}
    for item in route:
        label, sep, target = item.partition("=")
        if not sep or not label or not target:
            raise InputError(f"--route wants CLASSIFICATION=BANK, got {item!r}")
        routes[label] = target
    given: dict[str, object] = {
        "url": url,
        "public_key": public_key,
        "environment": environment,
        "username": username,
        "window_seconds": window_seconds,
        "start": start,
        "privacy_group": privacy_group,
        "banks": routes or None,
    }
    config = {k: v for k, v in given.items() if v is not None}
    db = open_database()
    try:
        status = exchanges.add_exchange(
            db,
            name,
            kind=kind,
            bank=bank,
            config=config,
            credential_env=credential_env,
            credential_file=str(credential_file.resolve()) if credential_file else None,
            interval_seconds=interval,
        )
    finally:
        db.close()
    err_console.print(f"added exchange {status.name} ({status.kind} -> {status.bank})")


@exchange_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List exchanges with their last sync."""
    db = open_database()
    try:
        found = exchanges.list_exchanges(db)
    finally:
        db.close()
    for status in found:
        _print(status.as_dict() if as_json else _line(status))
    if not found:
        err_console.print("no exchanges configured", markup=False)


@exchange_app.command("status")
def status_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """One exchange's status as JSON (checkpoint, totals, last error, lag)."""
    db = open_database()
    try:
        _print(exchanges.exchange_status(db, name).as_dict())
    finally:
        db.close()


@exchange_app.command("sync")
def sync_command(
    names: list[str] = typer.Argument(None, help="Exchanges to sync (default: all enabled)."),
    max_pages: int | None = typer.Option(None, "--max-pages", min=1, help="Stop after N pages."),
) -> None:
    """Sync now, page by page (resumable: an interrupted sync continues where it stopped)."""
    from rich.progress import Progress, TextColumn

    db = open_database()
    failed = 0
    try:
        wanted = names or [s.name for s in exchanges.list_exchanges(db) if s.enabled]
        if not wanted:
            raise InputError("no enabled exchange to sync")
        for name in wanted:
            with Progress(
                TextColumn("{task.description}"), console=err_console, transient=True
            ) as bar:
                task = bar.add_task(f"{name}: syncing")
                seen = exchanges.Totals()

                def tick(
                    t: exchanges.Totals, task: Any = task, seen: Any = seen, name: str = name
                ) -> None:
                    seen.add(t)
                    bar.update(
                        task,
                        description=f"{name}: page {seen.pages}, +{seen.added} "
                        f"~{seen.updated} -{seen.removed}",
                    )

                try:
                    report = exchanges.sync_exchange(db, name, max_pages=max_pages, on_page=tick)
                except exchanges.ExchangeError as exc:
                    failed += 1
                    err_console.print(f"error: {exc}", markup=False, highlight=False)
                    continue
            _print(report.as_dict())
    finally:
        db.close()
    if failed:
        raise typer.Exit(2)


@exchange_app.command("probe")
def probe_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """Ask the source who we are and who shares (NCMEC: /v2/status and /v2/members)."""
    db = open_database()
    try:
        _print(exchanges.probe_exchange(db, name))
    finally:
        db.close()


@exchange_app.command("enable")
def enable_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """Resume scheduled syncs."""
    db = open_database()
    try:
        exchanges.set_enabled(db, name, True)
    finally:
        db.close()
    err_console.print(f"enabled exchange {name}", markup=False)


@exchange_app.command("disable")
def disable_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """Stop scheduled syncs (entries stay)."""
    db = open_database()
    try:
        exchanges.set_enabled(db, name, False)
    finally:
        db.close()
    err_console.print(f"disabled exchange {name}", markup=False)


@exchange_app.command("reset")
def reset_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """Forget the checkpoint: the next sync reads the source from the start."""
    db = open_database()
    try:
        exchanges.reset_exchange(db, name)
    finally:
        db.close()
    err_console.print(f"reset exchange {name}", markup=False)


@exchange_app.command("remove")
def remove_command(name: str = typer.Argument(..., help="Exchange name.")) -> None:
    """Remove the configuration (the bank and its entries stay)."""
    db = open_database()
    try:
        exchanges.remove_exchange(db, name)
    finally:
        db.close()
    err_console.print(f"removed exchange {name}", markup=False)


@exchange_app.command("keygen")
def keygen_command(
    out: Path = typer.Option(..., "--out", help="Where to write the private key (mode 0600)."),
) -> None:
    """Make a feed signing key: the private key goes to --out, the public key (for
    subscribers' --public-key) is printed."""
    key = exchanges.SigningKey.generate()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.private_base64() + "\n")
    err_console.print(
        f"wrote {out}; set TIPLINE_FEED_SIGNING_KEY_FILE={out} on the publisher", markup=False
    )
    _print(key.public().base64())


@exchange_app.command("feed-key")
def feed_key_command() -> None:
    """Print the public key of this service's feed signing key (from the settings)."""
    from tipline.config import get_settings

    publisher = exchanges.Publisher.from_settings(get_settings())
    if publisher.key is None:
        raise InputError("no feed signing key set (TIPLINE_FEED_SIGNING_KEY[_FILE])")
    _print(publisher.key.public().base64())


def register(app: typer.Typer) -> None:
    """Add ``exchange`` to the root command."""
    app.add_typer(exchange_app, name="exchange")
