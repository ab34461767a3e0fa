"""Hash exchanges: the lists a provider syncs into its banks, and where each sync stands.

One row per configured exchange. ``checkpoint`` is the adapter's typed checkpoint in its
JSON form, written in the same transaction as the page of entries it follows, so a
crash between pages resumes from the last applied page. Credentials are never stored:
``credential_env`` / ``credential_file`` only name where the secret is read from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class ExchangeRow(Base):
    """A configured exchange (NCMEC hash sharing, ThreatExchange, a tipline feed)."""

    __tablename__ = "exchanges"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    #: adapter kind: tipline-feed | ncmec | threatexchange
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    #: the bank entries go to (adapters may route some to other banks by label)
    bank: Mapped[str] = mapped_column(String(200), nullable=False)
    #: the adapter's non-secret settings (URL, public key, environment, label routes)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    #: environment variable holding the credential (its value is never stored)
    credential_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: file holding the credential (its content is never stored)
    credential_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    #: seconds between scheduled syncs run by ``tipline worker``
    interval_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=3600)
    #: the adapter's checkpoint (JSON form), None before the first applied page
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: running totals: pages, added, updated, removed, unsupported {type: n}
    totals: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the source's own time of the newest applied data (for lag), when it says
    source_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ExchangeEntryTimeRow(Base):
    """The source's time of the newest event applied for an entry of an exchange (an
    add or a deletion), and the bank it went to. Sources such as NCMEC send a window's
    events out of time order; with this, an older event arriving after a newer one is
    skipped instead of undoing it (a deletion before its entry's add stays a deletion)."""

    __tablename__ = "exchange_entry_times"

    exchange_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("exchanges.id", ondelete="CASCADE"), primary_key=True
    )
    entry_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: unix seconds of the event, as the source stamped it
    ts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    bank: Mapped[str] = mapped_column(String(200), nullable=False)


class ExchangeFeedbackRow(Base):
    """A vote owed to an exchange's source about one of its entries: ``up`` when our
    reviewers confirmed material that matched it, ``down`` (with the source's reason id)
    when they found it a false positive. Sent once; failures are kept and retried."""

    __tablename__ = "exchange_feedback"
    __table_args__ = (
        UniqueConstraint(
            "exchange_id", "entry_id", "fingerprint", "vote", name="uq_exchange_feedback_vote"
        ),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("exchanges.id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: the entry as tipline stores it (NCMEC: ``<member id>-<entry id>``)
    entry_id: Mapped[str] = mapped_column(String(200), nullable=False)
    #: the source's fingerprint type (NCMEC: MD5, SHA1, PDQ)
    fingerprint: Mapped[str] = mapped_column(String(32), nullable=False)
    #: up | down
    vote: Mapped[str] = mapped_column(String(8), nullable=False)
    #: the decision it comes from
    decision_id: Mapped[str] = mapped_column(String(26), nullable=False)
    #: pending | sent | failed (failed: retried on later syncs until max attempts)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
