"""``tipline match``: hash files (or take hashes) and match them against the banks."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tipline.cli.console import OutputFormat, err_console
from tipline.cli.inputs import expand
from tipline.config import get_settings
from tipline.errors import InputError
from tipline.services.matching.match import Match
from tipline.signals.base import Signal, parse_typed_hash
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult, hash_many
from tipline.signals.limits import MediaLimits

#: Exit status when --fail-on-match is given and something matched (not suppressed).
EXIT_MATCH = 1
#: Exit status when some files could not be hashed (and nothing matched).
EXIT_ERRORS = 3


#: ``--format json`` (one JSON array at the end) before ``tipline hash`` and ``tipline
#: match`` shared one set of formats; still accepted, not advertised.
DEPRECATED_JSON = "json"


def _format(value: str) -> str:
    known = [f.value for f in OutputFormat]
    if value not in (*known, DEPRECATED_JSON):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, known))}.")
    if value == DEPRECATED_JSON:
        err_console.print(
            "warning: --format json is deprecated (it prints one array at the end); "
            "use --format jsonl (one object per match, as they come)",
            markup=False,
            highlight=False,
        )
    return value


_CSV_HEADER = [
    "item",
    "bank",
    "entry_id",
    "signal_type",
    "distance",
    "labels",
    "suppressed_by",
    "suppressed_reason",
    "query_match_percent",
    "compared_match_percent",
    "variant",
    "tier",
    "region",
]


def _row(item: str, m: Match) -> dict[str, Any]:
    return {
        "item": item,
        "bank": m.bank,
        "entry_id": m.entry_id,
        "signal_type": m.signal_type,
        "distance": m.distance,
        "labels": list(m.labels),
        "suppressed_by": m.suppressed_by,
        "suppressed_reason": m.suppressed_reason,
        "query_match_percent": m.query_match_percent,
        "compared_match_percent": m.compared_match_percent,
        "variant": m.variant,
        "tier": m.tier,
        "region": m.region,
    }


def match_command(
    paths: list[str] = typer.Argument(None, help="Files or folders (recursive) to hash."),
    hashes: list[str] = typer.Option(
        [], "--hash", help="Match a hash given as TYPE:VALUE (e.g. pdq:<64 hex>); repeatable."
    ),
    bank: list[str] = typer.Option(
        [], "--bank", "-b", help="Only report matches in this bank; repeatable."
    ),
    fmt_name: str = typer.Option(
        OutputFormat.TEXT.value,
        "--format",
        "-f",
        help="Output format: text, jsonl (one JSON object per match) or csv.",
        metavar="<text|jsonl|csv>",
        parser=_format,
    ),
    fail_on_match: bool = typer.Option(
        False, "--fail-on-match", help=f"Exit with status {EXIT_MATCH} when anything matched."
    ),
    dihedral: bool = typer.Option(
        False, "--dihedral", help="Also match the 7 rotated/flipped PDQs of photos."
    ),
    normalize: bool = typer.Option(
        True,
        "--normalize/--no-normalize",
        help="Also match photos without their borders, letterbox, caption bars and "
        "screenshot frames (PDQ variants trim, trim-even, uncaption, trim+uncaption...; on by "
        "default).",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Hashing worker processes."),
) -> None:
    """Match media or hashes against every enabled bank.

    Prints one line per match: item, bank, entry id, signal, integer distance, labels
    (suppressed matches say which allow-bank entry suppressed them and why). Files that
    cannot be hashed are reported on stderr (exit status 3 unless something matched).
    """
    from tipline.services.banks import show_bank
    from tipline.services.matching import Matcher

    legacy_json = fmt_name == DEPRECATED_JSON
    fmt = OutputFormat.JSONL if legacy_json else OutputFormat(fmt_name)

    queries: list[tuple[str, Signal]] = []
    for text in hashes:
        kind, value = parse_typed_hash(text)
        queries.append((text.strip(), Signal(type=kind, value=value)))
    if not paths and not queries:
        raise InputError("give PATH arguments or --hash TYPE:VALUE")
    matcher = Matcher.open(banks=bank or None)
    try:
        for name in bank:
            show_bank(matcher.db, name)  # NotFoundError for a typo
        rows: list[dict[str, Any]] = []
        writer = csv.writer(sys.stdout, lineterminator="\n") if fmt is OutputFormat.CSV else None
        if writer is not None:
            writer.writerow(_CSV_HEADER)
        failed = 0
        items_seen = len(queries)
        emitted = 0

        def emit(item: str, matches: list[Match]) -> None:
            nonlocal emitted
            emitted += len(matches)
            for m in matches:
                row = _row(item, m)
                if legacy_json:
                    rows.append(row)
                elif fmt is OutputFormat.JSONL:
                    sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
                elif writer is not None:
                    values = {**row, "labels": ";".join(m.labels)}
                    writer.writerow(["" if values[k] is None else values[k] for k in _CSV_HEADER])
                else:
                    line = (
                        f"{item}\t{m.bank}\t{m.entry_id}\t{m.signal_type}\t"
                        f"distance={m.distance}\tlabels={','.join(m.labels)}"
                    )
                    if m.variant is not None:
                        line += f"\tvariant={m.variant}"
                    if m.tier is not None:
                        line += f"\ttier={m.tier}\tregion={m.region}"
                    if m.query_match_percent is not None:
                        line += (
                            f"\tquery={m.query_match_percent:.1f}%"
                            f"\tcompared={m.compared_match_percent:.1f}%"
                        )
                    if m.suppressed_by:
                        line += f"\tsuppressed by {m.suppressed_by}: {m.suppressed_reason}"
                    sys.stdout.write(line + "\n")

        matched = False
        for item, signal in queries:
            found = matcher.match_signals([signal])
            matched = matched or any(m.suppressed_by is None for m in found)
            emit(item, found)
        if paths:
            items = expand(paths)
            items_seen += len(items)
            files = [i for i in items if isinstance(i, str)]
            options = HashOptions(dihedral=dihedral, normalize=normalize, decode=DecodeMode.FAST)
            progress = Progress(
                TextColumn("matching"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err_console,
                transient=True,
                disable=not (err_console.is_terminal and len(items) > 1),
            )
            results = hash_many(files, options, jobs, limits=MediaLimits.of(get_settings()))
            # not entered when hidden: rich 13 prints a blank line stopping a Progress
            # on a non-terminal
            with contextlib.nullcontext() if progress.disable else progress:
                task = progress.add_task("match", total=len(items))
                for entry in items:
                    result: HashResult = entry if isinstance(entry, HashResult) else next(results)
                    progress.advance(task)
                    if result.error is not None:
                        failed += 1
                        err_console.print(
                            f"error: {result.path}: {result.error.message}",
                            markup=False,
                            highlight=False,
                        )
                        continue
                    found = matcher.match_signals(result.signals)
                    matched = matched or any(m.suppressed_by is None for m in found)
                    emit(result.path, found)
        if legacy_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        sys.stdout.flush()
        if not emitted:  # say so: an empty stdout alone looks like nothing happened
            banks_searched = len(matcher.searched_banks())
            err_console.print(
                f"no matches ({_count(items_seen, 'item')}, {_count(banks_searched, 'bank')})",
                markup=False,
                highlight=False,
            )
    finally:
        matcher.close()
    if fail_on_match and matched:
        raise typer.Exit(EXIT_MATCH)
    if failed:
        raise typer.Exit(EXIT_ERRORS)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def register(app: typer.Typer) -> None:
    """Add ``tipline match`` to the root app."""
    app.command("match")(match_command)
