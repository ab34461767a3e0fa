"""Web UI tables: password users, their server-side sessions, review leases and
escalations, and the reveals a reviewer asked for (what they actually saw)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class WebUserRow(Base):
    """A person who logs in to the web UI with a password (argon2id hash only)."""

    __tablename__ = "web_users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    #: a :class:`tipline.services.auth.Role` value
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    #: reviewer preferences: default reveal level, daily exposure limit
    prefs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebSessionRow(Base):
    """A logged-in browser. The cookie holds a random token; only its SHA-256 is kept.
    ``secret`` keys the session's CSRF token and its signed media URLs."""

    __tablename__ = "web_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(26), nullable=False, index=True)
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReviewLeaseRow(Base):
    """Who works on a review item, until when; and whether it was escalated."""

    __tablename__ = "review_leases"

    item_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    escalated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    escalation_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReviewRevealRow(Base):
    """One reveal: a reviewer asked to see an item's media at ``level`` (0 = the
    default blurred rendering)."""

    __tablename__ = "review_reveals"
    __table_args__ = (Index("ix_review_reveals_actor_at", "actor", "at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(26), nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ReviewFirstConfirmationRow(Base):
    """The first of two confirmations of an item that matched no bank, under the
    two-person rule: who confirmed, when, and what they concluded. The item stays
    pending until a different reviewer confirms it too."""

    __tablename__ = "review_first_confirmations"

    item_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: classification, file annotations, viewed
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
