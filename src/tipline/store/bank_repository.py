"""Repository functions for banks, entries and signals (inside the caller's session).

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves transaction
control to the caller (see :func:`tipline.store.db.transaction`). Each write to an
entry takes fresh numbers from the change sequence (:func:`next_seq`), so
:func:`changes_since` / :func:`signals_since` answer "what changed after X".
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from tipline.banks.model import Bank, BankEntry, BankSignal
from tipline.errors import ConflictError, NotFoundError
from tipline.store.bank_tables import (
    BankEntryRow,
    BankListChangeRow,
    BankRow,
    BankSignalRow,
    BankStateRow,
)
from tipline.store.base import utcnow

#: Largest number of bound parameters put in one ``IN (...)`` list.
IN_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to insert (already validated)."""

    entry_id: str
    signals: tuple[BankSignal, ...]
    labels: tuple[str, ...] = ()
    source: str | None = None
    added_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SignalChange:
    """One signal row added after a given sequence number."""

    entry_pk: int
    type: str
    value: str
    seq: int


@dataclass(frozen=True, slots=True)
class EntryHit:
    """An entry with its bank, as needed to turn an index hit into a match."""

    entry_pk: int
    bank: Bank
    entry: BankEntry


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- change sequence ----------------------------------------------------------------------


def next_seq(session: Session, count: int = 1) -> int:
    """Reserve ``count`` sequence numbers; returns the first. Locks the counter row
    until the transaction ends, so sequence order equals commit order."""
    bump, bump_returning = _next_seq_statements()
    if session.get_bind().dialect.name == "postgresql":  # one round trip
        return int(session.execute(bump_returning, {"n": count}).scalar_one()) - count + 1
    session.execute(bump, {"n": count})
    last = int(session.execute(select(BankStateRow.seq).where(BankStateRow.id == 1)).scalar_one())
    return last - count + 1


@functools.cache
def _next_seq_statements() -> tuple[Any, Any]:
    """(move the counter by ``:n``, the same returning the new value), built once."""
    state = cast(Table, BankStateRow.__table__)
    bump = update(state).where(state.c.id == 1).values(seq=state.c.seq + bindparam("n"))
    return bump, bump.returning(state.c.seq)


def current_seq(session: Session) -> int:
    """The last sequence number handed out (0 on a new database)."""
    return int(session.execute(select(BankStateRow.seq).where(BankStateRow.id == 1)).scalar_one())


#: (change sequence, committed bank-list changes): what a Matcher's cache was read at
ChangeMarks = tuple[int, int]


def change_marks(session: Session) -> ChangeMarks:
    """The change sequence (:func:`current_seq`) and the number of committed changes of
    the banks table (:class:`~tipline.store.bank_tables.BankListChangeRow`), in one
    tiny read. Every committed write of a signal or region row moves the first, every
    committed write of a bank row the second; so equal marks, read twice, mean that
    nothing a Matcher caches (signals, regions, the bank list) changed in between."""
    seq, changes = session.execute(_change_marks_query()).one()
    return int(seq), int(changes)


def change_marks_columns() -> tuple[Any, Any]:
    """:func:`change_marks` as two scalar subqueries, for a caller that folds them into
    a statement it sends anyway (labelled ``bank_seq`` and ``bank_list_changes``)."""
    state = cast(Table, BankStateRow.__table__).c
    changes = cast(Table, BankListChangeRow.__table__)
    return (
        select(state.seq).where(state.id == 1).scalar_subquery().label("bank_seq"),
        select(func.count()).select_from(changes).scalar_subquery().label("bank_list_changes"),
    )


@functools.cache
def _change_marks_query() -> Any:
    """:func:`change_marks`' statement, built once."""
    return select(*change_marks_columns())


def instance_id(session: Session) -> str:
    """A random id created with the database (identifies it to index files)."""
    return str(
        session.execute(select(BankStateRow.instance).where(BankStateRow.id == 1)).scalar_one()
    )


# -- banks --------------------------------------------------------------------------------


def to_bank(row: BankRow | Row[Any]) -> Bank:
    """Domain value of a bank row (an ORM row, or a Core row of the same columns)."""
    return Bank(
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        is_allow_bank=row.is_allow_bank,
        thresholds={str(k): int(v) for k, v in (row.thresholds or {}).items()},
        tenant=row.tenant,
        normalize=row.normalize,
        region_matching=bool(row.region_matching),
        auto_report=row.auto_report,
    )


