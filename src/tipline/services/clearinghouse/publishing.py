"""Publishing: hashes of material an analyst confirmed as new go into the
clearinghouse's hash list, a bank (``clearinghouse_publish_bank``) that the exchange
feed publishes to providers (``TIPLINE_FEED_BANKS``) and that de-duplication itself
counts as known from then on.

One entry per distinct file content: entry id = the file's SHA-256; signals MD5, SHA-1,
SHA-256 and a video's vPDQ hash as de-duplication uses them, and a photo's PDQ with the
reference decode, as every bank entry's (PDQ under the quality floor is left out: it
would match flat pictures everywhere); labels = the classification the analyst gave;
source = the report. A content already in the list is not added twice. A photo's
reference PDQ and region descriptors are read back from the vault by the caller
(:mod:`.published_photos`); a photo whose PDQ the intake decoded fast and whose reference
PDQ is not given is published without one (:attr:`Published.pdq_left_out`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tipline.banks.model import Bank, BankSignal
from tipline.errors import NotFoundError
from tipline.services.clearinghouse.dedup import DedupSettings, file_signals
from tipline.services.clearinghouse.intake import pdq_decode
from tipline.signals.base import Signal
from tipline.signals.decode import DecodeMode
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
    #: added entries of photos published without their PDQ (no reference PDQ given, and
    #: the intake's was decoded fast)
    pdq_left_out: tuple[str, ...] = ()


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
    reference_pdq: Mapping[str, tuple[str, int]] | None = None,
) -> Published:
    """Add the files' hashes to the hash list ``bank`` in the caller's transaction,
    with the region descriptors of ``regions`` and the reference PDQ ``(hex, quality)``
    of ``reference_pdq`` (both by SHA-256) for the entries added."""
    bank_id, created = publish_bank(session, bank)
    wanted: dict[str, IntakeFileRow] = {}
    for row in files:
        wanted.setdefault(row.sha256, row)
    present = repo.existing_entry_ids(session, bank_id, list(wanted))
    left_out: list[str] = []
    entries = []
    for sha256, row in wanted.items():
        if sha256 in present:
            continue
        signals, pdq_left_out = _entry_signals(row, settings, (reference_pdq or {}).get(sha256))
        if pdq_left_out:
            left_out.append(sha256)
        entries.append(
            repo.NewEntry(
                entry_id=sha256,
                signals=tuple(BankSignal(s.type, s.value) for s in signals),
                labels=tuple(labels),
                source=source,
            )
        )
    pks = repo.insert_entries(session, bank_id, entries)
    stored = sum(
        region_repo.insert_regions(session, pk, (regions or {}).get(e.entry_id, ()))
        for pk, e in zip(pks, entries, strict=True)
    )
    added = tuple(e.entry_id for e in entries)
    return Published(bank, added, tuple(sorted(present)), created, stored, tuple(left_out))


def _entry_signals(
    row: IntakeFileRow, settings: DedupSettings, reference: tuple[str, int] | None
) -> tuple[tuple[Signal, ...], bool]:
    """The signals of ``row``'s entry, its PDQ the ``reference`` one when given; and
    whether its PDQ was left out (the intake decoded it fast, and no reference given)."""
    out: list[Signal] = []
    left_out = False
    for signal in file_signals(row, settings):
        if signal.type != "pdq":
            out.append(signal)
        elif reference is None:
            if _reference_decoded(row):
                out.append(signal)
            else:
                left_out = True
    if reference is not None and reference[1] >= settings.min_pdq_quality:
        out.append(Signal(type="pdq", value=reference[0], quality=reference[1]))
    return tuple(out), left_out


def _reference_decoded(row: IntakeFileRow) -> bool:
    """Whether the intake computed ``row``'s PDQ with the reference decode."""
    return all(
        pdq_decode(s) == DecodeMode.EXACT.value
        for s in row.signals or ()
        if s.get("type") == "pdq" and not s.get("variant")
    )
