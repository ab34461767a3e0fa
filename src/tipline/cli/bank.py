"""``tipline bank``: create, list, show, import, export, add, disable, enable, set, delete."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from tipline.banks.formats import ImportFormat, guess_format
from tipline.banks.model import BankEntry
from tipline.cli.console import err_console, out_console
from tipline.errors import ConflictError, ImportFormatError, InputError, MediaError
from tipline.services import banks as svc
from tipline.services.database import open_database

if TYPE_CHECKING:
    from tipline.services import bank_sources as sources

# bank_media and bank_sources hash media (numba, numpy, Pillow): imported by the commands
# that use them, so the other bank commands start without them.

bank_app = typer.Typer(
    name="bank",
    help="Manage banks: named hash lists with thresholds, allow-banks and entries.",
    no_args_is_help=True,
)

STDIO = "-"


def _thresholds(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        kind, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise InputError(f"--threshold must be TYPE=BITS (e.g. pdq=31), got {item!r}")
        out[kind.strip().lower()] = int(number)
    return out


def _print(text: str) -> None:
    out_console.print(text, markup=False, highlight=False)


def _info_json(info: svc.BankInfo) -> dict[str, Any]:
    b = info.bank
    return {
        "name": b.name,
        "description": b.description,
        "enabled": b.enabled,
        "allow_bank": b.is_allow_bank,
        "thresholds": b.thresholds,
        "normalize": b.normalize,
        "tenant": b.tenant,
        "region_matching": b.region_matching,
        "auto_report": b.auto_report,
        "entries": info.entries,
        "disabled_entries": info.disabled_entries,
        "signals": info.signals,
    }


def _entry_json(e: BankEntry) -> dict[str, Any]:
    return {
        "bank": e.bank,
        "entry_id": e.entry_id,
        "signals": [{"type": s.type, "value": s.value} for s in e.signals],
        "labels": list(e.labels),
        "source": e.source,
        "added_at": e.added_at.isoformat() if e.added_at else None,
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
    }


@bank_app.command("create")
def create_command(
    name: str = typer.Argument(..., help="Bank name."),
    description: str = typer.Option("", "--description", "-d", help="What the bank holds."),
    threshold: list[str] = typer.Option(
        [], "--threshold", "-t", help="TYPE=N match threshold (pdq in bits); repeatable."
    ),
    allow: bool = typer.Option(
        False, "--allow", help="An allow-bank: its entries suppress matches (false positives)."
    ),
    disabled: bool = typer.Option(False, "--disabled", help="Create the bank switched off."),
    normalize: bool = typer.Option(
        True,
        "--normalize/--no-normalize",
        help="Match queries without their borders, caption bars and screenshot frames too.",
    ),
    auto_report: str = typer.Option(
        "default",
        "--auto-report",
        help="Auto-report policy at match time: default (exact digest matches when "
        "report_auto_banks lists the bank), off, exact (exact digest matches) or trusted "
        "(exact digest matches and PDQ matches at distance 0).",
    ),
) -> None:
    """Create a bank."""
    db = open_database()
    try:
        bank = svc.create_bank(
            db,
            name,
            description=description,
            thresholds=_thresholds(threshold),
            allow=allow,
            enabled=not disabled,
            normalize=normalize,
            auto_report=auto_report,
        )
    finally:
        db.close()
    kind = "allow-bank" if bank.is_allow_bank else "bank"
    _print(f"created {kind} {bank.name}")


@bank_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List banks with their entry counts."""
    db = open_database()
    try:
        infos = svc.list_banks(db)
    finally:
        db.close()
    if as_json:
        _print(json.dumps([_info_json(i) for i in infos], indent=2))
        return
    for i in infos:
        flags = [
            "enabled" if i.bank.enabled else "DISABLED",
            *(["allow-bank"] if i.bank.is_allow_bank else []),
        ]
        thresholds = ",".join(f"{k}={v}" for k, v in sorted(i.bank.thresholds.items()))
        _print(
            f"{i.bank.name}\t{i.entries} entries ({i.disabled_entries} disabled)\t"
            f"{' '.join(flags)}" + (f"\tthresholds {thresholds}" if thresholds else "")
        )


