"""tipline's own hash feed, publisher side: signed pages of a bank's changes.

A page lists the entries of one bank written after a change-sequence number, oldest
first, each with its current state (signals, labels, or ``removed`` once disabled), so
applying pages is idempotent and the newest page always wins. The page names the feed,
this database's instance id, the ``after`` it answers and the ``next`` to ask for, and
when it was issued; all of it is covered by the Ed25519 signature (see ``signing.py``),
so a subscriber can refuse a page that is tampered, signed by another key, answers
another request, or is older than one it already applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tipline.banks.model import is_system_bank
from tipline.config import Settings
from tipline.errors import ConfigError, InputError, NotFoundError
from tipline.services.database import Database
from tipline.services.exchanges.signing import SigningKey
from tipline.store import bank_repository as repo
from tipline.store.bank_tables import BankEntryRow

#: the format tag of a page
FEED_FORMAT = "tipline-feed/1"
#: largest page a publisher serves
MAX_PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Publisher:
    """Which banks are published, and the key that signs them."""

    banks: frozenset[str]
    key: SigningKey | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        """The publisher of ``settings`` (``feed_banks``, ``feed_signing_key[_file]``);
        :class:`ConfigError` when it names a system bank, which holds a service's own
        records (the clearinghouse's holds every file it received, confirmed or not, with
        its intake's hashes) and is never published."""
        system = sorted(name for name in settings.feed_banks if is_system_bank(name))
        if system:
            raise ConfigError(f"system banks are never published in a feed: {', '.join(system)}")
        key: SigningKey | None = None
        if settings.feed_signing_key is not None:
            key = SigningKey.from_base64(settings.feed_signing_key.get_secret_value())
        elif settings.feed_signing_key_file is not None:
            key = SigningKey.from_base64(_read_key_file(settings.feed_signing_key_file))
        return cls(frozenset(settings.feed_banks), key)


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read the feed signing key file {path}") from None


def page_of(
    db: Database, publisher: Publisher, bank: str, *, after: int, limit: int = 1_000
) -> dict[str, Any]:
    """The signed page of ``bank`` after ``after`` (NotFoundError when ``bank`` is not
    published; ConfigError when no signing key is set)."""
    if bank not in publisher.banks:
        raise NotFoundError(f"no published feed {bank!r}")
    if publisher.key is None:
        raise ConfigError("this service publishes feeds but has no signing key set")
    if after < 0:
        raise InputError("after must be >= 0")
    limit = max(1, min(limit, MAX_PAGE))
    with db.sessions() as s:
        row = repo.get_bank(s, bank)
        entries = list(
            s.execute(
                select(BankEntryRow)
                .where(BankEntryRow.bank_id == row.id, BankEntryRow.seq > after)
                .order_by(BankEntryRow.seq)
                .limit(limit)
            ).scalars()
        )
        signals = repo.signals_of(s, [e.id for e in entries])
        instance = repo.instance_id(s)
    items = [
        {
            "id": e.entry_id,
            "seq": int(e.seq),
            "removed": bool(e.disabled),
            "labels": [] if e.disabled else list(e.labels),
            "signals": [] if e.disabled else [f"{x.type}:{x.value}" for x in signals[e.id]],
        }
        for e in entries
    ]
    page = {
        "format": FEED_FORMAT,
        "feed": bank,
        "instance": instance,
        "after": after,
        "next": items[-1]["seq"] if items else after,
        "more": len(items) == limit,
        "issued_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "items": items,
    }
    return publisher.key.sign(page)
