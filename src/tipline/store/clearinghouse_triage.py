"""The clearinghouse after intake: de-duplication of received files, clusters, links
between reports, triage scores and analysts' decisions.

* ``clearinghouse_state`` — one row whose update serialises de-duplication across
  processes (a file is always compared with every file de-duplicated before it);
* ``intake_file_dedup`` — per file: known / seen / new, its cluster, the known-bank
  matches, whether it was indexed (entry of the clearinghouse's files bank);
* ``intake_file_links`` — why a file joined its cluster: the earlier file it matched,
  by which signal and at which distance;
* ``intake_clusters`` — one row per cluster ever opened (``merged_into`` when a later
  file joined it to an older cluster);
* ``intake_report_identifiers`` — reported accounts, emails, IPs and device ids, the
  keys that link reports;
* ``intake_triage`` — the score of a finished report with every factor, and the
  analyst's decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class ClearinghouseStateRow(Base):
    """The single row de-duplication locks (``runs`` counts de-duplicated reports)."""

    __tablename__ = "clearinghouse_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    runs: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class ClusterRow(Base):
    """A set of received files that are the same picture or video."""

    __tablename__ = "intake_clusters"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    #: the file that opened the cluster
    first_file_id: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: files currently in the cluster
    size: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    #: the cluster this one was merged into (its files were moved there)
    merged_into: Mapped[int | None] = mapped_column(_BigId, nullable=True)


class FileDedupRow(Base):
    """De-duplication outcome of one received file."""

    __tablename__ = "intake_file_dedup"

    file_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("intake_files.id"), primary_key=True
    )
    report_id: Mapped[int] = mapped_column(_BigId, nullable=False, index=True)
    cluster_id: Mapped[int] = mapped_column(_BigId, nullable=False, index=True)
    #: known (a known-bank match) | seen (matches earlier received files only) | new
    state: Mapped[str] = mapped_column(String(8), nullable=False)
    #: [{"bank", "entry_id", "signal", "distance", "labels"}]
    known: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    #: entry of the files bank (False: an earlier file represents it)
    indexed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    #: the hashes went into the published hash list
    published: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class FileLinkRow(Base):
    """``file_id`` matched the earlier file ``other_file_id`` with ``signal`` at
    ``distance`` (bits for PDQ, percent for vPDQ, 0 for digests)."""

    __tablename__ = "intake_file_links"
    __table_args__ = (Index("ix_intake_file_links_other_file_id", "other_file_id"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    other_file_id: Mapped[str] = mapped_column(String(32), nullable=False)
    signal: Mapped[str] = mapped_column(String(40), nullable=False)
    distance: Mapped[int] = mapped_column(Integer, nullable=False)


class ReportIdentifierRow(Base):
    """An identifier of the reported person or upload in a report (normalised).

    ``scope`` is the provider id for identifiers only meaningful inside one provider
    (account ids, screen names), else empty.
    """

    __tablename__ = "intake_report_identifiers"
    __table_args__ = (Index("ix_intake_report_identifiers_key", "kind", "scope", "value"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(_BigId, nullable=False, index=True)
    #: account | screen_name | email | ip | device
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    scope: Mapped[str] = mapped_column(String(26), nullable=False)
    value: Mapped[str] = mapped_column(String(512), nullable=False)


class TriageRow(Base):
    """The triage of one finished report, and the analyst's decision on it."""

    __tablename__ = "intake_triage"
    __table_args__ = (Index("ix_intake_triage_status_score", "status", "score"),)

    report_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("intake_reports.id"), primary_key=True
    )
    #: pending (in the analyst queue) | confirmed | rejected
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    #: [{"name", "weight", "value", "points", "detail"}]
    factors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    files: Mapped[int] = mapped_column(Integer, nullable=False)
    new_files: Mapped[int] = mapped_column(Integer, nullable=False)
    known_files: Mapped[int] = mapped_column(Integer, nullable=False)
    linked_reports: Mapped[int] = mapped_column(Integer, nullable=False)
    triaged_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
