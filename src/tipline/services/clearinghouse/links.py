"""Reports linked by a shared identifier of the reported person or upload: account id
or screen name (within one provider), email, IP address or device id
(:mod:`.facts` says how each is normalised)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from tipline.services.clearinghouse.facts import PROVIDER_SCOPED, Identifier
from tipline.store.clearinghouse_triage import ReportIdentifierRow

#: linked reports read per report at most (an identifier shared by thousands of
#: reports, e.g. a large NAT, must not make one query unbounded)
MAX_LINKED = 200


def record(
    session: Session, report_id: int, provider_id: str, identifiers: Iterable[Identifier]
) -> None:
    """Store the report's identifiers (once each)."""
    seen: set[tuple[str, str, str]] = set()
    for item in identifiers:
        scope = provider_id if item.kind in PROVIDER_SCOPED else ""
        key = (item.kind, scope, item.value)
        if key in seen:
            continue
        seen.add(key)
        session.add(
            ReportIdentifierRow(report_id=report_id, kind=item.kind, scope=scope, value=item.value)
        )
    session.flush()


def linked(
    session: Session, report_id: int, *, limit: int = MAX_LINKED
) -> dict[int, list[dict[str, Any]]]:
    """Other reports sharing an identifier with ``report_id``: report id -> the shared
    identifiers (``kind``, ``value``), at most ``limit`` reports (lowest ids first)."""
    mine = aliased(ReportIdentifierRow)
    other = aliased(ReportIdentifierRow)
    rows = session.execute(
        select(other.report_id, other.kind, other.value)
        .join(
            mine,
            and_(mine.kind == other.kind, mine.scope == other.scope, mine.value == other.value),
        )
        .where(mine.report_id == report_id, other.report_id != report_id)
        .order_by(other.report_id)
        .limit(limit * 8)
    ).all()
    out: dict[int, list[dict[str, Any]]] = {}
    for rid, kind, value in rows:
        if int(rid) not in out and len(out) >= limit:
            break
        shared = out.setdefault(int(rid), [])
        item = {"kind": str(kind), "value": str(value)}
        if item not in shared:
            shared.append(item)
    return out


def counts(session: Session, report_ids: Iterable[int]) -> dict[int, int]:
    """For each of ``report_ids``: how many other reports share an identifier with it
    (at most :data:`MAX_LINKED`, as :func:`linked` lists), in one query."""
    ids = sorted(set(report_ids))
    if not ids:
        return {}
    mine = aliased(ReportIdentifierRow)
    other = aliased(ReportIdentifierRow)
    rows = session.execute(
        select(mine.report_id, func.count(func.distinct(other.report_id)))
        .join(
            other,
            and_(mine.kind == other.kind, mine.scope == other.scope, mine.value == other.value),
        )
        .where(mine.report_id.in_(ids), other.report_id != mine.report_id)
        .group_by(mine.report_id)
    ).all()
    found = {int(rid): min(int(n), MAX_LINKED) for rid, n in rows}
    return {rid: found.get(rid, 0) for rid in ids}
