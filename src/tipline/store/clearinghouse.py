"""The clearinghouse intake: reporting providers (ISPWS accounts), the reports they
file and the files attached to them.

A report is ``open`` from ``submit`` until ``finish`` (``finished``) or ``retract``
(``retracted``); only finished reports exist for the clearinghouse's later stages.
File bytes live encrypted in the evidence vault (``vault_id``); rows keep the digests
and signals computed on intake.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class IntakeProviderRow(Base):
    """A reporting provider's ISPWS account (password stored as a scrypt hash)."""

    __tablename__ = "intake_providers"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    #: the HTTP Basic user name
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class IntakeReportRow(Base):
    """One report as a provider submitted it (id: the ISPWS ``reportId``)."""

    __tablename__ = "intake_reports"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    provider_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("intake_providers.id"), nullable=False, index=True
    )
    #: open | finished | retracted
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    #: the ``<report>`` document as received (UTF-8, schema-valid)
    xml: Mapped[str] = mapped_column(Text, nullable=False)
    xml_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    incident_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class IntakeFileRow(Base):
    """One file uploaded to a report: digests, signals, vault item and fileDetails."""

    __tablename__ = "intake_files"

    #: the ISPWS ``fileId`` (32 hex characters)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("intake_reports.id"), nullable=False, index=True
    )
    file_name: Mapped[str] = mapped_column(Text, nullable=False)
    #: bytes
    size: Mapped[int] = mapped_column(_BigId, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    sha1: Mapped[str] = mapped_column(String(40), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    #: photo | video | None (not media tipline can hash perceptually)
    media: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: every signal computed: [{"type", "value", "quality", "variant"}]
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    #: why perceptual hashing failed (digests are always present)
    hash_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    vault_id: Mapped[str] = mapped_column(String(26), nullable=False)
    #: the latest ``<fileDetails>`` document received for the file
    details_xml: Mapped[str | None] = mapped_column(Text, nullable=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    described_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
