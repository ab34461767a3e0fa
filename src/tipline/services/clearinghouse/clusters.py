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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
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
    session.execute(lock_statement())


@functools.cache
def lock_statement() -> Any:
    """:func:`lock`'s UPDATE, built once (Core), for a caller that adds to it."""
    state = _table(ClearinghouseStateRow)
    return update(state).where(state.c.id == 1).values(runs=state.c.runs + 1)


@dataclass(slots=True, eq=False)
class _Cluster:
    """A cluster as :func:`assign` handles it (one object per cluster; ``id`` None until
    a cluster opened here is inserted)."""

    id: int | None
    first_file_id: str
    created_at: datetime
    size: int
    merged_into: int | None
    #: (size, merged_into) as stored; None for a cluster not inserted yet
    stored: tuple[int, int | None] | None


def _clusters_of(session: Session, file_ids: Sequence[str]) -> dict[str, _Cluster]:
    """The cluster of each of ``file_ids`` that has one (one query; files of one
    cluster share its object)."""
    if not file_ids:
        return {}
    found: dict[int, _Cluster] = {}
    out: dict[str, _Cluster] = {}
    for f, cid, first, created, size, merged in session.execute(
        _statements().clusters_of, {"ids": list(file_ids)}
    ):
        cluster = found.get(int(cid))
        if cluster is None:
            cluster = found[int(cid)] = _Cluster(
                int(cid), str(first), created, int(size), merged, (int(size), merged)
            )
        out[str(f)] = cluster
    return out


class _Opened:
    """Clusters opened by :func:`assign`, inserted together (in opening order, so their
    ids increase in that order) when an id is first needed or at the end."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.waiting: list[_Cluster] = []

    def id_of(self, cluster: _Cluster) -> int:
        if cluster.id is None:
            self.insert()
        assert cluster.id is not None
        return cluster.id

    def insert(self) -> None:
        if not self.waiting:
            return
        rows = [
            {
                "first_file_id": c.first_file_id,
                "created_at": c.created_at,
                "size": c.size,
                "merged_into": c.merged_into,
            }
            for c in self.waiting
        ]
        ids = self.session.execute(_statements().open, rows).scalars().all()
        for cluster, cid in zip(self.waiting, ids, strict=True):
            cluster.id = int(cid)
            cluster.stored = (cluster.size, cluster.merged_into)
        self.waiting = []


def assign(
    session: Session, outcomes: Sequence[FileDedup], *, report_id: int, now: datetime
) -> None:
    """Give every outcome its cluster (opening and merging clusters), then store the
    files' rows and links.

    Batched, Core statements built once: one query reads the clusters of every linked
    earlier file; one statement inserts the clusters opened here (a new cluster that
    absorbs an older one is the one case that inserts earlier, as the relabelling needs
    its id), one the changed sizes, then one each the files' rows and their links."""
    cluster_of = _clusters_of(
        session, sorted({link.other_file_id for o in outcomes for link in o.links})
    )
    stored_clusters = {id(c): c for c in cluster_of.values()}
    opened: dict[int, int] = {}  # id() of a cluster opened here -> order of opening
    waiting = _Opened(session)
    merged: list[tuple[_Cluster, _Cluster]] = []  # (merged, into) awaiting an id

    def rank(row: _Cluster) -> tuple[int, int]:
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
            cluster = _Cluster(None, outcome.file_id, now, 1, None, None)
            waiting.waiting.append(cluster)
            opened[id(cluster)] = len(opened)
            stored_clusters[id(cluster)] = cluster
        else:
            found = sorted(linked.values(), key=rank)
            cluster, others = found[0], found[1:]
            if others:
                stored = [int(o.id) for o in others if o.id is not None]
                if stored:
                    session.execute(
                        _statements().relabel,
                        {"into": waiting.id_of(cluster), "ids": stored},
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
    waiting.insert()  # the new clusters get their ids
    for other, into in merged:
        other.merged_into = into.id
    changed = [
        {"cid": c.id, "new_size": c.size, "new_merged": c.merged_into}
        for c in stored_clusters.values()
        if c.stored is not None and c.stored != (c.size, c.merged_into)
    ]
    if changed:  # the sizes, before the rows that name the clusters
        session.execute(_statements().resize, changed)
    for outcome in outcomes:  # after the merges: a file seen earlier may have moved
        cid = cluster_of[outcome.file_id].id
        assert cid is not None
        outcome.cluster_id = cid
    if outcomes:  # Core executemany: no unit of work for rows nothing reads back here
        session.execute(
            _statements().files,
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
        session.execute(_statements().links, links)


@dataclass(frozen=True, slots=True)
class _Statements:
    clusters_of: Any
    open: Any
    relabel: Any
    resize: Any
    files: Any
    links: Any


@functools.cache
def _statements() -> _Statements:
    """:func:`assign`'s statements, built once (Core, bound parameters)."""
    clusters = _table(ClusterRow)
    c = clusters.c
    dedup = _table(FileDedupRow)
    d = dedup.c
    return _Statements(
        clusters_of=select(d.file_id, c.id, c.first_file_id, c.created_at, c.size, c.merged_into)
        .join(clusters, c.id == d.cluster_id)
        .where(d.file_id.in_(bindparam("ids", expanding=True))),
        open=insert(clusters).returning(c.id, sort_by_parameter_order=True),
        relabel=update(dedup)
        .where(d.cluster_id.in_(bindparam("ids", expanding=True)))
        .values(cluster_id=bindparam("into", type_=d.cluster_id.type)),
        resize=update(clusters)
        .where(c.id == bindparam("cid", type_=c.id.type))
        .values(
            size=bindparam("new_size", type_=c.size.type),
            merged_into=bindparam("new_merged", type_=c.merged_into.type),
        ),
        files=dedup.insert(),
        links=_table(FileLinkRow).insert(),
    )


def _table(row: type[Base]) -> Table:
    return cast(Table, row.__table__)


#: ranks clusters opened in this transaction after every stored one
_NEW = 2**62
