"""Match-time viral bundles: an auto-report held open to collect the other uploads of
its perceptual cluster (see :mod:`tipline.services.reports.viral`).

One row per report that was held: the founding upload's PDQ hash and time (the
cluster's centre), when the hold ends, when it was released to the delivery outbox,
and whether the cluster reached the viral threshold. Rows stay after release: later
bundles of the same cluster count the earlier ones' uploaders within the window.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tipline.store.base import Base, UTCDateTime


class ReportBundleRow(Base):
    """A held (or released) match-time bundle: one report, many uploads."""

    __tablename__ = "report_bundles"
    __table_args__ = (
        Index("ix_report_bundles_tenant_first_at", "tenant", "first_at"),
        Index("ix_report_bundles_hold_until", "hold_until"),
    )

    report_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the founding upload's PDQ hash (64 hex digits)
    pdq: Mapped[str] = mapped_column(String(64), nullable=False)
    #: the founding upload's time (upload time, else when it was recorded)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: the report goes to the delivery outbox at this time (or when released earlier)
    hold_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: set when the final document was built and the report queued for delivery
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the cluster's distinct uploaders within the window reached the threshold
    viral: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
