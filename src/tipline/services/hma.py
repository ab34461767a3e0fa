"""HMA (OpenMediaMatch) use cases: bank content addressed by its integer id, with
HMA's note, metadata and ``disable_until_ts``; HMA's bank-name rule; hash comparison.

The HTTP routes in :mod:`tipline.api.routes_hma` call these. Every write is audited in
its transaction, like every other bank write (:mod:`tipline.services.banks`).

HMA content is a tipline bank entry. Its ``id`` is the entry's integer primary key; its
entry id is ``hma-<ULID>``, fresh for every add, so adding the same media twice makes two
contents, as in HMA. ``disable_until_ts`` follows HMA's magic values: ``1`` enabled, ``0``
disabled, any other value the unix time the content matches again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from ulid import ULID

from tipline.banks.model import Bank, BankEntry, BankSignal
from tipline.errors import HashFormatError, InputError
from tipline.services.auth import Principal, require_tenant
from tipline.services.banks import _audit, create_bank
from tipline.services.database import Database
from tipline.services.regions.descriptors import media_regions
from tipline.signals.base import IndexKind, get_signal_type, index_kind
from tipline.signals.limits import MediaLimits
from tipline.store import bank_repository as repo
from tipline.store import region_repository as region_repo
from tipline.store.bank_tables import BankEntryRow, BankRow, BankSignalRow
from tipline.store.db import transaction

#: HMA's bank (and exchange) name rule.
BANK_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
#: ``disable_until_ts`` magic values (python-threatexchange's BankContentConfig).
ENABLED = 1
DISABLED = 0
#: Longest note HMA accepts.
MAX_NOTE = 255
#: Where the content came from (entry ``source``) for the two HMA add routes.
SOURCE_CONTENT = "hma content"
SOURCE_SIGNAL = "hma signal"


@dataclass(frozen=True, slots=True)
class Content:
    """One bank content as HMA shows it."""

    id: int
    bank: Bank
    entry: BankEntry
    disable_until_ts: int
    note: str | None
    metadata: dict[str, Any] | None


def check_bank_name(name: str) -> str:
    """HMA's rule ``[A-Z_][A-Z0-9_]*``; InputError (400) otherwise."""
    if not BANK_NAME.fullmatch(name):
        raise InputError("Bank names must be UPPER_WITH_UNDERSCORE")
    return name


def check_note(note: object) -> str | None:
    """HMA's note rule: empty -> None; a string of at most 255 characters."""
    if not note:
        return None
    if not isinstance(note, str):
        raise InputError("note should be a string")
    if len(note) > MAX_NOTE:
        raise InputError(f"note must be at most {MAX_NOTE} characters")
    return note


def create_hma_bank(db: Database, who: Principal, name: str, *, enabled: bool) -> Bank:
    """Create a bank named by HMA's rule (InputError) in ``who``'s tenant
    (ConflictError when the name is taken)."""
    return create_bank(db, check_bank_name(name), enabled=enabled, tenant=who.tenant, actor=who)


def _bank(s: Session, who: Principal, name: str, *, write: bool) -> BankRow:
    row = repo.get_bank(s, name)
    require_tenant(who, row.tenant, write=write, what=f"bank '{name}'")
    return row


def set_disable_until(entry: BankEntryRow, disable_until_ts: int, *, now: float) -> None:
    """Apply HMA's ``disable_until_ts`` to an entry row: ``1`` (or a time already
    past) enables it, ``0`` disables it, a later time disables it until then."""
    if disable_until_ts == ENABLED or (disable_until_ts != DISABLED and disable_until_ts <= now):
        entry.disabled, entry.disabled_reason, entry.disable_until = False, None, None
        return
    entry.disabled = True
    entry.disable_until = None if disable_until_ts == DISABLED else disable_until_ts
    entry.disabled_reason = (
        "disabled (HMA)"
        if disable_until_ts == DISABLED
        else f"disabled until {disable_until_ts} (HMA)"
    )


def _disable_until_ts(row: BankEntryRow) -> int:
    if not row.disabled:
        return ENABLED
    return DISABLED if row.disable_until is None else int(row.disable_until)


def _content(s: Session, bank: BankRow, row: BankEntryRow) -> Content:
    signals = repo.signals_of(s, [row.id])[row.id]
    return Content(
        id=int(row.id),
        bank=repo.to_bank(bank),
        entry=repo.to_entry(row, bank.name, signals),
        disable_until_ts=_disable_until_ts(row),
        note=row.note,
        metadata=dict(row.content_metadata) if row.content_metadata else None,
    )


