"""python-threatexchange / HMA hash lists: ``<signal type> <value>`` lines, and CSV.

The text form is what ``threatexchange hash`` prints and HMA bank files hold::

    pdq 9c151c3af838278e3ef57c180c7d031c07aefd12f2ccc1e18f2a1e1c7d0ff163
    video_md5 d41d8cd98f00b204e9800998ecf8427e

Blank lines and lines starting with ``#`` are skipped; fields after the value (such as
the ``q=100 PATH`` that ``tipline hash`` adds) are ignored. The entry id of each line is
derived from its signal (``pdq:<hex>``), so importing the same list twice reports
duplicates instead of doubling the bank. vPDQ values are written in
python-threatexchange's JSON form (``vpdq ["<hex>,<quality>,<seconds>", ...]``, what
``threatexchange hash`` prints) and read in either form; other values spanning lines
cannot be written in this form, and writers count them as skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO

from tipline.banks.formats import csv_plain
from tipline.banks.formats._text import Lines
from tipline.banks.formats.entries import (
    ParsedEntry,
    ReadItem,
    WriteReport,
    derived_entry_id,
    parse_signal,
)
from tipline.banks.model import BankEntry
from tipline.errors import ImportFormatError
from tipline.signals.vpdq import to_pytx_json


def read(stream: IO[bytes], *, path: str | None = None) -> Iterator[ReadItem]:
    """Entries of a ``<type> <value>`` text list, one per line; errors per line."""
    lines = Lines(stream, path)
    for text in lines:
        yield from lines.drain()
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        # `tipline hash` prints "TYPE VALUE q=QUALITY PATH": extra fields are ignored
        parts = stripped.split(None, 2)
        kind, value = parts[0], parts[1] if len(parts) > 1 else ""
        rest = stripped[len(kind) :].strip()
        if rest.startswith("[") and "]" in rest:  # a JSON value (pytx's vPDQ) has spaces
            value = rest[: rest.rindex("]") + 1]
        if not value:
            yield ImportFormatError(
                f"expected '<signal type> <value>', got {stripped[:80]!r}",
                path=path,
                line=lines.line,
            )
            continue
        kind = kind.lower()
        try:
            signal = parse_signal(
                csv_plain.TE_ALIASES.get(kind, kind), value, line=lines.line, path=path
            )
        except ImportFormatError as exc:
            yield exc
            continue
        yield ParsedEntry(lines.line, derived_entry_id(signal), (signal,))
    yield from lines.drain()


def write(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write one ``<type> <value>`` line per single-line signal of ``entries``."""
    report = WriteReport()
    for entry in entries:
        for signal in entry.signals:
            if signal.type == "vpdq":
                out.write(f"vpdq {to_pytx_json(signal.value)}\n".encode())
                continue
            if "\n" in signal.value or " " in signal.value:
                report.skip(signal.type)
                continue
            out.write(f"{signal.type} {signal.value}\n".encode())
        report.entries += 1
    return report


def read_csv(stream: IO[bytes], *, path: str | None = None) -> Iterator[ReadItem]:
    """Entries of an HMA-style CSV (``signal_type,signal_value[,entry_id,labels,source]``)."""
    return csv_plain.read(stream, path=path)


def write_csv(entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` as HMA-style CSV."""
    return csv_plain.write_hma_csv(entries, out)
