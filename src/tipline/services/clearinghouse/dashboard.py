"""The analyst desk's figures: what arrived per day, how much of it was distinct, new or
known, the triage backlog by band and age, the largest clusters and the reports by
country (from routing decisions).

Read-only and without personal data (counts, cluster ids, country codes), so not
audited; keys and users without a tenant only, like the rest of the analyst side.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import InputError
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse.queue import require
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.clearinghouse_triage import ClusterRow, FileDedupRow, TriageRow
from tipline.store.referrals import RoutingDecisionRow

#: triage bands by score: (name, lowest score), highest first; a report with never-seen
#: material alone scores 100 with the default weights
BANDS: tuple[tuple[str, float], ...] = (("high", 100.0), ("medium", 40.0), ("low", float("-inf")))
#: backlog age buckets: (label, upper bound in days), youngest first
AGES: tuple[tuple[str, float], ...] = (
    ("< 1 day", 1.0),
    ("1-3 days", 3.0),
    ("3-7 days", 7.0),
    ("> 7 days", float("inf")),
)
TOP_CLUSTERS = 10


@dataclass(frozen=True, slots=True)
class Day:
    """What arrived on one UTC day."""

    day: str  # YYYY-MM-DD
    reports: int
    files: int


@dataclass(frozen=True, slots=True)
class TopCluster:
    """A cluster by its number of files."""

    cluster_id: int
    files: int
    reports: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The desk's figures as of ``as_of``."""

    as_of: datetime
    days: list[Day]
    #: de-duplicated files, clusters they form (distinct items), files per distinct item
    files: int
    distinct: int
    duplicates: int
    files_per_item: float | None
    #: files by de-duplication state: new, seen (a copy of an earlier report), known
    states: dict[str, int]
    #: pending reports by band, and by band and age bucket
    backlog: dict[str, int]
    backlog_ages: dict[str, dict[str, int]]
    top_clusters: list[TopCluster]
    #: reports by the country of their routing decision in force ("unlocated": none)
    countries: list[tuple[str, int]]


def dashboard(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    now: datetime | None = None,
    days: int = 14,
) -> Dashboard:
    """The desk's figures over the last ``days`` UTC days (today included)."""
    require(who, Permission.INTAKE_READ)
    if not 1 <= days <= 366:
        raise InputError("days must be 1-366")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    first = (now - timedelta(days=days - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    with sessions() as session:
        reports = Counter(
            _day(t)
            for (t,) in session.execute(
                select(IntakeReportRow.created_at).where(IntakeReportRow.created_at >= start)
            )
        )
        files = Counter(
            _day(t)
            for (t,) in session.execute(
                select(IntakeFileRow.uploaded_at).where(IntakeFileRow.uploaded_at >= start)
            )
        )
        states = {
            str(s): int(n)
            for s, n in session.execute(
                select(FileDedupRow.state, func.count()).group_by(FileDedupRow.state)
            )
        }
        distinct = int(
            session.scalar(
                select(func.count()).select_from(ClusterRow).where(ClusterRow.merged_into.is_(None))
            )
            or 0
        )
        pending = session.execute(
            select(TriageRow.score, TriageRow.triaged_at).where(TriageRow.status == "pending")
        ).all()
        top = session.execute(
            select(ClusterRow.id, ClusterRow.size)
            .where(ClusterRow.merged_into.is_(None))
            .order_by(ClusterRow.size.desc(), ClusterRow.id)
            .limit(TOP_CLUSTERS)
        ).all()
        per_cluster = dict(
            session.execute(
                select(FileDedupRow.cluster_id, func.count(func.distinct(FileDedupRow.report_id)))
                .where(FileDedupRow.cluster_id.in_([int(c) for c, _ in top]))
                .group_by(FileDedupRow.cluster_id)
            ).all()
        )
        latest: dict[int, tuple[datetime, str]] = {}
        for rid, country, at in session.execute(
            select(
                RoutingDecisionRow.report_id,
                RoutingDecisionRow.country,
                RoutingDecisionRow.decided_at,
            )
        ):
            if rid not in latest or at >= latest[rid][0]:
                latest[rid] = (at, country or "unlocated")
    total = sum(states.values())
    backlog = {name: 0 for name, _ in BANDS}
    ages = {name: {label: 0 for label, _ in AGES} for name, _ in BANDS}
    for score, triaged_at in pending:
        band = next(name for name, low in BANDS if float(score) >= low)
        age = (now - triaged_at).total_seconds() / 86400
        label = next(label for label, high in AGES if age < high)
        backlog[band] += 1
        ages[band][label] += 1
    countries = Counter(country for _, country in latest.values())
    return Dashboard(
        as_of=now,
        days=[
            Day(d, reports.get(d, 0), files.get(d, 0))
            for d in ((first + timedelta(days=i)).isoformat() for i in range(days))
        ],
        files=total,
        distinct=distinct,
        duplicates=max(total - distinct, 0),
        files_per_item=round(total / distinct, 2) if distinct else None,
        states={s: states.get(s, 0) for s in ("new", "seen", "known")},
        backlog=backlog,
        backlog_ages=ages,
        top_clusters=[TopCluster(int(c), int(size), int(per_cluster.get(c, 0))) for c, size in top],
        countries=sorted(countries.items(), key=lambda kv: (-kv[1], kv[0])),
    )


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()
