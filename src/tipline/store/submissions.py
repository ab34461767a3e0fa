"""Submissions (content seen on the platform), their match history and decisions.

A *submission* is one piece of uploaded content as the platform knows it: its content
id, uploader account, upload IP and time, free metadata, the signals computed for it.
Reports later need exactly these facts. Every row carries the tenant; every read here
takes a ``scope`` (the caller's tenant, None for a key bound to no tenant) and filters
on it, so a tenant never reads another tenant's rows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    select,
    true,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from ulid import ULID

from tipline.errors import NotFoundError
from tipline.store.base import Base, UTCDateTime, utcnow

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class DecisionKind(enum.Enum):
    """What a reviewer decided about a submission's matches."""

    CONFIRMED = "confirmed"  # true match: known material
    FALSE_POSITIVE = "false_positive"  # the match is wrong
    ESCALATED = "escalated"  # needs a second look
    DISMISSED = "dismissed"  # no action


class SubmissionRow(Base):
    """One piece of content submitted by a platform for matching."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_tenant_content", "tenant", "content_id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    content_id: Mapped[str] = mapped_column(String(256), nullable=False)
    uploader_account: Mapped[str | None] = mapped_column(String(256), nullable=True)
    upload_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: source port of the upload connection (an address behind CGNAT needs it)
    upload_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    uploader_screen_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    uploader_profile_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: account facts for reports: ip_events, devices, emails, display_names,
    #: disabled dates, estimated location (see tipline.services.reports.facts)
    account: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False, default=dict)
    #: [{"type": "pdq", "value": "<hex>"}, ...] computed for (or given with) the content
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)


class MatchRecordRow(Base):
    """One match found for a submission (or for an ad-hoc lookup when no submission)."""

    __tablename__ = "match_history"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    submission_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("submissions.id", ondelete="CASCADE"), nullable=True, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    bank: Mapped[str] = mapped_column(String(200), nullable=False)
    entry_id: Mapped[str] = mapped_column(String(200), nullable=False)
    signal_type: Mapped[str] = mapped_column(String(40), nullable=False)
    distance: Mapped[int] = mapped_column(Integer, nullable=False)
    query_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    labels: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    #: the query's variant that matched (``trim``, ``flipx``...; None: as given)
    variant: Mapped[str | None] = mapped_column(String(40), nullable=True)


class DecisionRow(Base):
    """A reviewer's decision about a submission."""

    __tablename__ = "decisions"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    submission_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    decision: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    #: what the reviewer saw and concluded, for reports: viewed, exif_viewed,
    #: classification, file/report annotations, escalation (see services/reports/facts)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    decided_by: Mapped[str] = mapped_column(String(64), nullable=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


@dataclass(frozen=True, slots=True)
class MatchFact:
    """One match to record: bank, entry, signal type, integer distance, labels."""

    bank: str
    entry_id: str
    signal_type: str
    distance: int
    query_value: str | None = None
    labels: tuple[str, ...] = ()
    variant: str | None = None


def _tenant_is(column: Any, scope: str | None) -> ColumnElement[bool]:
    """Rows of tenant ``scope``; every row when ``scope`` is None (a key bound to no
    tenant sees all tenants, as :func:`tipline.services.auth.can_see_tenant` rules)."""
    result: ColumnElement[bool] = true() if scope is None else column == scope
    return result


def new_id() -> str:
    """A new ULID string (26 characters, sortable by creation time)."""
    return str(ULID())


