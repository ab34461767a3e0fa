"""One received report as the desk's page shows it: the analyst's view of the report
(:func:`tipline.services.clearinghouse.queue.report_view`, audited as
``clearinghouse.report.view``), the level each file's thumbnail opens at, the analyst's
exposure today, and the routing decision in force with its referral package preview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import queue
from tipline.services.clearinghouse.referral_preview import ReferralPreview, preview
from tipline.services.desk.media import revealed_levels
from tipline.services.review.media import VIEW_LEVEL, Exposure, exposure_in
from tipline.store.base import utcnow


@dataclass(frozen=True, slots=True)
class DeskReport:
    """Everything the desk's report page shows."""

    view: dict[str, Any]
    #: file id -> the level its thumbnail opens at
    shown: dict[str, int]
    #: file id -> the highest level the analyst revealed (-1: none)
    revealed: dict[str, int]
    exposure: Exposure
    referral: ReferralPreview | None

    @property
    def pending(self) -> bool:
        """True while the report waits for a decision."""
        triage = self.view.get("triage")
        return triage is not None and triage.get("status") == "pending"


def open_report(
    sessions: sessionmaker[Session],
    who: Principal,
    report_id: int,
    *,
    default_level: int,
    daily_limit: int,
    blur: str | None = None,
    now: datetime | None = None,
) -> DeskReport:
    """The report for the desk (audited as a report view). Each file opens at what the
    analyst revealed, else their default level (at most 1); ``blur`` names a file shown
    at level 0 this time."""
    view = queue.report_view(sessions, who, report_id)
    media_files = {f["file_id"]: f["vault_id"] for f in view["files"] if f.get("media")}
    with sessions() as session:
        levels = revealed_levels(session, who, media_files).revealed
        seen = exposure_in(session, who, daily_limit, now or utcnow())
    base = min(default_level, VIEW_LEVEL - 1)
    shown = {f: 0 if f == blur else max(base, level) for f, level in levels.items()}
    referral = preview(sessions, who, report_id) if who.can(Permission.ROUTE) else None
    return DeskReport(view, shown, levels, seen, referral)
