"""What the referral package of a routed report would hold, without building it: the
agency, whether media goes in, and each member's name (see :mod:`.referral`). Nothing
is read from the vault and nothing is written, so a preview is not audited; building
the package is (``referral.package``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import NotFoundError
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import queue, routing
from tipline.services.clearinghouse.referral import _member_of
from tipline.store.clearinghouse import IntakeFileRow

#: the members every package has, besides the file details and the media
FIXED_MEMBERS = (
    "report.json",
    "summary.pdf",
    "custody.json",
    "vics.json",
    "xml/report.xml",
    "SHA256SUMS",
)


@dataclass(frozen=True, slots=True)
class ReferralPreview:
    """The package a report would get now: None ``agency`` means it goes nowhere."""

    report_id: int
    decision: routing.DecisionInfo
    agency: str | None
    agency_name: str | None
    media_included: bool
    members: tuple[str, ...]
    media_members: tuple[str, ...]
    files: int

    @property
    def buildable(self) -> bool:
        """True when a package can be built (the report was routed to an agency)."""
        return self.agency is not None


def preview(
    sessions: sessionmaker[Session], who: Principal, report_id: int
) -> ReferralPreview | None:
    """The preview of ``report_id``'s package under the routing decision in force; None
    when the report was never routed. Needs ``route`` and no tenant."""
    queue.require(who, Permission.ROUTE)
    try:
        decision = routing.latest_decision(sessions, report_id)
    except NotFoundError:
        return None
    with sessions() as session:
        files = list(
            session.scalars(
                select(IntakeFileRow)
                .where(IntakeFileRow.report_id == report_id)
                .order_by(IntakeFileRow.uploaded_at, IntakeFileRow.id)
            )
        )
    with_media = decision.agency is not None and decision.media_allowed
    media = tuple(_member_of(f) for f in files) if with_media else ()
    details = tuple(f"xml/{f.id}.fileDetails.xml" for f in files if f.details_xml)
    return ReferralPreview(
        report_id=report_id,
        decision=decision,
        agency=decision.agency,
        agency_name=decision.agency_name,
        media_included=with_media,
        members=tuple(sorted((*FIXED_MEMBERS, *details, *media))),
        media_members=media,
        files=len(files),
    )
