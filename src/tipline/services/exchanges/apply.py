"""Apply a page of exchange deltas to banks, inside the caller's transaction.

An upsert by entry id: a new entry is inserted with its signals; a known entry gets the
signals it lacks and the source's labels; a removal disables the entry with a reason
naming the exchange. An entry disabled for any other reason (a reviewer's false
positive, an operator) is never re-enabled by a sync. Signals are only ever added:
the match index is append-only, so a fingerprint the source drops from an entry stays
until the entry is removed (sources do not change an entry's fingerprints in practice).

Sources that send events out of time order (NCMEC) stamp each delta (``source_ts``):
the newest event applied per entry is kept, and an older event arriving later is
skipped (counted as ``stale``), so a deletion read before its entry's add stays a
deletion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from tipline.errors import ConfigError, NotFoundError
from tipline.services.exchanges.model import Delta, Totals
from tipline.store import bank_repository as repo
from tipline.store.bank_tables import BankEntryRow, BankRow, BankSignalRow
from tipline.store.exchanges import ExchangeEntryTimeRow


def removal_reason(exchange: str) -> str:
    """The disabled reason a removal by ``exchange`` writes (and recognises)."""
    return f"removed by exchange {exchange}"


def _last_per_entry(deltas: Sequence[Delta], default_bank: str) -> dict[tuple[str, str], Delta]:
    """The last delta of each (bank, entry id): a page repeating an entry means its
    latest state."""
    out: dict[tuple[str, str], Delta] = {}
    for d in deltas:
        key = (d.bank or default_bank, d.entry_id)
        out.pop(key, None)
        out[key] = d
    return out


def _existing(session: Session, bank_id: int, ids: Sequence[str]) -> dict[str, BankEntryRow]:
    found: dict[str, BankEntryRow] = {}
    for i in range(0, len(ids), repo.IN_CHUNK):
        chunk = ids[i : i + repo.IN_CHUNK]
        rows = session.execute(
            select(BankEntryRow).where(
                BankEntryRow.bank_id == bank_id, BankEntryRow.entry_id.in_(chunk)
            )
        ).scalars()
        found.update((r.entry_id, r) for r in rows)
    return found


def _in_time_order(
    session: Session, exchange_id: int, default_bank: str, deltas: Sequence[Delta], totals: Totals
) -> list[Delta]:
    """The deltas to apply, for sources that stamp events (``source_ts``): per entry the
    newest event of the page (a deletion after an add at the same second), and only
    when newer than the newest already applied; a deletion goes to the bank its entry
    went to. Records the times applied."""
    timed = [d for d in deltas if d.source_ts is not None]
    if not timed:
        return list(deltas)
    newest: dict[str, Delta] = {}
    for d in timed:
        cur = newest.get(d.entry_id)
        if cur is not None:
            totals.stale += 1
            if (int(cur.source_ts or 0), cur.removed) > (int(d.source_ts or 0), d.removed):
                continue
        newest[d.entry_id] = d
    ids = list(newest)
    stored: dict[str, ExchangeEntryTimeRow] = {}
    for i in range(0, len(ids), repo.IN_CHUNK):
        rows = session.execute(
            select(ExchangeEntryTimeRow).where(
                ExchangeEntryTimeRow.exchange_id == exchange_id,
                ExchangeEntryTimeRow.entry_id.in_(ids[i : i + repo.IN_CHUNK]),
            )
        ).scalars()
        stored.update((r.entry_id, r) for r in rows)
    out = [d for d in deltas if d.source_ts is None]
    for eid, d in newest.items():
        ts = int(d.source_ts or 0)
        row = stored.get(eid)
        if row is not None and (row.ts, row.deleted) > (ts, d.removed):
            totals.stale += 1
            continue
        bank = row.bank if d.removed and row is not None else d.bank or default_bank
        out.append(replace(d, bank=bank))
        if row is None:
            session.add(
                ExchangeEntryTimeRow(
                    exchange_id=exchange_id, entry_id=eid, ts=ts, deleted=d.removed, bank=bank
                )
            )
        else:
            row.ts, row.deleted, row.bank = ts, d.removed, bank
    session.flush()
    return out


def apply_deltas(
    session: Session,
    exchange: str,
    default_bank: str,
    deltas: Sequence[Delta],
    *,
    exchange_id: int | None = None,
) -> Totals:
    """Apply ``deltas`` (see the module docstring); returns what changed. Deltas with
    a ``source_ts`` need ``exchange_id`` (their times are kept per exchange)."""
    totals = Totals(pages=1)
    for d in deltas:
        for kind in d.unsupported:
            totals.unsupported[kind] = totals.unsupported.get(kind, 0) + 1
    if exchange_id is not None:
        deltas = _in_time_order(session, exchange_id, default_bank, deltas, totals)
    by_bank: dict[str, list[Delta]] = {}
    for (bank, _), d in _last_per_entry(deltas, default_bank).items():
        by_bank.setdefault(bank, []).append(d)
    for bank, items in by_bank.items():
        try:
            row = repo.get_bank(session, bank)
        except NotFoundError:
            raise ConfigError(f"exchange {exchange!r}: bank {bank!r} does not exist") from None
        _apply_bank(session, exchange, row, items, totals)
    return totals


def _apply_bank(
    session: Session, exchange: str, bank: BankRow, items: Sequence[Delta], totals: Totals
) -> None:
    reason = removal_reason(exchange)
    existing = _existing(session, bank.id, [d.entry_id for d in items])
    current = repo.signals_of(session, [r.id for r in existing.values()])
    fresh: list[repo.NewEntry] = []
    extra_signals: list[dict[str, Any]] = []
    for d in items:
        row = existing.get(d.entry_id)
        if d.removed:
            if row is None:
                totals.removed_unknown += 1
            elif row.disabled:
                totals.unchanged += 1
            else:
                repo.set_disabled(session, bank, d.entry_id, True, reason)
                totals.removed += 1
            continue
        if not d.signals:
            totals.no_signal += 1
            continue
        if row is None:
            fresh.append(repo.NewEntry(d.entry_id, d.signals, d.labels, f"exchange:{exchange}"))
            continue
        have = set(current[row.id])
        missing = [s for s in d.signals if s not in have]
        relabel = list(d.labels) != list(row.labels)
        revive = row.disabled and row.disabled_reason == reason
        if not (missing or relabel or revive):
            totals.unchanged += 1
            continue
        seq = repo.next_seq(session)
        row.seq = seq
        if relabel:
            row.labels = list(d.labels)
        if revive:
            row.disabled = False
            row.disabled_reason = None
        extra_signals.extend(
            {"entry_pk": row.id, "type": s.type, "value": s.value, "seq": seq} for s in missing
        )
        totals.updated += 1
    session.flush()
    if extra_signals:
        session.execute(insert(cast(Table, BankSignalRow.__table__)), extra_signals)
    if fresh:
        repo.insert_entries(session, bank.id, fresh)
        totals.added += len(fresh)
