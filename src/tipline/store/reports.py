"""CyberTipline reports, their files, the delivery outbox, its step log and the
operator queue.

The outbox holds exactly the reports that still have delivery work to do: one row per
report, naming the next ISPWS step and whether that step's request may already have
left (``inflight``: written and committed before the call, cleared with its outcome).
A finished, failed or retracted report has no outbox row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class ReportRow(Base):
    """One CyberTipline report as tipline built it."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_tenant_status", "tenant", "status"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: review | auto | bundle (see tipline.services.reports.service.ReportKind)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    #: queued | delivering | finished | failed | retracted
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    #: what the report came from: ``decision:<id>``, ``bundle:<cluster>`` ...
    source: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    #: the ``<report>`` document as built and validated (UTF-8)
    xml: Mapped[str] = mapped_column(Text, nullable=False)
    xml_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    #: the receiver's report id once a submit succeeded
    remote_id: Mapped[int | None] = mapped_column(_BigId, nullable=True)
    #: submits whose answer was lost: each may have left an open report on the
    #: receiver that tipline cannot name, and so never finishes
    orphans: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReportFileRow(Base):
    """One file of a report: where its bytes are, its hashes and its ``fileDetails``."""

    __tablename__ = "report_files"

    report_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str | None] = mapped_column(String(26), nullable=True, index=True)
    #: the evidence store's id of the bytes as uploaded
    evidence_id: Mapped[str] = mapped_column(String(128), nullable=False)
    file_name: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(_BigId, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    sha1: Mapped[str] = mapped_column(String(40), nullable=False)
    #: the ReportedFile values (JSON) the fileDetails document is built from
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    remote_file_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    described: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class ReportOutboxRow(Base):
    """Delivery work still to do for one report (see the module docstring)."""

    __tablename__ = "report_outbox"
    __table_args__ = (Index("ix_report_outbox_next_at", "next_at"),)

    report_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: submit | upload | fileinfo | finish | retract
    step: Mapped[str] = mapped_column(String(16), nullable=False)
    file_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    inflight: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: a retract that ends the report (operator's request), not a restart
    final_retract: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: failed attempts since the last step that succeeded
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReportEventRow(Base):
    """The step log: each ISPWS call's start and outcome, in order."""

    __tablename__ = "report_events"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("reports.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    step: Mapped[str] = mapped_column(String(16), nullable=False)
    #: start | ok | retry | unknown | rejected | recovered
    phase: Mapped[str] = mapped_column(String(16), nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")


class OperatorItemRow(Base):
    """A report a person must look at: the receiver refused it, or retries ran out."""

    __tablename__ = "report_operator_queue"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    report_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("reports.id", ondelete="CASCADE"), nullable=False, index=True
    )
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    step: Mapped[str] = mapped_column(String(16), nullable=False)
    file_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
