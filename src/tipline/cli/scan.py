"""``tipline scan``: resumable batch scans of folders, file lists and ``file://`` URLs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tipline.cli.console import err_console, out_console
from tipline.errors import InputError
from tipline.services.scan import (
    DEFAULT_BATCH_SIZE,
    ProgressFn,
    ScanOptions,
    ScanRequest,
    ScanSummary,
    default_matcher_loader,
    run_scan,
)
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import check_signal_names


class _LineProgress:
    """One line on stderr every ``interval`` seconds (for logs and pipes)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.start = time.monotonic()
        self.last = self.start

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
        err_console.print(
            f"scan: {done}/{total} items, {rate:.1f} items/s, eta {eta}",
            markup=False,
            highlight=False,
        )


def _announce(scan_id: str) -> None:
    err_console.print(
        f"scan {scan_id} (resume with: tipline scan --resume {scan_id})",
        markup=False,
        highlight=False,
    )


#: Exit status when some items failed (as ``tipline match``); they are recorded all the same.
EXIT_ERRORS = 3


def _item_error(path: str, message: str) -> None:
    err_console.print(f"error: {path}: {message}", markup=False, highlight=False)


def _print_summary(summary: ScanSummary) -> None:
    out_console.print(
        f"scan {summary.scan_id} {summary.status}: scanned {summary.scanned}, "
        f"matched {summary.matched}, skipped {summary.skipped} (already done), "
        f"failed {summary.failed}, {summary.seconds:.1f} s, {summary.rate:.1f} items/s",
        markup=False,
        highlight=False,
    )


def scan_command(
    sources: list[str] = typer.Argument(
        None,
        help="Folders (recursive), files, file:// URLs, @LIST (one path or ID<TAB>PATH per "
        "line) or '-' for a list on stdin.",
    ),
    resume: str | None = typer.Option(None, "--resume", help="Resume the scan with this id."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    ray: str | None = typer.Option(
        None, "--ray", help="Run on Ray: 'auto', a cluster address, or 'local'."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Also write all results to FILE.jsonl or FILE.csv."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Store URL (default: TIPLINE_DATABASE_URL or SQLite)."
    ),
    signals: str = typer.Option(
        "", "--signals", "-s", help="Comma-separated signals (default pdq,md5,sha256)."
    ),
    dihedral: bool = typer.Option(False, "--dihedral", help="Also the 7 rotated/flipped PDQs."),
    normalize: bool = typer.Option(
        True,
        "--normalize/--no-normalize",
        help="Also match photos without their borders, letterbox, caption bars and "
        "screenshot frames (on by default; the match says which variant matched).",
    ),
    exact_decode: bool = typer.Option(False, "--exact-decode", help="Full-resolution decode."),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Follow symbolic links in folders (loops refused)."
    ),
    batch_size: int = typer.Option(
        DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Items per checkpoint."
    ),
    no_match: bool = typer.Option(False, "--no-match", help="Hash and record only."),
    progress_interval: float = typer.Option(
        10.0, "--progress-interval", help="Seconds between progress lines when not on a terminal."
    ),
) -> None:
    """Scan media: hash, match against the enabled banks, record every item.

    Interrupt it any time (even kill -9) and continue with --resume ID: no result is
    lost and recorded files are not hashed again (a resume reuses the scan's stored
    sources and options, with paths made absolute, so any folder will do; a '-' source
    reads the list from stdin again). Per-item errors are recorded and printed on
    stderr, not fatal; the exit status is 3 when any item of this run failed.
    """
    if resume is None and not sources:
        raise InputError("give SOURCE... or --resume ID")
    if resume is not None and sources:
        raise InputError("--resume takes no sources: they are stored with the scan")
    options = ScanOptions(
        signals=check_signal_names(n for n in signals.split(",") if n.strip()),
        dihedral=dihedral,
        decode=DecodeMode.EXACT if exact_decode else DecodeMode.FAST,
        follow_symlinks=follow_symlinks,
        batch_size=batch_size,
        normalize=normalize and not no_match,
    )
    request = ScanRequest(
        sources=tuple(sources or ()),
        resume_id=resume,
        options=options,
        jobs=jobs,
        ray_address=ray,
        database_url=database_url,
        matcher=None if no_match else default_matcher_loader(database_url),
        out=out,
    )
    if err_console.is_terminal:
        bar = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} items/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        task = bar.add_task("scan", total=None, rate=0.0)
        start = time.monotonic()

        def on_progress(done: int, total: int) -> None:
            elapsed = time.monotonic() - start
            bar.update(task, completed=done, total=total, rate=done / elapsed if elapsed else 0)

        with bar:
            summary = run_scan(
                request,
                progress=on_progress,
                stdin=sys.stdin,
                on_start=_announce,
                on_error=_item_error,
            )
    else:
        line: ProgressFn = _LineProgress(progress_interval)
        summary = run_scan(
            request, progress=line, stdin=sys.stdin, on_start=_announce, on_error=_item_error
        )
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(EXIT_ERRORS)


def register(app: typer.Typer) -> None:
    """Add ``tipline scan`` to the root app."""
    app.command("scan")(scan_command)
