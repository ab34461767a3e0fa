"""Hash-list file formats: read streamed into :class:`ParsedEntry` values, write back.

Every reader takes a binary stream and yields either a :class:`ParsedEntry` or an
:class:`~tipline.errors.ImportFormatError` naming the line, so one bad line never stops
an import. Readers never hold more than one entry (plus a read buffer) in memory.

Formats:

* ``hma``      - python-threatexchange / HMA text: ``<signal type> <value>`` per line.
* ``hma-csv``  - the same as CSV with a ``signal_type,signal_value`` header.
* ``ncmec``    - NCMEC hash-sharing XML entries (images, videos, deletions).
* ``vics``     - Project VIC VICS JSON (``{"value": [{"MediaID", "MD5", ...}]}``).
* ``csv``      - plain CSV: ``entry_id,signal_type,signal_value,labels,source``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO

from tipline.banks.formats.entries import (
    MAX_ENTRY_ID,
    ImportFormat,
    ParsedEntry,
    ReadItem,
    WriteReport,
    check_entry_id,
    derived_entry_id,
    parse_signal,
)
from tipline.banks.model import BankEntry


def read_entries(
    fmt: ImportFormat, stream: IO[bytes], *, path: str | None = None
) -> Iterator[ReadItem]:
    """Entries (or per-line errors) of ``stream`` in ``fmt``, streamed."""
    from tipline.banks.formats import csv_plain, hma, ncmec, vics

    if fmt is ImportFormat.HMA:
        return hma.read(stream, path=path)
    if fmt is ImportFormat.HMA_CSV:
        return hma.read_csv(stream, path=path)
    if fmt is ImportFormat.NCMEC:
        return ncmec.read(stream, path=path)
    if fmt is ImportFormat.VICS:
        return vics.read(stream, path=path)
    return csv_plain.read(stream, path=path)


def write_entries(fmt: ImportFormat, entries: Iterable[BankEntry], out: IO[bytes]) -> WriteReport:
    """Write ``entries`` to ``out`` in ``fmt``; returns what could not be expressed."""
    from tipline.banks.formats import csv_plain, hma, ncmec, vics

    if fmt is ImportFormat.HMA:
        return hma.write(entries, out)
    if fmt is ImportFormat.HMA_CSV:
        return hma.write_csv(entries, out)
    if fmt is ImportFormat.NCMEC:
        return ncmec.write(entries, out)
    if fmt is ImportFormat.VICS:
        return vics.write(entries, out)
    return csv_plain.write(entries, out)


def guess_format(name: str) -> ImportFormat:
    """The format a file name suggests: ``.xml`` NCMEC, ``.json`` VICS, ``.csv`` plain
    CSV, anything else HMA text."""
    lower = name.lower()
    if lower.endswith(".xml"):
        return ImportFormat.NCMEC
    if lower.endswith(".json"):
        return ImportFormat.VICS
    if lower.endswith(".csv"):
        return ImportFormat.CSV
    return ImportFormat.HMA


__all__ = [
    "MAX_ENTRY_ID",
    "ImportFormat",
    "ParsedEntry",
    "ReadItem",
    "WriteReport",
    "check_entry_id",
    "derived_entry_id",
    "guess_format",
    "parse_signal",
    "read_entries",
    "write_entries",
]
