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

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tipline.services.clearinghouse.dedup import FileDedup
from tipline.store.clearinghouse_triage import (
    ClearinghouseStateRow,
    ClusterRow,
    FileDedupRow,
    FileLinkRow,
)


def lock(session: Session) -> None:
    """Take the de-duplication lock until the transaction ends (a row lock on
    PostgreSQL; the database write lock on SQLite, taken before anything is read)."""
    session.execute(
        update(ClearinghouseStateRow)
        .where(ClearinghouseStateRow.id == 1)
        .values(runs=ClearinghouseStateRow.runs + 1)
    )


def _clusters_of(session: Session, file_ids: Sequence[str]) -> dict[str, int]:
    if not file_ids:
        return {}
    rows = session.execute(
        select(FileDedupRow.file_id, FileDedupRow.cluster_id).where(
            FileDedupRow.file_id.in_(list(file_ids))
        )
    )
    return {str(f): int(c) for f, c in rows}


def _merge(session: Session, target: ClusterRow, others: Sequence[ClusterRow]) -> None:
    ids = [o.id for o in others]
    session.execute(
        update(FileDedupRow).where(FileDedupRow.cluster_id.in_(ids)).values(cluster_id=target.id),
        execution_options={"synchronize_session": False},
    )
    for other in others:
        target.size += other.size
        other.size = 0
        other.merged_into = target.id


def assign(
    session: Session, outcomes: Sequence[FileDedup], *, report_id: int, now: datetime
) -> None:
    """Give every outcome its cluster (opening and merging clusters), then store the
    files' rows and links."""
    earlier = _clusters_of(
        session, sorted({link.other_file_id for o in outcomes for link in o.links})
    )
    for outcome in outcomes:
        ids = {
            earlier[link.other_file_id] for link in outcome.links if link.other_file_id in earlier
        }
        if not ids:
            cluster = ClusterRow(first_file_id=outcome.file_id, created_at=now, size=1)
            session.add(cluster)
            session.flush()
        else:
            rows = [session.get(ClusterRow, cid) for cid in sorted(ids)]
            found = [r for r in rows if r is not None]
            found.sort(key=lambda r: (-r.size, r.id))
            cluster, others = found[0], found[1:]
            if others:
                _merge(session, cluster, others)
                merged = {o.id for o in others}
                for key, value in earlier.items():
                    if value in merged:
                        earlier[key] = cluster.id
            cluster.size += 1
        earlier[outcome.file_id] = int(cluster.id)
    for outcome in outcomes:  # after the merges: a file seen earlier may have moved
        outcome.cluster_id = earlier[outcome.file_id]
    session.add_all(
        FileDedupRow(
            file_id=o.file_id,
            report_id=report_id,
            cluster_id=o.cluster_id,
            state=o.state,
            known=o.known,
            indexed=o.indexed,
            published=False,
            processed_at=now,
        )
        for o in outcomes
    )
    session.add_all(
        FileLinkRow(
            file_id=o.file_id,
            other_file_id=link.other_file_id,
            signal=link.signal,
            distance=link.distance,
        )
        for o in outcomes
        for link in o.links
    )
    session.flush()
