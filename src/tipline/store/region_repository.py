"""Region descriptors of bank entries (:class:`~tipline.store.bank_tables.BankRegionRow`).

Regions are written in the transaction that adds their entry and carry the entry's
change sequence, so "rows after (seq, id)" never skips a committed row (sequence order
is commit order, see :mod:`tipline.store.bank_tables`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BigInteger, Table, and_, bindparam, func, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tipline.store.bank_tables import BankEntryRow, BankRegionRow


@dataclass(frozen=True, slots=True)
class RegionChange:
    """One stored region descriptor, as the region index reads it."""

    seq: int
    id: int
    entry_pk: int
    region: str
    value: str


def insert_regions(session: Session, entry_pk: int, regions: Sequence[tuple[str, str]]) -> int:
    """Store ``(region name, PDQ hex)`` descriptors of an entry; returns how many."""
    if not regions:
        return 0
    seq = session.execute(select(BankEntryRow.seq).where(BankEntryRow.id == entry_pk)).scalar_one()
    rows = [
        {"entry_pk": entry_pk, "region": name, "value": value, "seq": int(seq)}
        for name, value in regions
    ]
    session.execute(insert(cast(Table, BankRegionRow.__table__)), rows)
    return len(rows)


def regions_page(
    session: Session, after: tuple[int, int], *, limit: int = 50_000
) -> list[RegionChange]:
    """Region rows after ``(seq, id)``, in that order (at most ``limit``)."""
    seq, row_id = after
    rows = session.execute(
        _regions_page_query(), {"seq": seq, "row_id": row_id, "limit": limit}
    ).all()
    return [RegionChange(int(a), int(b), int(c), str(d), str(e)) for a, b, c, d, e in rows]


@functools.cache
def _regions_page_query() -> Any:
    """:func:`regions_page`'s statement, built once (bound keyset and limit)."""
    r = cast(Table, BankRegionRow.__table__).c
    seq, row_id = bindparam("seq", type_=BigInteger()), bindparam("row_id", type_=BigInteger())
    return (
        select(r.seq, r.id, r.entry_pk, r.region, r.value)
        .where(r.seq >= seq, or_(r.seq > seq, and_(r.seq == seq, r.id > row_id)))
        .order_by(r.seq, r.id)
        .limit(bindparam("limit"))
    )


def count_regions(session: Session, entry_pk: int) -> int:
    """How many region descriptors an entry holds."""
    return int(
        session.execute(
            select(func.count())
            .select_from(BankRegionRow)
            .where(BankRegionRow.entry_pk == entry_pk)
        ).scalar_one()
    )


def stored_pairs(
    session: Session | Connection, pairs: Sequence[tuple[int, str]]
) -> set[tuple[int, str]]:
    """Which ``(entry pk, PDQ hex)`` region descriptors are stored now (an index may
    still hold rows of a deleted entry whose pk was given again)."""
    if not pairs:
        return set()
    r = BankRegionRow
    pks = sorted({pk for pk, _ in pairs})
    values = sorted({v for _, v in pairs})
    rows = session.execute(
        select(r.entry_pk, r.value).where(r.entry_pk.in_(pks), r.value.in_(values)).distinct()
    ).all()
    return {(int(pk), str(v)) for pk, v in rows}