def add_content(
    db: Database,
    who: Principal,
    bank: str,
    signals: Mapping[str, Any],
    *,
    note: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    source: str = SOURCE_CONTENT,
    photo: bytes | None = None,
    limits: MediaLimits | None = None,
) -> Content:
    """A new content in ``bank`` holding ``signals`` (type -> value, or a list of values
    of one media item, the first being HMA's; parsed to canonical form, InputError naming
    the bad one), always under a fresh id. ``photo``, the bytes the signals were hashed
    from (already read under ``limits``), adds the content's region descriptors (crops
    and small rotations of it match too: :mod:`tipline.services.regions`)."""
    if not signals:
        raise InputError("No signals given")
    parsed: list[BankSignal] = []
    for name, given in signals.items():
        try:
            kind = get_signal_type(str(name).strip().lower())
        except HashFormatError:
            raise InputError(f"No such signal type {name}") from None
        for value in given if isinstance(given, list) else [given]:
            if not isinstance(value, str):
                raise InputError(f"Invalid {name} signal: expected a string")
            try:
                signal = BankSignal(kind.name, kind.parse(value))
            except HashFormatError as exc:
                raise InputError(f"Invalid {name} signal: {exc.message}") from None
            if signal not in parsed:
                parsed.append(signal)
    clean_note = check_note(note)
    regions = media_regions(photo, limits) if photo else []
    entry_id = f"hma-{ULID()}"
    with transaction(db.sessions) as s:
        row = _bank(s, who, bank, write=True)
        (pk,) = repo.insert_entries(s, row.id, [repo.NewEntry(entry_id, tuple(parsed), (), source)])
        stored = region_repo.insert_regions(s, pk, regions)
        entry = s.get(BankEntryRow, pk)
        assert entry is not None
        entry.note = clean_note
        entry.content_metadata = dict(metadata) if metadata else None
        s.flush()
        details: dict[str, Any] = {"signals": [x.type for x in parsed], "hma_id": pk}
        if stored:
            details["regions"] = stored
        _audit(s, who, "entry.add", ("entry", f"{bank}/{entry_id}"), details, tenant=row.tenant)
        return _content(s, row, entry)


def get_content(db: Database, who: Principal, bank: str, content_id: int) -> Content:
    """Content ``content_id`` of ``bank`` (NotFoundError for a missing bank or content,
    or a bank of another tenant)."""
    with db.sessions() as s:
        row = _bank(s, who, bank, write=False)
        return _content(s, row, repo.entry_by_pk(s, row, content_id))


_UNSET: Any = object()


def update_content(
    db: Database,
    who: Principal,
    bank: str,
    content_id: int,
    *,
    disable_until_ts: int | None = None,
    note: object = _UNSET,
    now: float,
    max_until: int,
) -> Content:
    """Set ``disable_until_ts`` (HMA's magic values; at most ``max_until``) and/or the
    note; the change reaches every matcher on its next call."""
    clean_note = check_note(note) if note is not _UNSET else None
    if disable_until_ts is not None:
        if disable_until_ts < 0:
            raise InputError("disable_until_ts must be a non-negative integer")
        if disable_until_ts > max_until:
            raise InputError("disable_until_ts must be less than 5 years in the future")
    with transaction(db.sessions) as s:
        row = _bank(s, who, bank, write=True)
        entry = repo.entry_by_pk(s, row, content_id)
        details: dict[str, Any] = {"hma_id": content_id}
        if disable_until_ts is not None:
            set_disable_until(entry, disable_until_ts, now=now)
            details["disable_until_ts"] = disable_until_ts
        if note is not _UNSET:
            entry.note = clean_note
            details["note"] = clean_note is not None
        repo.touch(s, entry)
        _audit(
            s,
            who,
            "entry.update",
            ("entry", f"{bank}/{entry.entry_id}"),
            details,
            tenant=row.tenant,
        )
        return _content(s, row, entry)


def delete_content(db: Database, who: Principal, bank: str, content_id: int) -> int:
    """Delete content ``content_id`` of ``bank``: 1, or 0 when it is not there (the
    bank must exist)."""
    with transaction(db.sessions) as s:
        row = _bank(s, who, bank, write=True)
        entry = s.get(BankEntryRow, content_id)
        if entry is None or entry.bank_id != row.id:
            return 0
        entry_id = entry.entry_id
        s.query(BankSignalRow).filter(BankSignalRow.entry_pk == entry.id).delete()
        s.delete(entry)
        s.flush()
        _audit(
            s,
            who,
            "entry.delete",
            ("entry", f"{bank}/{entry_id}"),
            {"hma_id": content_id},
            tenant=row.tenant,
        )
        return 1


def compare(type_name: str, left: str, right: str) -> tuple[bool, dict[str, Any]]:
    """HMA's ``/m/compare`` for one signal type: ``(match, similarity)``.

    Hamming types give ``{"distance": bits}`` (a match within the type's default
    threshold, 31 bits for PDQ as in python-threatexchange); video types give the two
    match percentages (match: query >= 80%); exact types ``{}`` (match: equal values).
    InputError for an unknown type or a malformed hash.
    """
    try:
        kind = get_signal_type(type_name)
    except HashFormatError:
        raise InputError(f"No such SignalType '{type_name}'") from None
    try:
        a, b = kind.parse(left), kind.parse(right)
    except HashFormatError as exc:
        raise InputError(f"Invalid {type_name} hash: {exc.message}") from None
    how = index_kind(kind)
    if how is IndexKind.EXACT:
        return a == b, {}
    if how is IndexKind.VIDEO:
        from tipline.signals.vpdq import MATCH_PERCENT, match_percentages

        frames = getattr(kind, "frames", None)
        if frames is not None:
            q, c = match_percentages(frames(a), frames(b))
            return q >= MATCH_PERCENT, {"query_match_percent": q, "compared_match_percent": c}
    distance = int(kind.distance(a, b))
    return distance <= int(kind.default_threshold), {"distance": distance}
