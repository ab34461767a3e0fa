"""``tipline vault``: the evidence vault (list, show, get, verify, holds, retention,
key rotation, purge). Every command acts as the local operator and is audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.orm import Session, sessionmaker

from tipline.cli.console import err_console, out_console
from tipline.config import get_settings
from tipline.errors import EvidenceIntegrityError, InputError, VaultKeyError
from tipline.services import vault
from tipline.services.auth import Principal
from tipline.services.database import open_database
from tipline.services.vault.keys import (
    MasterKey,
    new_master_key_from_settings,
    write_key_file,
)

vault_app = typer.Typer(
    help="The evidence vault: preserved files and report XML, encrypted at rest.",
    no_args_is_help=True,
)


@contextmanager
def _open() -> Iterator[tuple[sessionmaker[Session], vault.Vault]]:
    settings = get_settings()
    the_vault = vault.Vault.from_settings(settings)
    db = open_database(settings=settings)
    try:
        yield db.sessions, the_vault
    finally:
        db.close()


def _counter(label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def _print(info: vault.EvidenceInfo, as_json: bool) -> None:
    if as_json:
        out_console.print(json.dumps(info.as_dict(), sort_keys=True), markup=False, soft_wrap=True)
        return
    state = "purged" if info.purged_at else ("held" if info.held else "kept")
    links = " ".join(
        f"{name}={value}"
        for name, value in (
            ("submission", info.submission_id),
            ("review", info.review_item_id),
            ("report", info.report_id),
            ("content", info.content_id),
        )
        if value
    )
    out_console.print(
        f"{info.id}\t{info.kind}\t{info.size}\t{info.sha256}\t{state}\t"
        f"until {info.retain_until:%Y-%m-%d}\t{links or '-'}",
        markup=False,
    )


@vault_app.command("keygen")
def keygen_command(
    path: Path = typer.Argument(..., help="New key file to create (mode 0600)."),
) -> None:
    """Write a new random master key to PATH and print its key id (never the key)."""
    key = MasterKey.generate()
    write_key_file(path, key)
    out_console.print(f"wrote master key {key.key_id} to {path}", markup=False)


@vault_app.command("list")
def list_command(
    submission: str | None = typer.Option(None, "--submission", help="Only this submission."),
    report: str | None = typer.Option(None, "--report", help="Only this report id."),
    include_purged: bool = typer.Option(False, "--all", help="Include purged items."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000, help="Items to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Items, newest first: id, kind, bytes, SHA-256, state, retention, links."""
    with _open() as (sessions, _vault):
        items = vault.list_items(
            sessions,
            actor=Principal.cli(),
            submission_id=submission,
            report_id=report,
            include_purged=include_purged,
            limit=limit,
        )
    for info in items:
        _print(info, as_json)


