"""``tipline hash``: print the signals of files, folders (recursively) or stdin."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tipline.cli.console import OutputFormat, err_console
from tipline.cli.inputs import STDIN, Item, expand
from tipline.config import get_settings
from tipline.signals.base import Signal
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import (
    HashOptions,
    HashResult,
    check_signal_names,
    hash_bytes,
    hash_many,
)
from tipline.signals.limits import MediaLimits
from tipline.signals.pdq import LOW_QUALITY_THRESHOLD


def _results(items: list[Item], options: HashOptions, jobs: int) -> Iterator[HashResult]:
    """Results in item order; files go through the worker pool, stdin is read here."""
    files = [i for i in items if isinstance(i, str) and i != STDIN]
    limits = MediaLimits.of(get_settings())
    pooled = hash_many(files, options, jobs, limits=limits)
    for item in items:
        if isinstance(item, HashResult):
            yield item
        elif item == STDIN:
            # One byte over the limit is enough for hash_bytes to refuse it.
            limit = get_settings().max_file_bytes + 1
            yield hash_bytes(sys.stdin.buffer.read(limit), STDIN, options, limits=limits)
        else:
            yield next(pooled)


def _signal_dict(signal: Signal) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": signal.type,
        "value": signal.value,
        "quality": signal.quality,
        "low_quality": signal.low_quality,
        "variant": signal.variant,
    }
    if signal.frames:
        out["frames"] = [
            {"frame": f.index, "quality": f.quality, "hash": f.hash.hex(), "seconds": f.seconds}
            for f in signal.frames
        ]
    return out


class _Writer:
    """Writes results in one output format."""

    def __init__(self, fmt: OutputFormat, out: TextIO) -> None:
        self.fmt = fmt
        self.out = out
        self.csv = csv.writer(out, lineterminator="\n") if fmt is OutputFormat.CSV else None
        if self.csv is not None:
            self.csv.writerow(
                [
                    "path",
                    "media",
                    "type",
                    "variant",
                    "value",
                    "quality",
                    "low_quality",
                    "frame",
                    "seconds",
                ]
            )

    def write(self, result: HashResult) -> None:
        if self.fmt is OutputFormat.JSONL:
            record = {
                "path": result.path,
                "media": result.media,
                "size": result.size,
                "signals": [_signal_dict(s) for s in result.signals],
                "error": None
                if result.error is None
                else {"code": result.error.code, "message": result.error.message},
            }
            self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
            return
        if result.error is not None:
            return
        for s in result.signals:
            if s.frames:
                self._write_frames(result, s)
                continue
            if self.csv is not None:
                quality = "" if s.quality is None else s.quality
                self.csv.writerow(
                    [
                        result.path,
                        result.media,
                        s.type,
                        s.variant or "",
                        s.value,
                        quality,
                        int(s.low_quality),
                        "",
                        "",
                    ]
                )
                continue
            parts = [s.type, s.value]
            if s.quality is not None:
                parts.append(f"q={s.quality}")
            if s.low_quality:
                parts.append("low_quality")
            if s.variant is not None:
                parts.append(f"variant={s.variant}")
            parts.append(result.path)
            self.out.write(" ".join(parts) + "\n")

    def _write_frames(self, result: HashResult, signal: Signal) -> None:
        """A video signal: one line (or CSV row) per hashed frame."""
        for f in signal.frames:
            low = f.quality < LOW_QUALITY_THRESHOLD
            if self.csv is not None:
                self.csv.writerow(
                    [
                        result.path,
                        result.media,
                        signal.type,
                        "",
                        f.hash.hex(),
                        f.quality,
                        int(low),
                        f.index,
                        f"{f.seconds:.3f}",
                    ]
                )
                continue
            parts = [signal.type, f.hash.hex(), f"q={f.quality}"]
            if low:
                parts.append("low_quality")
            parts += [f"frame={f.index}", f"t={f.seconds:.3f}", result.path]
            self.out.write(" ".join(parts) + "\n")


def hash_command(
    paths: list[str] = typer.Argument(
        ..., help="Files, folders (hashed recursively) or '-' for bytes on stdin."
    ),
    fmt: OutputFormat = typer.Option(OutputFormat.TEXT, "--format", "-f", help="Output format."),
    signals: str = typer.Option(
        "",
        "--signals",
        "-s",
        help="Comma-separated signals (pdq,md5,sha1,sha256,vpdq,video_md5,video_sha256); "
        "default pdq,md5,sha256 for photos and vpdq,video_md5,video_sha256 for videos.",
    ),
    dihedral: bool = typer.Option(False, "--dihedral", help="Also the 7 rotated/flipped PDQs."),
    exact_decode: bool = typer.Option(
        False, "--exact-decode", help="Full-resolution reference decode (slower)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
) -> None:
    """Hash media: one line per signal (text), one object per file (jsonl) or CSV rows.

    Per-file errors go to stderr as "error: PATH: REASON"; exit status 1 if any failed.
    """
    names = check_signal_names(n for n in signals.split(",") if n.strip())
    options = HashOptions(
        signals=names,
        dihedral=dihedral,
        decode=DecodeMode.EXACT if exact_decode else DecodeMode.FAST,
    )
    items = expand(paths)
    writer = _Writer(fmt, sys.stdout)
    failed = 0
    show_progress = err_console.is_terminal and len(items) > 1
    progress = Progress(
        TextColumn("hashing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not show_progress,
        redirect_stdout=sys.stdout.isatty(),
    )
    # not entered when hidden: a stopped Progress prints a blank line on a non-terminal
    with progress if show_progress else contextlib.nullcontext():
        task = progress.add_task("hash", total=len(items))
        for result in _results(items, options, jobs):
            if result.error is not None:
                failed += 1
                err_console.print(
                    f"error: {result.path}: {result.error.message}", markup=False, highlight=False
                )
            writer.write(result)
            progress.advance(task)
    sys.stdout.flush()
    if failed:
        err_console.print(f"{failed} of {len(items)} files failed", markup=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``tipline hash`` to the root app."""
    app.command("hash")(hash_command)
