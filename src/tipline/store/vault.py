"""Evidence vault tables: one row per preserved item (the file itself is on disk,
encrypted) and the legal holds placed on items."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime


class EvidenceItemRow(Base):
    """A preserved item: where it came from, its digests, its wrapped data key and its
    retention. Purged items keep their row (what was deleted, when, by whom) with the
    wrapped key erased."""

    __tablename__ = "vault_items"
    __table_args__ = (Index("ix_vault_items_purged_retain", "purged_at", "retain_until"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: media | report_xml | other (tipline.services.vault.EvidenceKind)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    media_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    filename: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: plaintext bytes
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: SHA-256 (hex) of the plaintext: the preservation digest
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    #: SHA-256 (hex) of the encrypted file, checkable without any key
    blob_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    blob_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    format_version: Mapped[int] = mapped_column(Integer, nullable=False)
    chunk_size: Mapped[int] = mapped_column(Integer, nullable=False)
    #: fingerprint of the master key that wrapped ``wrapped_key``
    key_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    #: the data key, AES-GCM wrapped by the master key; NULL once purged
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary(), nullable=True)
    submission_id: Mapped[str | None] = mapped_column(String(26), nullable=True, index=True)
    review_item_id: Mapped[str | None] = mapped_column(String(26), nullable=True, index=True)
    report_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    content_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    stored_by: Mapped[str] = mapped_column(String(64), nullable=False)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    purged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def __repr__(self) -> str:  # never show the wrapped key
        return f"EvidenceItemRow(id={self.id!r}, kind={self.kind!r}, size={self.size!r})"


class EvidenceHoldRow(Base):
    """A legal hold: while any hold on an item is unreleased, the item is never purged."""

    __tablename__ = "vault_holds"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    item_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("vault_items.id"), nullable=False, index=True
    )
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    placed_by: Mapped[str] = mapped_column(String(64), nullable=False)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
