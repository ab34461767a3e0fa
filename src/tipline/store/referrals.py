"""Clearinghouse routing and referrals: each routing decision made for an intake report
(with its explanation) and each referral package built from one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class RoutingDecisionRow(Base):
    """Where one report was routed, by which rule, from which IP; the latest row of a
    report is in force (a report routed again keeps its earlier decisions)."""

    __tablename__ = "routing_decisions"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    report_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("intake_reports.id"), nullable=False, index=True
    )
    #: agency id of the routing table; None when no rule applied (unrouted)
    agency: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agency_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: packages for this decision may carry media (the agency's setting when decided)
    media_allowed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    #: subdivision | country | fallback | unlocated | unrouted
    rule: Mapped[str] = mapped_column(String(16), nullable=False)
    #: the key of the rule that matched (``US-CA``, ``GB``), when one did
    rule_key: Mapped[str | None] = mapped_column(String(16), nullable=True)
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    subdivision: Mapped[str | None] = mapped_column(String(8), nullable=True)
    #: the address whose location decided (the latest event of the winning place)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: every address considered with its status, the vote, the rule: JSON
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    decided_by: Mapped[str] = mapped_column(String(64), nullable=False)


class ReferralPackageRow(Base):
    """One referral package (a zip) built for a routing decision."""

    __tablename__ = "referral_packages"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    report_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("intake_reports.id"), nullable=False, index=True
    )
    decision_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("routing_decisions.id"), nullable=False
    )
    agency: Mapped[str] = mapped_column(String(64), nullable=False)
    #: SHA-256 (hex) and size (bytes) of the zip as written
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(_BigId, nullable=False)
    #: media files inside the package (0 when the rule keeps media out)
    media_files: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