@vault_app.command("show")
def show_command(
    item_id: str = typer.Argument(..., help="Vault item id."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """One item's facts, retention and legal holds."""
    with _open() as (sessions, _vault):
        info = vault.show(sessions, item_id, actor=Principal.cli())
    if as_json:
        _print(info, True)
        return
    for name, value in info.as_dict().items():
        if name != "holds":
            out_console.print(f"{name}: {value}", markup=False)
    for hold in info.holds:
        state = f"released {hold.released_at:%Y-%m-%d}" if hold.released_at else "active"
        out_console.print(
            f"hold {hold.id}: {state}, placed {hold.placed_at:%Y-%m-%d} by {hold.placed_by}:"
            f" {hold.reason}",
            markup=False,
        )


@vault_app.command("get")
def get_command(
    item_id: str = typer.Argument(..., help="Vault item id."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (must not exist)."),
) -> None:
    """Decrypt an item into a file; nothing is written unless every check passes."""
    progress = Progress(
        TextColumn("decrypting"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with _open() as (sessions, the_vault), progress:
        task = progress.add_task("get", total=None)
        info = vault.read_to_file(
            sessions,
            the_vault,
            item_id,
            out,
            actor=Principal.cli(),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    err_console.print(f"wrote {info.size} bytes to {out} (sha256 {info.sha256})", markup=False)


@vault_app.command("verify")
def verify_command(
    items: list[str] | None = typer.Argument(None, help="Items to check (default: all)."),
) -> None:
    """Decrypt and check every item (or ITEMS); exit non-zero naming what fails."""
    with _open() as (sessions, the_vault), _counter("verifying") as progress:
        task = progress.add_task("verify", total=None)
        report = vault.verify(
            sessions,
            the_vault,
            actor=Principal.cli(),
            item_ids=items or None,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if not report.ok:
        for item_id, reason in report.failures:
            err_console.print(f"FAIL {item_id}: {reason}", markup=False, highlight=False)
        for name in report.stray_files:
            err_console.print(f"STRAY file of unknown item {name}", markup=False)
        raise EvidenceIntegrityError(report.describe())
    out_console.print(report.describe(), markup=False)


@vault_app.command("hold")
def hold_command(
    item_id: str = typer.Argument(..., help="Vault item id."),
    reason: str = typer.Option(..., "--reason", help="Why (case, request, order)."),
) -> None:
    """Place a legal hold: the item is never purged while the hold is active."""
    with _open() as (sessions, _vault):
        hold = vault.place_hold(sessions, item_id, reason=reason, actor=Principal.cli())
    out_console.print(f"hold {hold.id} placed on {item_id}", markup=False)


@vault_app.command("release")
def release_command(
    item_id: str = typer.Argument(..., help="Vault item id."),
    hold_id: str | None = typer.Option(None, "--hold", help="One hold (default: all)."),
) -> None:
    """Release a legal hold (or every active hold) of an item."""
    with _open() as (sessions, _vault):
        released = vault.release_hold(sessions, item_id, hold_id=hold_id, actor=Principal.cli())
    for hold in released:
        out_console.print(f"hold {hold.id} on {item_id} released", markup=False)


def _parse_until(until: str | None, days: int | None) -> datetime:
    if (until is None) == (days is None):
        raise InputError("give exactly one of --until and --days")
    if days is not None:
        return datetime.now(UTC) + timedelta(days=days)
    assert until is not None
    try:
        when = datetime.fromisoformat(until)
    except ValueError:
        raise InputError(f"--until: not an ISO 8601 date or time: {until!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@vault_app.command("extend")
def extend_command(
    item_id: str = typer.Argument(..., help="Vault item id."),
    until: str | None = typer.Option(None, "--until", help="Keep until (ISO 8601, UTC)."),
    days: int | None = typer.Option(None, "--days", min=1, help="Keep N days from now."),
) -> None:
    """Keep an item longer (retention only grows)."""
    when = _parse_until(until, days)
    with _open() as (sessions, _vault):
        info = vault.extend_retention(sessions, item_id, until=when, actor=Principal.cli())
    out_console.print(f"{item_id} kept until {info.retain_until.isoformat()}", markup=False)


@vault_app.command("rotate-key")
def rotate_key_command(
    new_key_file: Path | None = typer.Option(
        None,
        "--new-key-file",
        help="The new master key (default: TIPLINE_VAULT_NEW_MASTER_KEY[_FILE]).",
    ),
) -> None:
    """Rewrap every item's data key under a new master key (files are not rewritten).
    Afterwards set TIPLINE_VAULT_MASTER_KEY[_FILE] to the new key."""
    new_key = (
        MasterKey.from_file(new_key_file)
        if new_key_file is not None
        else new_master_key_from_settings(get_settings())
    )
    if new_key is None:
        raise VaultKeyError(
            "no new key: pass --new-key-file or set TIPLINE_VAULT_NEW_MASTER_KEY[_FILE]"
        )
    with _open() as (sessions, the_vault), _counter("rewrapping") as progress:
        task = progress.add_task("rotate", total=None)
        report = vault.rotate_key(
            sessions,
            the_vault,
            new_key,
            actor=Principal.cli(),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for item_id, reason in report.failures:
        err_console.print(f"FAIL {item_id}: {reason}", markup=False, highlight=False)
    out_console.print(
        f"rewrapped {report.rewrapped} items under key {report.new_key_id}"
        f" ({report.already} already were)",
        markup=False,
    )
    if report.failures:
        raise VaultKeyError(f"{len(report.failures)} items could not be rewrapped")


@vault_app.command("purge")
def purge_command(
    enqueue: bool = typer.Option(
        False, "--enqueue", help="Queue the purge job for `tipline worker` instead."
    ),
) -> None:
    """Erase items past their retention that have no active legal hold (audited)."""
    with _open() as (sessions, the_vault):
        if enqueue:
            job_id = vault.enqueue_purge(sessions)
            out_console.print(f"purge job {job_id} queued", markup=False)
            return
        with _counter("purging") as progress:
            task = progress.add_task("purge", total=None)
            report = vault.purge(
                sessions,
                the_vault,
                actor=Principal.cli(),
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    out_console.print(
        f"purged {len(report.purged)} items; {report.held} expired items kept on legal hold;"
        f" {report.files_removed} stray files removed",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``tipline vault`` to the root app."""
    app.add_typer(vault_app, name="vault")
