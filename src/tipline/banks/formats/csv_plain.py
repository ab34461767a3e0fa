"""Plain CSV hash lists: ``entry_id,signal_type,signal_value,labels,source``.

One row per signal; consecutive rows with the same ``entry_id`` form one entry (labels
and source come from its first row). ``labels`` are separated by ``;``. Column order is
free (the header names them); ``entry_id``, ``labels`` and ``source`` are optional (an
entry id is then derived from the signal, one entry per row). Also used for the HMA
CSV form, whose header starts ``signal_type,signal_value``, and for python-threatexchange's
``threatexchange dataset -P --csv`` (``signal_type,signal_str,collab,category,tags``):
there ``collab`` becomes the source, the space-separated ``tags`` the labels, and rows
whose aggregate ``category`` is ``NEGATIVE_CLASS`` (the collaboration says the signal is
not a positive) are not imported (counted as "no signal"); ``INVESTIGATION_SEED`` rows
get that label.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from tipline.banks.formats._text import Lines
from tipline.banks.formats.entries import (
    ParsedEntry,
    ReadItem,
    WriteReport,
    check_entry_id,
    derived_entry_id,
    parse_signal,
)
from tipline.banks.model import BankEntry, BankSignal
from tipline.errors import ImportFormatError

#: header aliases -> canonical column
_ALIASES = {
    "entry_id": "entry_id",
    "id": "entry_id",
    "content_id": "entry_id",
    "bank_content_id": "entry_id",
    "signal_type": "signal_type",
    "type": "signal_type",
    "signal_value": "signal_value",
    "value": "signal_value",
    "hash": "signal_value",
    "labels": "labels",
    "tags": "labels",
    "source": "source",
    "signal_str": "signal_value",
    "collab": "source",
    "category": "category",
}
#: pytx aggregate opinion categories that are not known material
NEGATIVE_CATEGORIES = frozenset({"NEGATIVE_CLASS"})
PLAIN_COLUMNS = ("entry_id", "signal_type", "signal_value", "labels", "source")
HMA_COLUMNS = ("signal_type", "signal_value", "entry_id", "labels", "source")
#: signal type names used by python-threatexchange -> tipline names
TE_ALIASES = {
    "photo_md5": "md5",
    "photo_sha1": "sha1",
    "photo_sha256": "sha256",
    "tipline_pdq": "pdq",  # tipline's pytx extension (tipline.txext): the same PDQ
    "tipline_vpdq": "vpdq",  # and the same vPDQ
}


def split_labels(text: str) -> tuple[str, ...]:
    """``"A1; B2"`` -> ``("A1", "B2")``."""
    return tuple(p.strip() for p in text.split(";") if p.strip())


class _Pending:
    def __init__(self, line: int, entry_id: str, labels: tuple[str, ...], source: str | None):
        self.line = line
        self.entry_id = entry_id
        self.labels = labels
        self.source = source
        self.signals: list[BankSignal] = []

    def done(self) -> ParsedEntry:
        return ParsedEntry(self.line, self.entry_id, tuple(self.signals), self.labels, self.source)


def read(stream: IO[bytes], *, path: str | None = None) -> Iterator[ReadItem]:
    """Entries of a CSV hash list (see the module docstring), errors per line."""
    lines = Lines(stream, path)
    reader = csv.reader(lines)
    columns: dict[str, int] | None = None
    pytx = False  # python-threatexchange's dataset CSV (space-separated tags)
    pending: _Pending | None = None
    while True:
        start = lines.line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield ImportFormatError(f"bad CSV: {exc}", path=path, line=lines.line)
            continue
        yield from lines.drain()
        if not row or all(not cell.strip() for cell in row) or row[0].startswith("#"):
            continue
        if columns is None:
            columns = {}
            for i, name in enumerate(row):
                key = _ALIASES.get(name.strip().lower())
                if key is not None and key not in columns:
                    columns[key] = i
                pytx = pytx or name.strip().lower() == "signal_str"
            if "signal_type" not in columns or "signal_value" not in columns:
                yield ImportFormatError(
                    "CSV header must name signal_type and signal_value columns",
                    path=path,
                    line=start,
                )
                return
            continue

        cols = columns

        def cell(name: str, row: Sequence[str] = row, cols: dict[str, int] = cols) -> str | None:
            i = cols.get(name)
            return row[i] if i is not None and i < len(row) else None

        try:
            kind = (cell("signal_type") or "").strip().lower()
            signal = parse_signal(
                TE_ALIASES.get(kind, kind), cell("signal_value") or "", line=start, path=path
            )
            raw_id = cell("entry_id")
            entry_id = (
                check_entry_id(raw_id, line=start, path=path)
                if raw_id is not None and raw_id.strip()
                else derived_entry_id(signal)
            )
        except ImportFormatError as exc:
            yield exc
            continue
        if pending is not None and pending.entry_id == entry_id and "entry_id" in columns:
            if signal not in pending.signals:
                pending.signals.append(signal)
            continue
        if pending is not None:
            yield pending.done()
            pending = None
        source = (cell("source") or "").strip() or None
        raw_labels = cell("labels") or ""
        labels = tuple(raw_labels.split()) if pytx else split_labels(raw_labels)
        category = (cell("category") or "").strip().upper()
        if category in NEGATIVE_CATEGORIES:
            yield ParsedEntry(start, entry_id, (), labels, source)
            continue
        if category == "INVESTIGATION_SEED" and category not in labels:
            labels = (*labels, category)
        pending = _Pending(start, entry_id, labels, source)
        pending.signals.append(signal)
    yield from lines.drain()
    if pending is not None:
        yield pending.done()


def _write(entries: Iterable[BankEntry], out: IO[bytes], columns: Sequence[str]) -> WriteReport:
    report = WriteReport()
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for entry in entries:
            for signal in entry.signals:
                values = {
                    "entry_id": entry.entry_id,
                    "signal_type": signal.type,
                    "signal_value": signal.value,
                    "labels": ";".join(entry.labels),
                    "source": entry.source or "",
                }
                writer.writerow([values[c] for c in columns])
            report.entries += 1
        text.flush()
    finally:
        text.detach()
    return report


def write(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` as plain CSV (one row per signal)."""
    return _write(entries, out, PLAIN_COLUMNS)


def write_hma_csv(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` as HMA-style CSV (``signal_type,signal_value`` first)."""
    return _write(entries, out, HMA_COLUMNS)