def create_bank(session: Session, bank: Bank) -> BankRow:
    """Insert ``bank``; ConflictError when the name is taken."""
    if session.execute(select(BankRow.id).where(BankRow.name == bank.name)).first():
        raise ConflictError(f"bank {bank.name!r} already exists")
    now = utcnow()
    row = BankRow(
        name=bank.name,
        description=bank.description,
        enabled=bank.enabled,
        is_allow_bank=bank.is_allow_bank,
        thresholds=dict(bank.thresholds),
        tenant=bank.tenant,
        normalize=bank.normalize,
        region_matching=bank.region_matching,
        auto_report=bank.auto_report,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_bank(session: Session, name: str, *, for_update: bool = False) -> BankRow:
    """The bank called ``name``; NotFoundError otherwise."""
    stmt = select(BankRow).where(BankRow.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no bank named {name!r}")
    return row


def bank_values(session: Session) -> list[Bank]:
    """Every bank as a domain value (:func:`to_bank` of :func:`list_banks`), by name, read
    as plain columns with a statement built once (the Matcher reads it per refresh)."""
    return [to_bank(row) for row in session.execute(_bank_values_query())]


@functools.cache
def _bank_values_query() -> Any:
    b = cast(Table, BankRow.__table__).c
    return select(
        b.name,
        b.description,
        b.enabled,
        b.is_allow_bank,
        b.thresholds,
        b.tenant,
        b.normalize,
        b.region_matching,
        b.auto_report,
    ).order_by(b.name)


def list_banks(session: Session, *, tenant: str | None = None) -> list[BankRow]:
    """Every bank (of ``tenant`` when given), by name."""
    stmt = select(BankRow).order_by(BankRow.name)
    if tenant is not None:
        stmt = stmt.where(BankRow.tenant == tenant)
    return list(session.execute(stmt).scalars())


def bank_tenants(session: Session) -> dict[str, str | None]:
    """Bank name -> owning tenant (None = shared) for every bank."""
    return {name: tenant for name, tenant in session.execute(select(BankRow.name, BankRow.tenant))}


def entry_numbers(session: Session, bank: str, entry_ids: Iterable[str]) -> dict[str, int]:
    """Entry id -> the entry's integer id for the given entries of ``bank`` (missing
    ones are left out)."""
    out: dict[str, int] = {}
    for chunk in _chunks(sorted(set(entry_ids))):
        # (bank_id, entry_id) is the unique index: look up by both, never entry_id alone.
        rows = session.execute(
            select(BankEntryRow.entry_id, BankEntryRow.id)
            .join(BankRow, BankRow.id == BankEntryRow.bank_id)
            .where(BankRow.name == bank, BankEntryRow.entry_id.in_(chunk))
        ).all()
        out.update((str(e), int(pk)) for e, pk in rows)
    return out


def update_bank(
    session: Session,
    name: str,
    *,
    description: str | None = None,
    enabled: bool | None = None,
    thresholds: dict[str, int] | None = None,
    normalize: bool | None = None,
    region_matching: bool | None = None,
    auto_report: str | None = None,
) -> BankRow:
    """Change a bank's settings (``None`` leaves a field as it is)."""
    row = get_bank(session, name, for_update=True)
    if auto_report is not None:
        row.auto_report = auto_report
    if normalize is not None:
        row.normalize = normalize
    if region_matching is not None:
        row.region_matching = region_matching
    if description is not None:
        row.description = description
    if enabled is not None:
        row.enabled = enabled
    if thresholds is not None:
        row.thresholds = {**(row.thresholds or {}), **thresholds}
    row.updated_at = utcnow()
    session.flush()
    return row


def count_entries(session: Session, bank_id: int) -> tuple[int, int]:
    """(entries, disabled entries) of a bank."""
    total = session.execute(
        select(func.count()).select_from(BankEntryRow).where(BankEntryRow.bank_id == bank_id)
    ).scalar_one()
    disabled = session.execute(
        select(func.count())
        .select_from(BankEntryRow)
        .where(BankEntryRow.bank_id == bank_id, BankEntryRow.disabled.is_(True))
    ).scalar_one()
    return int(total), int(disabled)


def signal_counts(session: Session, bank_id: int) -> dict[str, int]:
    """Signals per type in a bank."""
    rows = session.execute(
        select(BankSignalRow.type, func.count())
        .join(BankEntryRow, BankEntryRow.id == BankSignalRow.entry_pk)
        .where(BankEntryRow.bank_id == bank_id)
        .group_by(BankSignalRow.type)
    )
    return {str(t): int(n) for t, n in rows}


# -- entries ------------------------------------------------------------------------------


def existing_entry_ids(session: Session, bank_id: int, entry_ids: Sequence[str]) -> set[str]:
    """Those of ``entry_ids`` already present in the bank."""
    found: set[str] = set()
    for chunk in _chunks(list(entry_ids)):
        found.update(
            session.execute(
                select(BankEntryRow.entry_id).where(
                    BankEntryRow.bank_id == bank_id, BankEntryRow.entry_id.in_(chunk)
                )
            ).scalars()
        )
    return found


def insert_entries(
    session: Session,
    bank_id: int,
    entries: Sequence[NewEntry],
    *,
    changes: list[SignalChange] | None = None,
) -> list[int]:
    """Insert entries (ids must be new in the bank) and their signals; returns the
    entry primary keys in input order. One sequence number per entry; ``changes``,
    when given, receives every signal row written, in (seq, row id) order (what
    :func:`signals_page` would read back after commit, row ids aside).

    On PostgreSQL the rows go through ``COPY`` (primary keys reserved from the table's
    sequence first), several times faster than multi-row INSERTs for big imports.
    """
    if not entries:
        return []
    now = utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres and len(entries) <= ONE_STATEMENT_ENTRIES:
        pks, first = _insert_few_entries(session, bank_id, entries, now)
    else:
        first = next_seq(session, len(entries))
        if postgres:
            pks = _copy_entries(session, bank_id, entries, first, now)
        else:
            pks = _insert_entry_rows(session, bank_id, entries, first, now)
    if changes is not None:
        changes.extend(
            SignalChange(pk, s.type, s.value, first + i)
            for i, (pk, e) in enumerate(zip(pks, entries, strict=True))
            for s in e.signals
        )
    return pks


def _insert_entry_rows(
    session: Session, bank_id: int, entries: Sequence[NewEntry], first: int, now: datetime
) -> list[int]:
    """SQLite path of :func:`insert_entries` (executemany of both tables)."""
    # Other writers wait on the counter row (PostgreSQL) or the database write lock
    # (SQLite) that next_seq took, so the next primary keys are ours to assign; one
    # executemany without RETURNING is far faster than row-by-row RETURNING on SQLite.
    top = session.execute(select(func.max(BankEntryRow.id))).scalar_one()
    start = int(top or 0) + 1
    pks = list(range(start, start + len(entries)))
    rows = [
        {
            "id": pk,
            "bank_id": bank_id,
            "entry_id": e.entry_id,
            "labels": list(e.labels),
            "source": e.source,
            "added_at": e.added_at or now,
            "disabled": False,
            "disabled_reason": None,
            "seq": first + i,
        }
        for i, (pk, e) in enumerate(zip(pks, entries, strict=True))
    ]
    session.execute(insert(cast(Table, BankEntryRow.__table__)), rows)
    signal_rows = [
        {"entry_pk": pk, "type": s.type, "value": s.value, "seq": first + i}
        for i, (pk, e) in enumerate(zip(pks, entries, strict=True))
        for s in e.signals
    ]
    if signal_rows:
        session.execute(insert(cast(Table, BankSignalRow.__table__)), signal_rows)
    return pks


#: Entries at most that :func:`insert_entries` writes in one statement on PostgreSQL (a
#: few files of a report); more go through COPY, faster per row but four round trips.
ONE_STATEMENT_ENTRIES = 64

#: :func:`_insert_few_entries`' statement: the counter moved, the entries and their
#: signals inserted (sequence numbers from the counter's new value), one round trip. The
#: signal rows' foreign keys are checked at the end of the statement, when the entries
#: of the other sub-statement are there.
_FEW_ENTRIES_SQL = """
WITH s AS (
    UPDATE bank_state SET seq = seq + %(n)s WHERE id = 1 RETURNING seq - %(n)s AS base
), e AS (
    INSERT INTO bank_entries (bank_id, entry_id, labels, source, added_at, disabled, seq)
    SELECT %(bank_id)s, x.entry_id, x.labels::json, x.source, x.added_at, false, s.base + x.n
    FROM s, unnest(%(entry_ids)s::text[], %(labels)s::text[], %(sources)s::text[],
                   %(added)s::timestamptz[]) WITH ORDINALITY AS x(entry_id, labels, source,
                                                                   added_at, n)
    ORDER BY x.n
    RETURNING id, seq
), g AS (
    INSERT INTO bank_signals (entry_pk, type, value, seq)
    SELECT e.id, y.type, y.value, e.seq
    FROM s, e, unnest(%(of_entry)s::bigint[], %(types)s::text[], %(values)s::text[])
        WITH ORDINALITY AS y(n, type, value, k)
    WHERE e.seq = s.base + y.n
    ORDER BY y.k
)
SELECT e.id, e.seq FROM e ORDER BY e.seq
"""


def _insert_few_entries(
    session: Session, bank_id: int, entries: Sequence[NewEntry], now: datetime
) -> tuple[list[int], int]:
    """PostgreSQL path of :func:`insert_entries` for a few entries: (primary keys in
    input order, the first sequence number), in one statement."""
    rows = (
        session.connection()
        .exec_driver_sql(
            _FEW_ENTRIES_SQL,
            {
                "n": len(entries),
                "bank_id": bank_id,
                "entry_ids": [e.entry_id for e in entries],
                "labels": [json.dumps(list(e.labels)) for e in entries],
                "sources": [e.source for e in entries],
                "added": [e.added_at or now for e in entries],
                "of_entry": [i for i, e in enumerate(entries, 1) for _ in e.signals],
                "types": [x.type for e in entries for x in e.signals],
                "values": [x.value for e in entries for x in e.signals],
            },
        )
        .all()
    )
    return [int(pk) for pk, _ in rows], int(rows[0][1])


def _copy_entries(
    session: Session, bank_id: int, entries: Sequence[NewEntry], first: int, now: datetime
) -> list[int]:
    """PostgreSQL fast path of :func:`insert_entries` (COPY into both tables)."""
    conn = session.connection()
    raw = conn.connection.driver_connection
    pks = [
        int(x)
        for x in conn.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('bank_entries', 'id'))"
                " FROM generate_series(1, :n)"
            ),
            {"n": len(entries)},
        ).scalars()
    ]
    with raw.cursor() as cur:  # type: ignore[union-attr]
        with cur.copy(
            "COPY bank_entries (id, bank_id, entry_id, labels, source, added_at, disabled,"
            " disabled_reason, seq) FROM STDIN"
        ) as copy:
            for i, (pk, e) in enumerate(zip(pks, entries, strict=True)):
                copy.write_row(
                    (
                        pk,
                        bank_id,
                        e.entry_id,
                        json.dumps(list(e.labels)),
                        e.source,
                        e.added_at or now,
                        False,
                        None,
                        first + i,
                    )
                )
        with cur.copy("COPY bank_signals (entry_pk, type, value, seq) FROM STDIN") as copy:
            for i, (pk, e) in enumerate(zip(pks, entries, strict=True)):
                for s in e.signals:
                    copy.write_row((pk, s.type, s.value, first + i))
    return pks


