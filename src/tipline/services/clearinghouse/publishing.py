"""Publishing: hashes of material an analyst confirmed as new go into the
clearinghouse's hash list, a bank (``clearinghouse_publish_bank``) that the exchange
feed publishes to providers (``TIPLINE_FEED_BANKS``) and that de-duplication itself
counts as known from then on.

One entry per distinct file content: entry id = the file's SHA-256; signals MD5, SHA-1,
SHA-256 and the PDQ or vPDQ hash de-duplication uses (PDQ under the quality floor is
left out: it would match flat pictures everywhere); labels = the classification the
analyst gave; source = the report. A content already in the list is not added twice.
A photo's region descriptors (:mod:`.published_regions`), when given, are stored with
its entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tipline.banks.model import Bank, BankSignal
from tipline.errors import NotFoundError
from tipline.services.clearinghouse.dedup import DedupSettings, file_signals
from tipline.store import bank_repository as repo
from tipline.store import region_repository as region_repo
from tipline.store.clearinghouse import IntakeFileRow


@dataclass(frozen=True, slots=True)
class Published:
    """What one publication added: the bank, and entry ids added / already present."""

    bank: str
    added: tuple[str, ...]
    present: tuple[str, ...]
    #: the hash list was created by this publication
    created: bool = False
    #: region descriptors stored with the added entries
    regions: int = 0


def publish_bank(session: Session, name: str) -> tuple[int, bool]:
    """The id of the hash list ``name`` (created, shared, on first use) and whether it
    was created now (the caller audits it, last in its transaction)."""
    try:
        return int(repo.get_bank(session, name).id), False
    except NotFoundError:
        bank = Bank(name=name, description="clearinghouse: hashes of material confirmed as new")
        return int(repo.create_bank(session, bank).id), True


def already_published(session: Session, name: str, sha256s: Sequence[str]) -> set[str]:
    """Which of the contents ``sha256s`` the hash list ``name`` already holds."""
    try:
        bank_id = int(repo.get_bank(session, name).id)
    except NotFoundError:
        return set()
    return set(repo.existing_entry_ids(session, bank_id, list(sha256s)))


def publish(
    session: Session,
    bank: str,
    files: Sequence[IntakeFileRow],
    *,
    labels: Sequence[str],
    source: str,
    settings: DedupSettings,
    regions: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> Published:
    """Add the files' hashes to the hash list ``bank`` in the caller's transaction,
    with the region descriptors of ``regions`` (by SHA-256) for the entries added."""
    bank_id, created = publish_bank(session, bank)
    wanted: dict[str, IntakeFileRow] = {}
    for row in files:
        wanted.setdefault(row.sha256, row)
    present = repo.existing_entry_ids(session, bank_id, list(wanted))
    entries = [
        repo.NewEntry(
            entry_id=sha256,
            signals=tuple(BankSignal(s.type, s.value) for s in file_signals(row, settings)),
            labels=tuple(labels),
            source=source,
        )
        for sha256, row in wanted.items()
        if sha256 not in present
    ]
    pks = repo.insert_entries(session, bank_id, entries)
    stored = sum(
        region_repo.insert_regions(session, pk, (regions or {}).get(e.entry_id, ()))
        for pk, e in zip(pks, entries, strict=True)
    )
    added = tuple(e.entry_id for e in entries)
    return Published(bank, added, tuple(sorted(present)), created, stored)
