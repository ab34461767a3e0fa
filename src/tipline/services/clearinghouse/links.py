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
    rows = _rows(report_id, provider_id, identifiers)
    if rows:
        session.execute(_insert(), rows)


def record_and_link(
    session: Session,
    report_id: int,
    provider_id: str,
    identifiers: Iterable[Identifier],
    *,
    limit: int = MAX_LINKED,
) -> dict[int, list[dict[str, Any]]]:
    """:func:`record`, then :func:`linked`: one statement on PostgreSQL (the insert's
    rows joined to the other reports' in a WITH), none at all without identifiers."""
    rows = _rows(report_id, provider_id, identifiers)
    if not rows:
        return {}
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_insert(), rows)
        return linked(session, report_id, limit=limit)
    found = session.connection().exec_driver_sql(
        _RECORD_AND_LINK_SQL,
        {
            "report_id": report_id,
            "kinds": [r["kind"] for r in rows],
            "scopes": [r["scope"] for r in rows],
            "values": [r["value"] for r in rows],
            "rows": limit * 8,
        },
    )
    return _shared(found.all(), limit)


#: :func:`record_and_link`'s statement on PostgreSQL. The main query does not see the
#: rows its WITH inserts (one snapshot), so ``other`` holds earlier reports' rows only:
#: what :func:`linked` reads after :func:`record`.
_RECORD_AND_LINK_SQL = """
WITH mine AS (
    INSERT INTO intake_report_identifiers (report_id, kind, scope, value)
    SELECT %(report_id)s, x.kind, x.scope, x.value
    FROM unnest(%(kinds)s::text[], %(scopes)s::text[], %(values)s::text[])
        AS x(kind, scope, value)
    RETURNING kind, scope, value
)
SELECT other.report_id, other.kind, other.value
FROM intake_report_identifiers AS other
JOIN mine ON mine.kind = other.kind AND mine.scope = other.scope AND mine.value = other.value
WHERE other.report_id != %(report_id)s
ORDER BY other.report_id
LIMIT %(rows)s
"""


def _rows(
    report_id: int, provider_id: str, identifiers: Iterable[Identifier]
) -> list[dict[str, Any]]:
    """The identifier rows of a report, once each."""
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
    return rows


def linked(
    session: Session, report_id: int, *, limit: int = MAX_LINKED
) -> dict[int, list[dict[str, Any]]]:
    """Other reports sharing an identifier with ``report_id``: report id -> the shared
    identifiers (``kind``, ``value``), at most ``limit`` reports (lowest ids first)."""
    rows = session.execute(_linked_query(), {"report_id": report_id, "rows": limit * 8}).all()
    return _shared(rows, limit)


def _shared(rows: Iterable[Any], limit: int) -> dict[int, list[dict[str, Any]]]:
    """(other report, kind, value) rows, lowest report first -> report id -> the shared
    identifiers, at most ``limit`` reports."""
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


def _pair() -> tuple[Any, Any, Any]:
    """The identifier table twice, ``mine`` and ``other``, and the condition that joins
    an identifier of one report to the same identifier (kind, scope, value) of another."""
    mine = _IDENTIFIERS.alias("mine")
    other = _IDENTIFIERS.alias("other")
    shared = and_(
        mine.c.kind == other.c.kind,
        mine.c.scope == other.c.scope,
        mine.c.value == other.c.value,
    )
    return mine, other, shared


@functools.cache
def _linked_query() -> Select[Any]:
    """Rows (other report, kind, value) sharing an identifier with ``:report_id``,
    lowest report ids first, at most ``:rows`` (built once: Core, bound parameters)."""
    mine, other, shared = _pair()
    return (
        select(other.c.report_id, other.c.kind, other.c.value)
        .join(mine, shared)
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


def count_of(report_id: Any) -> Any:
    """:func:`counts` of one report as a correlated scalar subquery on the column (or
    value) ``report_id``, for a caller that reads it with rows of its own (uncapped:
    take ``min(n, MAX_LINKED)``)."""
    mine, other, shared = _pair()
    return (
        select(func.count(func.distinct(other.c.report_id)))
        .select_from(mine)
        .join(other, shared)
        .where(mine.c.report_id == report_id, other.c.report_id != report_id)
        .scalar_subquery()
    )


@functools.cache
def _counts_query() -> Select[Any]:
    """(report, linked reports) for each of ``:ids`` that has any (built once)."""
    mine, other, shared = _pair()
    return (
        select(mine.c.report_id, func.count(func.distinct(other.c.report_id)))
        .join(other, shared)
        .where(
            mine.c.report_id.in_(bindparam("ids", expanding=True)),
            other.c.report_id != mine.c.report_id,
        )
        .group_by(mine.c.report_id)
    )