def create_submission(
    session: Session,
    *,
    tenant: str | None,
    content_id: str,
    created_by: str,
    uploader_account: str | None = None,
    upload_ip: str | None = None,
    uploaded_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    signals: list[dict[str, Any]] | None = None,
    upload_port: int | None = None,
    file_name: str | None = None,
    uploader_screen_name: str | None = None,
    uploader_profile_url: str | None = None,
    account: dict[str, Any] | None = None,
) -> SubmissionRow:
    """Insert a submission (flushed, so its id is usable) and return it."""
    row = SubmissionRow(
        id=new_id(),
        tenant=tenant,
        content_id=content_id,
        uploader_account=uploader_account,
        upload_ip=upload_ip,
        uploaded_at=uploaded_at,
        upload_port=upload_port,
        file_name=file_name,
        uploader_screen_name=uploader_screen_name,
        uploader_profile_url=uploader_profile_url,
        account=account or {},
        meta=metadata or {},
        signals=signals or [],
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def get_submission(session: Session, scope: str | None, submission_id: str) -> SubmissionRow:
    """The tenant's submission ``submission_id``; NotFoundError otherwise (also for
    another tenant's id, so ids do not leak across tenants)."""
    row = session.scalars(
        select(SubmissionRow).where(
            SubmissionRow.id == submission_id, _tenant_is(SubmissionRow.tenant, scope)
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no submission {submission_id!r}")
    return row


def list_submissions(
    session: Session,
    scope: str | None,
    *,
    content_id: str | None = None,
    uploader_account: str | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[SubmissionRow]:
    """The tenant's submissions, newest first; ``before`` is an id cursor (exclusive)."""
    query = select(SubmissionRow).where(_tenant_is(SubmissionRow.tenant, scope))
    if content_id is not None:
        query = query.where(SubmissionRow.content_id == content_id)
    if uploader_account is not None:
        query = query.where(SubmissionRow.uploader_account == uploader_account)
    if before is not None:
        query = query.where(SubmissionRow.id < before)
    return list(session.scalars(query.order_by(SubmissionRow.id.desc()).limit(limit)))


def record_matches(
    session: Session,
    tenant: str | None,
    submission_id: str | None,
    matches: list[MatchFact],
) -> list[MatchRecordRow]:
    """Append matches to the history (in the caller's transaction)."""
    return record_history(session, tenant, [(submission_id, m) for m in matches])


def record_history(
    session: Session,
    tenant: str | None,
    matches: Sequence[tuple[str | None, MatchFact]],
) -> list[MatchRecordRow]:
    """Append ``(submission id or None, match)`` pairs to the history, all at one time
    (in the caller's transaction)."""
    if not matches:
        return []
    now = utcnow()
    rows = [
        MatchRecordRow(
            tenant=tenant,
            submission_id=submission_id,
            at=now,
            bank=m.bank,
            entry_id=m.entry_id,
            signal_type=m.signal_type,
            distance=m.distance,
            query_value=m.query_value,
            labels=list(m.labels),
            variant=m.variant,
        )
        for submission_id, m in matches
    ]
    session.add_all(rows)
    session.flush()
    return rows


def list_matches(
    session: Session,
    scope: str | None,
    *,
    submission_id: str | None = None,
    bank: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[MatchRecordRow]:
    """The tenant's match history, newest first; ``before`` is an id cursor (exclusive)."""
    query = select(MatchRecordRow).where(_tenant_is(MatchRecordRow.tenant, scope))
    if submission_id is not None:
        query = query.where(MatchRecordRow.submission_id == submission_id)
    if bank is not None:
        query = query.where(MatchRecordRow.bank == bank)
    if before is not None:
        query = query.where(MatchRecordRow.id < before)
    return list(session.scalars(query.order_by(MatchRecordRow.id.desc()).limit(limit)))


def add_decision(
    session: Session,
    scope: str | None,
    submission_id: str,
    decision: DecisionKind,
    *,
    decided_by: str,
    reason: str = "",
    facts: dict[str, Any] | None = None,
) -> DecisionRow:
    """Record a decision on the tenant's submission (NotFoundError if not theirs)."""
    submission = get_submission(session, scope, submission_id)
    row = DecisionRow(
        id=new_id(),
        tenant=submission.tenant,
        submission_id=submission_id,
        decision=decision.value,
        reason=reason,
        facts=facts or {},
        decided_by=decided_by,
        decided_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def list_decisions(
    session: Session, scope: str | None, submission_id: str | None = None, limit: int = 100
) -> list[DecisionRow]:
    """The tenant's decisions, newest first, optionally for one submission."""
    query = select(DecisionRow).where(_tenant_is(DecisionRow.tenant, scope))
    if submission_id is not None:
        query = query.where(DecisionRow.submission_id == submission_id)
    return list(session.scalars(query.order_by(DecisionRow.id.desc()).limit(limit)))
