"""Job queue (database-leased), webhook endpoints and per-bank action rules."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime


class Job(Base):
    """A unit of background work claimed by one runner at a time through a lease."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    #: JSON document handed to the handler
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: pending | running | done | dead (see tipline.services.jobs.JobStatus)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Webhook(Base):
    """A configured receiver; ``secret`` keys the HMAC signature and is never logged."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    secret: Mapped[str] = mapped_column(String(200), nullable=False)
    #: JSON list of bank names, or NULL for every bank
    banks: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    def __repr__(self) -> str:  # never show the secret
        return f"Webhook(id={self.id!r}, tenant={self.tenant!r}, enabled={self.enabled!r})"


class ActionRule(Base):
    """Per-bank rule: on a match in ``bank`` (NULL = any bank) run ``action``."""

    __tablename__ = "action_rules"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    bank: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    #: enqueue_review | webhook (see tipline.services.actions.ActionKind)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    #: for ``webhook``: one webhook, or NULL for every enabled webhook of the tenant
    webhook_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ReviewItem(Base):
    """A matched item waiting for a human decision."""

    __tablename__ = "review_queue"
    __table_args__ = (
        Index("ix_review_queue_status_created_at", "status", "created_at"),
        UniqueConstraint("event_id", "bank", name="uq_review_queue_event_id_bank"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False)
    content_id: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    bank: Mapped[str] = mapped_column(String(200), nullable=False)
    #: JSON: the match details (signal type, distance, entry ids)
    details: Mapped[str] = mapped_column(Text, nullable=False)
    #: pending | confirmed | rejected
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
