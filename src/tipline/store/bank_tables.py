"""SQLAlchemy models for banks, bank entries and entry signals.

``bank_state`` holds one row: the change-sequence counter (``seq``) and a random
``instance`` id identifying this database (so an index built from another database is
never reused). Every write to an entry takes the next sequence numbers from that row;
the row lock serialises writers until commit, so sequence order is commit order and
"rows with seq > X" never skips a row on PostgreSQL either.
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
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime, utcnow

#: BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class BankStateRow(Base):
    """The single row holding the change-sequence counter and the database instance id."""

    __tablename__ = "bank_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    instance: Mapped[str] = mapped_column(String(36), nullable=False)


class BankListChangeRow(Base):
    """One committed change of the banks table: a trigger on ``banks`` adds a row per
    writing statement (migration ``0044_bank_list_changes``) and rows are never
    deleted, so an unchanged row count means an unchanged bank list."""

    __tablename__ = "bank_list_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)


class BankRow(Base):
    """A named list of known items with its own match settings."""

    __tablename__ = "banks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_allow_bank: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: signal type name -> match threshold in that type's distance unit
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    tenant: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    #: the bank-side robust tier (region descriptors of entries added from media) is on
    region_matching: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: match the query's normalised variants (borders, captions, frames removed) too
    normalize: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    #: auto-report policy at match time (:mod:`tipline.banks.auto_report`)
    auto_report: Mapped[str] = mapped_column(
        String(16), nullable=False, default="default", server_default="default"
    )


class BankEntryRow(Base):
    """One known item of a bank; ``seq`` is the change sequence of its last write."""

    __tablename__ = "bank_entries"
    __table_args__ = (
        UniqueConstraint("bank_id", "entry_id", name="uq_bank_entries_bank_id_entry_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("banks.id", ondelete="CASCADE"), nullable=False
    )
    entry_id: Mapped[str] = mapped_column(String(200), nullable=False)
    labels: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    #: free-text note (HMA's ``note``, at most 255 characters)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: user metadata given with the content (HMA's ``content_id``/``content_uri``/``json``)
    content_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: with ``disabled``: unix time from which the entry matches again (None = no end)
    disable_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BankSignalRow(Base):
    """One signal (type + canonical value) of an entry; ``seq`` is when it was added."""

    __tablename__ = "bank_signals"
    __table_args__ = (Index("ix_bank_signals_seq", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_pk: Mapped[int] = mapped_column(
        BigId, ForeignKey("bank_entries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class BankRegionRow(Base):
    """One region descriptor of an entry added from media: the PDQ (``value``, 64 hex)
    of a crop or small rotation of the original, named by ``region``
    (:mod:`tipline.signals.regions`); ``seq`` is the entry's change sequence when added."""

    __tablename__ = "bank_regions"
    __table_args__ = (Index("ix_bank_regions_seq", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_pk: Mapped[int] = mapped_column(
        BigId, ForeignKey("bank_entries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    region: Mapped[str] = mapped_column(String(40), nullable=False)
    value: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
