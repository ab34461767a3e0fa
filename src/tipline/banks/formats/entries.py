"""The values every hash-list format reader and writer shares: the format names, a
parsed entry, a write report, and entry-id and signal validation."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from tipline.banks.model import BankSignal
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
    timestamp: str | None = None  # the source's time of this entry or deletion (NCMEC)


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
