"""clusters.assign (Core statements, clusters opened here inserted together) against an
in-memory union-find with the same rules: a file linked to no cluster opens one; linked
to several, it joins the largest (the oldest among equals) and the others are merged
into it (size 0, ``merged_into`` set, their files relabelled)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.orm import sessionmaker

from tipline.services.clearinghouse import clusters
from tipline.services.clearinghouse.dedup import FileDedup, Link
from tipline.store.clearinghouse_triage import ClusterRow, FileDedupRow

NOW = datetime(2026, 1, 2, tzinfo=UTC)
_run = itertools.count()


@dataclass
class _OracleCluster:
    first: str
    size: int = 1
    merged_into: str | None = None  # first file of the absorbing cluster


class _Oracle:
    """The union-find in memory; a cluster is named by the file that opened it."""

    def __init__(self) -> None:
        self.clusters: list[_OracleCluster] = []  # in opening order: index = age
        self.of: dict[str, int] = {}

    def report(self, files: list[tuple[str, list[str]]]) -> None:
        for file_id, linked_files in files:
            linked = sorted(
                {self.of[f] for f in linked_files},
                key=lambda i: (-self.clusters[i].size, i),
            )
            if not linked:
                self.clusters.append(_OracleCluster(file_id))
                self.of[file_id] = len(self.clusters) - 1
                continue
            into, others = linked[0], linked[1:]
            for other in others:
                self.clusters[into].size += self.clusters[other].size
                self.clusters[other].size = 0
                self.clusters[other].merged_into = self.clusters[into].first
                for f, c in self.of.items():
                    if c == other:
                        self.of[f] = into
            self.clusters[into].size += 1
            self.of[file_id] = into


def _no_file_keys(url: str) -> Engine:
    """Sessions on ``url`` where intake_file_dedup's rows need no intake_files rows
    (the test makes up file ids): SQLite without the foreign-key pragma, the foreign
    key dropped in the test's own PostgreSQL schema."""
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for fk in inspect(conn).get_foreign_keys("intake_file_dedup"):
                conn.execute(text(f'ALTER TABLE intake_file_dedup DROP CONSTRAINT "{fk["name"]}"'))
    return engine


# reports of 1-4 files; each file links to up to 3 earlier files (by index among all
# files so far, earlier reports' and its own)
_reports = st.lists(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=10_000), max_size=3), min_size=1, max_size=4
    ),
    min_size=1,
    max_size=8,
)


def test_assign_matches_an_in_memory_union_find(db_url: str) -> None:
    engine = _no_file_keys(db_url)
    sessions = sessionmaker(engine)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(_reports)
    def check(reports: list[list[list[int]]]) -> None:
        run = next(_run)
        oracle = _Oracle()
        files: list[str] = []
        for number, report in enumerate(reports):
            report_id = run * 100 + number
            planned: list[tuple[str, list[str]]] = []
            for picks in report:
                file_id = f"r{run}f{len(files)}"
                earlier = [files[i % len(files)] for i in picks] if files else []
                planned.append((file_id, earlier))
                files.append(file_id)
            outcomes = [
                FileDedup(
                    f,
                    (),
                    [Link(o, "pdq", 3) for o in dict.fromkeys(linked)],
                    [],
                    indexed=True,
                )
                for f, linked in planned
            ]
            with sessions() as session, session.begin():
                clusters.assign(session, outcomes, report_id=report_id, now=NOW)
            oracle.report(planned)
            with sessions() as session:
                rows = {
                    int(c.id): c
                    for c in session.scalars(
                        select(ClusterRow).where(ClusterRow.first_file_id.in_(files))
                    )
                }
                of = {
                    str(f): int(c)
                    for f, c in session.execute(
                        select(FileDedupRow.file_id, FileDedupRow.cluster_id).where(
                            FileDedupRow.file_id.in_(files)
                        )
                    )
                }
            by_first = {c.first_file_id: c for c in rows.values()}
            assert len(rows) == len(oracle.clusters)
            for expected in oracle.clusters:
                got = by_first[expected.first]
                assert got.size == expected.size
                merged = rows[int(got.merged_into)].first_file_id if got.merged_into else None
                assert merged == expected.merged_into
            for outcome in outcomes:  # assign tells each outcome its cluster
                assert outcome.cluster_id == of[outcome.file_id]
            for f in files:
                assert rows[int(of[f])].first_file_id == oracle.clusters[oracle.of[f]].first
            assert sum(c.size for c in rows.values()) == len(files)

    try:
        check()
    finally:
        engine.dispose()
