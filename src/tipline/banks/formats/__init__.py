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

import enum
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from tipline.banks.model import BankEntry, BankSignal
from tipline.errors import HashFormatError, ImportFormatError
from tipline.signals.base import get_signal_type

#: Longest external entry id stored, in characters.
MAX_ENTRY_ID = 200


class ImportFormat(enum.Enum):
    """A hash-list file format."""

    HMA = "hma"
    HMA_CSV = "hma-csv"
    NCMEC = "ncmec"
    VICS = "vics"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One entry read from a hash-list file.

    ``line`` is the 1-based line where the entry starts. ``unsupported`` names the
    fingerprint types present in the file that tipline cannot match on (counted and
    reported by the import, never silently dropped); ``ignored_fields`` names input
    fields that were not understood. ``deleted`` marks an upstream deletion (NCMEC).
    """

    line: int
    entry_id: str | None
    signals: tuple[BankSignal, ...]
    labels: tuple[str, ...] = ()
    source: str | None = None
    unsupported: tuple[str, ...] = ()
    ignored_fields: tuple[str, ...] = ()
    deleted: bool = False
    media: str | None = None  # "photo" | "video" when the format says


ReadItem = ParsedEntry | ImportFormatError


@dataclass(slots=True)
class WriteReport:
    """What a writer did: entries written and signals it could not express."""

    entries: int = 0
    skipped_signals: dict[str, int] = field(default_factory=dict)

    def skip(self, kind: str) -> None:
        """Count one signal of type ``kind`` the format cannot hold."""
        self.skipped_signals[kind] = self.skipped_signals.get(kind, 0) + 1


def parse_signal(kind: str, value: str, *, line: int, path: str | None) -> BankSignal:
    """A validated :class:`BankSignal`; ImportFormatError (with the line) otherwise."""
    try:
        signal_type = get_signal_type(kind.strip().lower())
        return BankSignal(signal_type.name, signal_type.parse(value))
    except HashFormatError as exc:
        raise ImportFormatError(exc.message, path=path, line=line) from None


def derived_entry_id(signal: BankSignal) -> str:
    """An entry id for formats without one: ``type:value`` (hashed when too long)."""
    text = f"{signal.type}:{signal.value}"
    if len(text) <= MAX_ENTRY_ID and "\n" not in text:
        return text
    return f"{signal.type}:sha256:{hashlib.sha256(signal.value.encode()).hexdigest()}"


def check_entry_id(entry_id: str, *, line: int, path: str | None) -> str:
    """Strip and length-check an external entry id."""
    clean = entry_id.strip()
    if not clean:
        raise ImportFormatError("empty entry id", path=path, line=line)
    if len(clean) > MAX_ENTRY_ID:
        raise ImportFormatError(
            f"entry id longer than {MAX_ENTRY_ID} characters", path=path, line=line
        )
    return clean


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
