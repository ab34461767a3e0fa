"""Clusters of received files: a union-find kept in the database as a cluster id per
file.

A file with no link to an earlier file opens a cluster. A file linked to files of one
cluster joins it; linked to several clusters, it joins the largest (the oldest among
equals) and the others are merged into it (their files relabelled, the merged cluster
keeping ``merged_into``). Each file's links (:class:`.dedup.Link`) are stored, so every
membership is explained by a path of matches: which file, which signal, which distance.

Everything here runs in the caller's transaction, under :func:`lock`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from tipline.services.clearinghouse.dedup import FileDedup
from tipline.store.base import Base
from tipline.store.clearinghouse_triage import (
    ClearinghouseStateRow,
    ClusterRow,
    FileDedupRow,
    FileLinkRow,
)


def lock(session: Session) -> None:
    """Take the de-duplication lock until the transaction ends (a row lock on
    PostgreSQL; the database write lock on SQLite, taken before anything is read)."""
    session.execute(_lock_statement())


@functools.cache
def _lock_statement() -> Any:
    """:func:`lock`'s UPDATE, built once (Core)."""
    state = _table(ClearinghouseStateRow)
    return update(state).where(state.c.id == 1).values(runs=state.c.runs + 1)


def _clusters_of(session: Session, file_ids: Sequence[str]) -> dict[str, ClusterRow]:
    """The cluster of each of ``file_ids`` that has one (one query)."""
    if not file_ids:
        return {}
    rows = session.execute(
        select(FileDedupRow.file_id, ClusterRow)
        .join(ClusterRow, ClusterRow.id == FileDedupRow.cluster_id)
        .where(FileDedupRow.file_id.in_(list(file_ids)))
    )
    return {str(f): c for f, c in rows}


def _id(session: Session, row: ClusterRow) -> int:
    """The id of ``row`` (a cluster opened in this transaction gets it by a flush)."""
    if row.id is None:
        session.flush()
    return int(row.id)


def assign(
    session: Session, outcomes: Sequence[FileDedup], *, report_id: int, now: datetime
) -> None:
    """Give every outcome its cluster (opening and merging clusters), then store the
    files' rows and links.

    Batched: one query reads the clusters of every linked earlier file; one flush
    writes the new clusters and the changed sizes (a new cluster that absorbs an older
    one is the one case that flushes earlier, as the relabelling needs its id), then one
    statement each the files' rows and their links."""
    cluster_of = _clusters_of(
        session, sorted({link.other_file_id for o in outcomes for link in o.links})
    )
    opened: dict[int, int] = {}  # id() of a cluster opened here -> order of opening
    merged: list[tuple[ClusterRow, ClusterRow]] = []  # (merged, into) awaiting an id

    def rank(row: ClusterRow) -> tuple[int, int]:
        # the largest first, then the oldest: every stored cluster is older than the
        # ones opened here, which get increasing ids in the order they were opened
        return (-row.size, int(row.id) if row.id is not None else _NEW + opened[id(row)])

    for outcome in outcomes:
        linked = {
            id(row): row
            for link in outcome.links
            if (row := cluster_of.get(link.other_file_id)) is not None
        }
        if not linked:
            cluster = ClusterRow(
                first_file_id=outcome.file_id, created_at=now, size=1, merged_into=None
            )
            session.add(cluster)
            opened[id(cluster)] = len(opened)
        else:
            found = sorted(linked.values(), key=rank)
            cluster, others = found[0], found[1:]
            if others:
                stored = [int(o.id) for o in others if o.id is not None]
                if stored:
                    session.execute(
                        update(FileDedupRow)
                        .where(FileDedupRow.cluster_id.in_(stored))
                        .values(cluster_id=_id(session, cluster)),
                        execution_options={"synchronize_session": False},
                    )
                gone = {id(o) for o in others}
                for other in others:
                    cluster.size += other.size
                    other.size = 0
                    if cluster.id is not None:
                        other.merged_into = cluster.id
                    else:
                        merged.append((other, cluster))
                for key, value in cluster_of.items():
                    if id(value) in gone:
                        cluster_of[key] = cluster
            cluster.size += 1
        cluster_of[outcome.file_id] = cluster
    session.flush()  # the new clusters get their ids
    for other, into in merged:
        other.merged_into = into.id
    for outcome in outcomes:  # after the merges: a file seen earlier may have moved
        outcome.cluster_id = int(cluster_of[outcome.file_id].id)
    session.flush()  # the sizes, before the rows that name the clusters
    if outcomes:  # Core executemany: no unit of work for rows nothing reads back here
        session.execute(
            _table(FileDedupRow).insert(),
            [
                {
                    "file_id": o.file_id,
                    "report_id": report_id,
                    "cluster_id": o.cluster_id,
                    "state": o.state,
                    "known": o.known,
                    "indexed": o.indexed,
                    "published": False,
                    "processed_at": now,
                }
                for o in outcomes
            ],
        )
    links = [
        {
            "file_id": o.file_id,
            "other_file_id": link.other_file_id,
            "signal": link.signal,
            "distance": link.distance,
        }
        for o in outcomes
        for link in o.links
    ]
    if links:
        session.execute(_table(FileLinkRow).insert(), links)


def _table(row: type[Base]) -> Table:
    return cast(Table, row.__table__)


#: ranks clusters opened in this transaction after every stored one
_NEW = 2**62