@bank_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Bank name."),
    entry: list[str] = typer.Option([], "--entry", "-e", help="Also show this entry id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a bank's settings and counts (and entries with --entry)."""
    db = open_database()
    try:
        info = svc.show_bank(db, name)
        entries = [svc.get_entry(db, name, e) for e in entry]
    finally:
        db.close()
    if as_json:
        doc = _info_json(info)
        if entries:
            doc["entries_shown"] = [_entry_json(e) for e in entries]
        _print(json.dumps(doc, indent=2))
        return
    b = info.bank
    _print(f"bank         {b.name}")
    _print(f"description  {b.description}")
    _print(f"enabled      {'yes' if b.enabled else 'no'}")
    _print(f"allow-bank   {'yes' if b.is_allow_bank else 'no'}")
    thresholds = ", ".join(f"{k}={v}" for k, v in sorted(b.thresholds.items())) or "defaults"
    _print(f"thresholds   {thresholds}")
    _print(f"normalize    {'yes' if b.normalize else 'no'}")
    _print(f"regions      {'on' if b.region_matching else 'off'} (crops and small rotations)")
    _print(f"auto-report  {b.auto_report}")
    _print(f"entries      {info.entries} ({info.disabled_entries} disabled)")
    for kind, count in sorted(info.signals.items()):
        _print(f"  {kind:<10} {count}")
    for e in entries:
        state = f"disabled: {e.disabled_reason}" if e.disabled else "enabled"
        _print(f"entry {e.entry_id} [{state}] labels={','.join(e.labels)} source={e.source or ''}")
        for s in e.signals:
            _print(f"  {s.type} {s.value}")


class ImportSource(StrEnum):
    """Systems ``bank import --from`` reads directly."""

    HMA = "hma"
    PYTX = "pytx"


@bank_app.command("import")
def import_command(
    name: str = typer.Argument(
        ..., help="Bank name (with --from hma: HMA's database URL, postgresql://...)."
    ),
    path: str | None = typer.Argument(
        None,
        help="Hash-list file, or '-' for stdin (with --from pytx: the state folder).",
        show_default=False,
    ),
    source: ImportSource | None = typer.Option(
        None,
        "--from",
        help="Read another system: 'hma' copies every bank of an HMA database into the "
        "tipline bank of the same name; 'pytx' reads a threatexchange CLI state folder.",
    ),
    only: list[str] = typer.Option(
        [], "--only", help="With --from hma: only this HMA bank; repeatable."
    ),
    fmt: ImportFormat | None = typer.Option(
        None, "--format", "-f", help="File format (default from the extension; text is hma)."
    ),
    atomic: bool = typer.Option(
        False, "--atomic", help="All or nothing: roll back if any line is bad or a duplicate."
    ),
    batch_size: int = typer.Option(
        svc.DEFAULT_BATCH, "--batch-size", min=1, help="Entries per transaction."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not list bad lines."),
) -> None:
    """Import a hash list (streamed), or the banks of HMA or python-threatexchange.
    Bad lines go to stderr with their line numbers; exit status 1 when any line was bad
    or a duplicate.

    --from hma URL: every bank of HMA's database (read-only) into the tipline bank of
    the same name, created when missing; each content becomes entry hma-<content id>
    with its signals, note, metadata and disable_until_ts. --from pytx BANK FOLDER:
    the local_file collaborations of a threatexchange state folder; the others exist
    only as pickles, which tipline does not load: they are listed with the
    threatexchange dataset command that exports them (exit status 1)."""

    def on_error(exc: ImportFormatError) -> None:
        if not quiet:
            err_console.print(f"error: {exc}", markup=False, highlight=False)

    if source is not None:
        _import_from(source, name, path, only, fmt, atomic, batch_size, as_json, on_error)
        return
    if only:
        raise InputError("--only goes with --from hma")
    if path is None:
        raise InputError("missing the hash-list file (or '-' for stdin)")
    chosen = fmt or guess_format(path)
    stream: IO[bytes]
    size: int | None = None
    if path == STDIO:
        stream = sys.stdin.buffer
        label = "<stdin>"
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputError(f"cannot open {path}: {exc.strerror}") from None
        size = os.fstat(stream.fileno()).st_size
        label = path

    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not (err_console.is_terminal and size),
    )
    db = open_database()
    try:
        with progress:
            task = progress.add_task("import", total=size)
            summary = svc.import_entries(
                db,
                name,
                stream,
                chosen,
                path=label,
                atomic=atomic,
                batch_size=batch_size,
                on_error=on_error,
                progress=lambda done: progress.update(task, completed=done),
            )
    finally:
        db.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if as_json:
        _print(json.dumps(summary.to_json(), indent=2))
    else:
        line = (
            f"imported {summary.imported} entries into {name}; "
            f"{summary.duplicates} duplicates, {summary.errors} bad lines"
        )
        if summary.deleted:
            line += f", {summary.deleted} upstream deletions"
        if summary.skipped_no_signal:
            line += f", {summary.skipped_no_signal} entries without a supported fingerprint"
        _print(line)
        _print_summary_details(summary)
    if summary.errors or summary.duplicates:
        raise typer.Exit(1)


def _print_summary_details(summary: svc.ImportSummary) -> None:
    if summary.rolled_back:
        _print("--atomic: nothing was imported (the import was rolled back)")
    for kind, count in sorted(summary.unsupported.items()):
        _print(f"unsupported fingerprint type {kind}: {count} (not matchable, not stored)")
    for field, count in sorted(summary.ignored_fields.items()):
        _print(f"ignored field {field}: {count}")


def _import_line(imp: sources.BankImport, into: str, bad: str) -> str:
    s = imp.summary
    line = (
        f"{imp.bank}: imported {s.imported} entries into {into}"
        + (" (created)" if imp.created else "")
        + f"; {s.duplicates} duplicates, {s.errors} {bad}"
    )
    if s.skipped_no_signal:
        line += f", {s.skipped_no_signal} without a supported fingerprint"
    return line


def _import_from(
    source: ImportSource,
    first: str,
    second: str | None,
    only: list[str],
    fmt: ImportFormat | None,
    atomic: bool,
    batch_size: int,
    as_json: bool,
    on_error: Callable[[ImportFormatError], None],
) -> None:
    from tipline.services import bank_sources as sources

    if fmt is not None or atomic:
        raise InputError("--format and --atomic do not go with --from")
    db = open_database()
    try:
        if source is ImportSource.HMA:
            if second is not None:
                raise InputError("--from hma takes one argument: HMA's database URL")
            imports = sources.import_from_hma(
                db, first, only=only, batch_size=batch_size, on_error=on_error
            )
            refused: list[tuple[Any, str]] = []
            failed: list[tuple[Any, str]] = []
        else:
            if second is None:
                raise InputError("--from pytx takes the bank and the state folder")
            if only:
                raise InputError("--only goes with --from hma")
            done = sources.import_from_pytx(
                db, first, second, batch_size=batch_size, on_error=on_error
            )
            imports, refused, failed = done.imports, done.refused, done.failed
    finally:
        db.close()
    bad = (
        any(i.error or i.summary.errors or i.summary.duplicates for i in imports)
        or refused
        or failed
    )
    if as_json:
        _print(
            json.dumps(
                {
                    "imports": [
                        {
                            "error": i.error,
                            "source": i.bank,
                            "created": i.created,
                            "notes": i.notes,
                            **i.summary.to_json(),
                        }
                        for i in imports
                    ],
                    "refused": [{"collab": c.name, "api": c.api, "run": r} for c, r in refused],
                    "failed": [{"collab": c.name, "reason": r} for c, r in failed],
                },
                indent=2,
            )
        )
    else:
        for imp in imports:
            if imp.error is not None:
                err_console.print(
                    f"error: bank {imp.bank!r} not imported: {imp.error}",
                    markup=False,
                    highlight=False,
                )
                continue
            if source is ImportSource.HMA:
                _print(_import_line(imp, imp.bank, "bad contents"))
            else:
                _print(_import_line(imp, first, "bad lines"))
            for note in imp.notes:
                _print(f"  note: {note}")
            _print_summary_details(imp.summary)
        for collab, command in refused:
            err_console.print(
                f"refused: collab {collab.name!r} ({collab.api}) is stored by threatexchange "
                f"as a pickle, which tipline does not load; run: {command}",
                markup=False,
                highlight=False,
            )
        for collab, reason in failed:
            err_console.print(
                f"error: collab {collab.name!r}: {reason}", markup=False, highlight=False
            )
    if bad:
        raise typer.Exit(1)


@bank_app.command("export")
def export_command(
    name: str = typer.Argument(..., help="Bank name."),
    fmt: ImportFormat = typer.Option(ImportFormat.CSV, "--format", "-f", help="File format."),
    output: str = typer.Option(STDIO, "--output", "-o", help="File to write, '-' for stdout."),
) -> None:
    """Export every entry of a bank (disabled ones included)."""
    db = open_database()
    try:
        svc.show_bank(db, name)  # NotFoundError before a header is written
        if output == STDIO:
            report = svc.export_entries(db, name, fmt, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            tmp = f"{output}.tmp{os.getpid()}"
            try:
                with open(tmp, "wb") as fh:
                    report = svc.export_entries(db, name, fmt, fh)
                os.replace(tmp, output)
            except OSError as exc:
                raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    finally:
        db.close()
    for kind, count in sorted(report.skipped_signals.items()):
        err_console.print(
            f"warning: {count} {kind} signal(s) cannot be written as {fmt.value}", markup=False
        )
    if output != STDIO:
        _print(f"exported {report.entries} entries to {output}")


@bank_app.command("delete")
def delete_command(
    name: str = typer.Argument(..., help="Bank name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a bank and all its entries (audited); asks first unless --yes."""
    db = open_database()
    try:
        info = svc.show_bank(db, name)
        if not yes:
            question = f"delete bank {name} and its {info.entries} entries?"
            if not sys.stdin.isatty():
                raise InputError(f"{question} pass --yes to confirm")
            if not typer.confirm(question, err=True):
                raise typer.Exit(1)
        entries = svc.delete_bank(db, name)
    finally:
        db.close()
    _print(f"deleted bank {name} ({entries} entries)")


@bank_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Bank name."),
    items: list[str] = typer.Argument(
        ...,
        help="Signals as TYPE:VALUE (e.g. pdq:<64 hex>), together one entry; or media "
        "files, one entry each, hashed with the reference decode.",
        metavar="HASH_OR_FILE",
    ),
    entry_id: str | None = typer.Option(None, "--entry-id", help="External entry id."),
    label: list[str] = typer.Option([], "--label", "-l", help="Label (e.g. A1); repeatable."),
    source: str | None = typer.Option(
        None, "--source", help="Provenance (for allow-banks: the reason shown)."
    ),
) -> None:
    """Add an entry by its hashes, or one entry per media file; matchable everywhere
    within a second. A file that cannot be hashed is reported and the others are added
    (exit status 1)."""
    files = [item for item in items if os.path.exists(item)]
    for item in items:
        if item not in files and ":" not in item:
            raise InputError(f"{item}: no such file, and not a TYPE:VALUE hash")
    if files and len(files) < len(items):
        raise InputError("give TYPE:VALUE hashes or media files, not both")
    if len(files) > 1 and entry_id is not None:
        raise InputError("--entry-id needs a single file")
    db = open_database()
    failed = 0
    try:
        if not files:
            entry = svc.add_entry(db, name, items, entry_id=entry_id, labels=label, source=source)
            _print(f"added {entry.entry_id} to {name}")
        if files:
            from tipline.services import bank_media
        for path in files:
            try:
                entry = bank_media.add_media_file(
                    db, name, path, entry_id=entry_id, labels=label, source=source
                )
            except (MediaError, ConflictError) as exc:  # this file only; go on
                failed += 1
                err_console.print(f"error: {path}: {exc.message}", markup=False, highlight=False)
                continue
            _print(f"added {entry.entry_id} to {name} ({path})")
    finally:
        db.close()
    if failed:
        raise typer.Exit(1)


@bank_app.command("disable")
def disable_command(
    name: str = typer.Argument(..., help="Bank name."),
    entry_ids: list[str] = typer.Argument(None, help="Entry ids; none = the whole bank."),
    reason: str = typer.Option("", "--reason", "-r", help="Why (required for entries)."),
) -> None:
    """Disable entries (they stop matching at once) or, without ids, the whole bank."""
    db = open_database()
    try:
        if entry_ids:
            svc.set_entries_disabled(db, name, entry_ids, disabled=True, reason=reason)
            _print(f"disabled {len(entry_ids)} entries in {name}")
        else:
            svc.update_bank(db, name, enabled=False)
            _print(f"disabled bank {name}")
    finally:
        db.close()


@bank_app.command("enable")
def enable_command(
    name: str = typer.Argument(..., help="Bank name."),
    entry_ids: list[str] = typer.Argument(None, help="Entry ids; none = the whole bank."),
) -> None:
    """Enable entries again or, without ids, the whole bank."""
    db = open_database()
    try:
        if entry_ids:
            svc.set_entries_disabled(db, name, entry_ids, disabled=False)
            _print(f"enabled {len(entry_ids)} entries in {name}")
        else:
            svc.update_bank(db, name, enabled=True)
            _print(f"enabled bank {name}")
    finally:
        db.close()


@bank_app.command("set")
def set_command(
    name: str = typer.Argument(..., help="Bank name."),
    threshold: list[str] = typer.Option(
        [], "--threshold", "-t", help="TYPE=N match threshold; repeatable."
    ),
    description: str | None = typer.Option(None, "--description", "-d", help="New description."),
    normalize: bool | None = typer.Option(
        None,
        "--normalize/--no-normalize",
        help="Match queries without their borders, caption bars and screenshot frames too.",
    ),
    region_matching: bool | None = typer.Option(
        None,
        "--region-matching/--no-region-matching",
        help="Switch the bank-side robust tier on/off: entries added from media also "
        "match crops (up to 10%) and rotations (up to 5 degrees) of their original.",
    ),
    auto_report: str | None = typer.Option(
        None,
        "--auto-report",
        help="Auto-report policy at match time: default (exact digest matches when "
        "report_auto_banks lists the bank), off, exact (exact digest matches) or trusted "
        "(exact digest matches and PDQ matches at distance 0).",
    ),
) -> None:
    """Change a bank's thresholds, description, normalised or region matching, or its
    auto-report policy."""
    db = open_database()
    try:
        bank = svc.update_bank(
            db,
            name,
            thresholds=_thresholds(threshold) or None,
            description=description,
            normalize=normalize,
            region_matching=region_matching,
            auto_report=auto_report,
        )
    finally:
        db.close()
    thresholds = ", ".join(f"{k}={v}" for k, v in sorted(bank.thresholds.items())) or "defaults"
    normalized = "on" if bank.normalize else "off"
    regions = "on" if bank.region_matching else "off"
    _print(
        f"bank {bank.name}: thresholds {thresholds}; normalize {normalized}; "
        f"region matching {regions}; auto-report {bank.auto_report}"
    )


def register(app: typer.Typer) -> None:
    """Add ``tipline bank`` to the root app."""
    app.add_typer(bank_app, name="bank")