def get_entry(session: Session, bank: BankRow, entry_id: str) -> BankEntryRow:
    """The entry ``entry_id`` of ``bank``; NotFoundError otherwise."""
    row = session.execute(
        select(BankEntryRow).where(
            BankEntryRow.bank_id == bank.id, BankEntryRow.entry_id == entry_id
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"bank {bank.name!r} has no entry {entry_id!r}")
    return row


def is_disabled(disabled: bool, until: int | None, now: float) -> bool:
    """Whether an entry is disabled at unix time ``now`` (a disable with an end time
    lapses at that time)."""
    return bool(disabled) and (until is None or until > now)


def entry_by_pk(session: Session, bank: BankRow, pk: int) -> BankEntryRow:
    """The entry with primary key ``pk`` in ``bank``; NotFoundError otherwise."""
    row = session.get(BankEntryRow, pk)
    if row is None or row.bank_id != bank.id:
        raise NotFoundError(f"content '{pk}' not found")
    return row


def touch(session: Session, row: BankEntryRow) -> None:
    """Give a changed entry the next change sequence (matchers see the change)."""
    row.seq = next_seq(session)
    session.flush()


def set_disabled(
    session: Session, bank: BankRow, entry_id: str, disabled: bool, reason: str | None
) -> BankEntryRow:
    """Disable (with ``reason``) or enable an entry; bumps its change sequence."""
    row = get_entry(session, bank, entry_id)
    seq = next_seq(session)
    row.disabled = disabled
    row.disabled_reason = reason if disabled else None
    row.seq = seq
    session.flush()
    return row


def signals_of(session: Session, entry_pks: Sequence[int]) -> dict[int, list[BankSignal]]:
    """Signals of each entry, in insertion order."""
    out: dict[int, list[BankSignal]] = {pk: [] for pk in entry_pks}
    for chunk in _chunks(list(entry_pks)):
        rows = session.execute(
            select(BankSignalRow.entry_pk, BankSignalRow.type, BankSignalRow.value)
            .where(BankSignalRow.entry_pk.in_(chunk))
            .order_by(BankSignalRow.id)
        )
        for pk, kind, value in rows:
            out[int(pk)].append(BankSignal(str(kind), str(value)))
    return out


def to_entry(row: BankEntryRow, bank_name: str, signals: Iterable[BankSignal]) -> BankEntry:
    """Domain value of an entry row."""
    return BankEntry(
        bank=bank_name,
        entry_id=row.entry_id,
        signals=tuple(signals),
        labels=tuple(row.labels or ()),
        source=row.source,
        added_at=row.added_at,
        disabled=row.disabled,
        disabled_reason=row.disabled_reason,
    )


def iter_entries(session: Session, bank: BankRow, *, page: int = 5_000) -> Iterator[BankEntry]:
    """Every entry of ``bank`` in insertion order, ``page`` rows per query."""
    last = 0
    while True:
        rows = list(
            session.execute(
                select(BankEntryRow)
                .where(BankEntryRow.bank_id == bank.id, BankEntryRow.id > last)
                .order_by(BankEntryRow.id)
                .limit(page)
            ).scalars()
        )
        if not rows:
            return
        sigs = signals_of(session, [r.id for r in rows])
        for r in rows:
            yield to_entry(r, bank.name, sigs[r.id])
        last = rows[-1].id
        session.expunge_all()


def signals_since(session: Session, seq: int, *, limit: int = 100_000) -> list[SignalChange]:
    """Signal rows with a sequence number above ``seq``, oldest first, at most ``limit``."""
    rows = session.execute(
        select(BankSignalRow.entry_pk, BankSignalRow.type, BankSignalRow.value, BankSignalRow.seq)
        .where(BankSignalRow.seq > seq)
        .order_by(BankSignalRow.seq, BankSignalRow.id)
        .limit(limit)
    )
    return [SignalChange(int(p), str(t), str(v), int(s)) for p, t, v, s in rows]


def signals_page(
    session: Session, after: tuple[int, int], *, limit: int = 100_000, upto: int | None = None
) -> list[tuple[SignalChange, int]]:
    """Signal rows after ``(seq, row id)`` in (seq, id) order, at most ``limit``, each
    with its row id (the keyset for the next page); only ``seq <= upto`` when given."""
    seq, row_id = after
    params: dict[str, Any] = {"seq": seq, "row_id": row_id, "limit": limit}
    if upto is not None:
        params["upto"] = upto
    rows = session.execute(_signals_page_query(upto is not None), params)
    return [(SignalChange(int(p), str(t), str(v), int(s)), int(i)) for p, t, v, s, i in rows]


@functools.cache
def _signals_page_query(bounded: bool) -> Any:
    """:func:`signals_page`'s statement (``bounded``: with ``seq <= :upto``), built once."""
    g = cast(Table, BankSignalRow.__table__).c
    seq, row_id = bindparam("seq", type_=BigInteger()), bindparam("row_id", type_=BigInteger())
    stmt = select(g.entry_pk, g.type, g.value, g.seq, g.id).where(
        g.seq >= seq,  # an index range; the OR alone defeats the index
        or_(g.seq > seq, and_(g.seq == seq, g.id > row_id)),
    )
    if bounded:
        stmt = stmt.where(g.seq <= bindparam("upto"))
    return stmt.order_by(g.seq, g.id).limit(bindparam("limit"))


def signals_of_types(session: Session, types: Sequence[str], *, upto: int) -> list[SignalChange]:
    """Signal rows (``seq <= upto``) of the given types."""
    rows = session.execute(
        select(BankSignalRow.entry_pk, BankSignalRow.type, BankSignalRow.value, BankSignalRow.seq)
        .where(BankSignalRow.type.in_(list(types)), BankSignalRow.seq <= upto)
        .order_by(BankSignalRow.seq, BankSignalRow.id)
    )
    return [SignalChange(int(p), str(t), str(v), int(s)) for p, t, v, s in rows]


def changes_since(session: Session, seq: int, *, limit: int = 10_000) -> list[tuple[int, str, str]]:
    """(seq, bank name, entry id) of entries written after ``seq``, oldest first."""
    rows = session.execute(
        select(BankEntryRow.seq, BankRow.name, BankEntryRow.entry_id)
        .join(BankRow, BankRow.id == BankEntryRow.bank_id)
        .where(BankEntryRow.seq > seq)
        .order_by(BankEntryRow.seq)
        .limit(limit)
    )
    return [(int(s), str(b), str(e)) for s, b, e in rows]


@functools.cache
def _hits_query() -> Any:
    """The statement of :func:`hits`, built once (Core columns, an expanding IN list),
    so each call only binds the ids and reuses the compiled SQL."""
    e = cast(Table, BankEntryRow.__table__).c
    b = cast(Table, BankRow.__table__).c
    g = cast(Table, BankSignalRow.__table__).c
    # fmt: off
    columns = (
        e.id, e.entry_id, e.labels, e.source, e.added_at, e.disabled, e.disabled_reason,
        b.id, b.name, b.description, b.enabled, b.is_allow_bank, b.thresholds, b.tenant,
        g.type, g.value, e.disable_until, b.normalize, b.region_matching,
    )
    # fmt: on
    return (
        select(*columns)
        .join_from(cast(Table, BankEntryRow.__table__), cast(Table, BankRow.__table__))
        .outerjoin(cast(Table, BankSignalRow.__table__), g.entry_pk == e.id)
        .where(e.id.in_(bindparam("pks", expanding=True)))
        .order_by(e.id, g.id)
    )


def hits(session: Session | Connection, entry_pks: Sequence[int]) -> dict[int, EntryHit]:
    """Entries (with their current disabled state, signals in insertion order) and banks
    for index hits: one query per :data:`IN_CHUNK` hits (entries joined to their bank and
    their signals), plain columns rather than ORM objects. Runs in a session or directly
    on a connection."""
    out: dict[int, EntryHit] = {}
    if not entry_pks:
        return out
    banks: dict[int, Bank] = {}
    query = _hits_query()
    now = time.time()
    for chunk in _chunks(sorted(set(entry_pks))):
        rows = session.execute(query, {"pks": list(chunk)}).all()
        signals: dict[int, list[BankSignal]] = {}
        first: dict[int, Any] = {}
        for row in rows:
            pk = int(row[0])
            if pk not in first:
                first[pk] = row
                signals[pk] = []
            if row[14] is not None:
                signals[pk].append(BankSignal(str(row[14]), str(row[15])))
        for pk, row in first.items():
            bank = banks.get(int(row[7]))
            if bank is None:
                bank = banks[int(row[7])] = Bank(
                    name=row[8],
                    description=row[9],
                    enabled=row[10],
                    is_allow_bank=row[11],
                    thresholds={str(k): int(v) for k, v in (row[12] or {}).items()},
                    tenant=row[13],
                    normalize=bool(row[17]),
                    region_matching=bool(row[18]),
                )
            entry = BankEntry(
                bank=bank.name,
                entry_id=row[1],
                signals=tuple(signals[pk]),
                labels=tuple(row[2] or ()),
                source=row[3],
                added_at=row[4],
                disabled=is_disabled(row[5], row[16], now),
                disabled_reason=row[6],
            )
            out[pk] = EntryHit(pk, bank, entry)
    return out
