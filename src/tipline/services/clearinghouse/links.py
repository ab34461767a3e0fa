"""Reports linked by a shared identifier of the reported person or upload: account id
or screen name (within one provider), email, IP address or device id
(:mod:`.facts` says how each is normalised)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, func, select
from sqlalchemy.orm import Session

from tipline.services.clearinghouse.facts import PROVIDER_SCOPED, Identifier
from tipline.store.clearinghouse_triage import ReportIdentifierRow

#: the identifiers table (written and read with Core statements: triage runs per report)
_IDENTIFIERS = cast(Table, ReportIdentifierRow.__table__)
#: linked reports read per report at most (an identifier shared by thousands of
#: reports, e.g. a large NAT, must not make one query unbounded)
MAX_LINKED = 200


def record(
    session: Session, report_id: int, provider_id: str, identifiers: Iterable[Identifier]
) -> None:
    """Store the report's identifiers (once each), in one statement."""
    seen: set[tuple[str, str, str]] = set()
    rows: list[dict[str, Any]] = []
    for item in identifiers:
        scope = provider_id if item.kind in PROVIDER_SCOPED else ""
        key = (item.kind, scope, item.value)
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {"report_id": report_id, "kind": item.kind, "scope": scope, "value": item.value}
        )
    if rows:
        session.execute(_insert(), rows)


def linked(
    session: Session, report_id: int, *, limit: int = MAX_LINKED
) -> dict[int, list[dict[str, Any]]]:
    """Other reports sharing an identifier with ``report_id``: report id -> the shared
    identifiers (``kind``, ``value``), at most ``limit`` reports (lowest ids first)."""
    rows = session.execute(_linked_query(), {"report_id": report_id, "rows": limit * 8}).all()
    out: dict[int, list[dict[str, Any]]] = {}
    for rid, kind, value in rows:
        if int(rid) not in out and len(out) >= limit:
            break
        shared = out.setdefault(int(rid), [])
        item = {"kind": str(kind), "value": str(value)}
        if item not in shared:
            shared.append(item)
    return out


@functools.cache
def _insert() -> Any:
    return _IDENTIFIERS.insert()


@functools.cache
def _linked_query() -> Select[Any]:
    """Rows (other report, kind, value) sharing an identifier with ``:report_id``,
    lowest report ids first, at most ``:rows`` (built once: Core, bound parameters)."""
    mine = _IDENTIFIERS.alias("mine")
    other = _IDENTIFIERS.alias("other")
    return (
        select(other.c.report_id, other.c.kind, other.c.value)
        .join(
            mine,
            and_(
                mine.c.kind == other.c.kind,
                mine.c.scope == other.c.scope,
                mine.c.value == other.c.value,
            ),
        )
        .where(
            mine.c.report_id == bindparam("report_id"),
            other.c.report_id != bindparam("report_id"),
        )
        .order_by(other.c.report_id)
        .limit(bindparam("rows"))
    )


def counts(session: Session, report_ids: Iterable[int]) -> dict[int, int]:
    """For each of ``report_ids``: how many other reports share an identifier with it
    (at most :data:`MAX_LINKED`, as :func:`linked` lists), in one query."""
    ids = sorted(set(report_ids))
    if not ids:
        return {}
    rows = session.execute(_counts_query(), {"ids": ids}).all()
    found = {int(rid): min(int(n), MAX_LINKED) for rid, n in rows}
    return {rid: found.get(rid, 0) for rid in ids}


@functools.cache
def _counts_query() -> Select[Any]:
    """(report, linked reports) for each of ``:ids`` that has any (built once)."""
    mine = _IDENTIFIERS.alias("mine")
    other = _IDENTIFIERS.alias("other")
    return (
        select(mine.c.report_id, func.count(func.distinct(other.c.report_id)))
        .join(
            other,
            and_(
                mine.c.kind == other.c.kind,
                mine.c.scope == other.c.scope,
                mine.c.value == other.c.value,
            ),
        )
        .where(
            mine.c.report_id.in_(bindparam("ids", expanding=True)),
            other.c.report_id != mine.c.report_id,
        )
        .group_by(mine.c.report_id)
    )
