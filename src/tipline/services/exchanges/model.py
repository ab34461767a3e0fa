"""What every exchange adapter speaks: deltas, pages, checkpoints and the adapter protocol.

An adapter turns a source's API into an iterator of :class:`Page` values. A page carries
the entries that changed and the checkpoint to resume *after* it; the sync applies the
page and stores that checkpoint in one transaction, so a crash between pages resumes
exactly where the last applied page ended. Applying is an upsert by entry id, so a page
delivered twice (or an entry repeated across pages) changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tipline.banks.model import BankSignal
from tipline.errors import ConfigError

#: JSON form of a checkpoint, as stored in ``exchanges.checkpoint``
CheckpointJson = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delta:
    """One entry as the source now has it, or its removal.

    ``unsupported`` names signal types the source sent that tipline cannot match (for
    instance PhotoDNA): they are counted and shown, never silently dropped. ``bank``
    overrides the exchange's bank (routing by classification); None keeps it.
    """

    entry_id: str
    signals: tuple[BankSignal, ...] = ()
    labels: tuple[str, ...] = ()
    removed: bool = False
    unsupported: tuple[str, ...] = ()
    bank: str | None = None
    #: the source's time of this event (unix seconds) when the source sends events out
    #: of order; an event older than one already applied for the entry is skipped
    source_ts: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Entries that changed, and the checkpoint that follows them.

    ``source_time``: the source's time of the newest data in the page (for lag), when
    the source says.
    """

    deltas: Sequence[Delta]
    checkpoint: CheckpointJson
    source_time: datetime | None = None
    #: entries the source sent that could not be read (a malformed fingerprint)
    invalid: int = 0


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """An exchange as configured: everything an adapter needs except the secret."""

    name: str
    kind: str
    bank: str
    config: Mapping[str, Any] = field(default_factory=dict)
    credential_env: str | None = None
    credential_file: str | None = None


class ExchangeAdapter(Protocol):
    """A source of entries. ``fetch`` yields pages after ``checkpoint`` (None: from the
    start) until the source has nothing more; it raises :class:`tipline.errors.ExchangeError`
    when the source fails beyond its retries. Pages must be applied in order."""

    def fetch(self, checkpoint: CheckpointJson | None) -> Iterator[Page]: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Totals:
    """Running counts of what syncs applied (stored as JSON on the exchange)."""

    pages: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    removed_unknown: int = 0
    no_signal: int = 0
    invalid: int = 0
    stale: int = 0
    unsupported: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Totals:
        """Read the stored form (missing keys count zero)."""
        data = data or {}
        return cls(
            pages=int(data.get("pages", 0)),
            added=int(data.get("added", 0)),
            updated=int(data.get("updated", 0)),
            unchanged=int(data.get("unchanged", 0)),
            removed=int(data.get("removed", 0)),
            removed_unknown=int(data.get("removed_unknown", 0)),
            no_signal=int(data.get("no_signal", 0)),
            invalid=int(data.get("invalid", 0)),
            stale=int(data.get("stale", 0)),
            unsupported={str(k): int(v) for k, v in dict(data.get("unsupported", {})).items()},
        )

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "pages": self.pages,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "removed_unknown": self.removed_unknown,
            "no_signal": self.no_signal,
            "invalid": self.invalid,
            "stale": self.stale,
            "unsupported": dict(sorted(self.unsupported.items())),
        }

    def add(self, other: Totals) -> None:
        """Add ``other`` into these totals."""
        self.pages += other.pages
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.removed_unknown += other.removed_unknown
        self.no_signal += other.no_signal
        self.invalid += other.invalid
        self.stale += other.stale
        for k, v in other.unsupported.items():
            self.unsupported[k] = self.unsupported.get(k, 0) + v


def check_fields(
    exchange: str, kind: str, data: CheckpointJson, types: Mapping[str, tuple[type, ...]]
) -> dict[str, Any]:
    """``data`` (a stored checkpoint) when each field of ``types`` has one of its types;
    ConfigError naming the exchange otherwise (``tipline exchange reset`` starts over)."""
    out: dict[str, Any] = {}
    for key, allowed in types.items():
        value = data.get(key)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(
                f"exchange {exchange!r}: the stored checkpoint is not a {kind} checkpoint "
                f"({key}={value!r}); `tipline exchange reset {exchange}` starts over"
            )
        out[key] = value
    return out


def iter_nothing() -> Iterator[Page]:
    """An empty page iterator (for adapters with nothing to fetch)."""
    return iter(())
