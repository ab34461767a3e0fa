"""The auto-report policy at match time.

When an item's match is an exact digest match (MD5, SHA-1, SHA-256) of an entry in a
bank whose policy is auto-report (``report_auto_banks``: banks whose entries a trusted
source confirmed), :func:`tipline.services.submissions.record_batch` keeps the item's
media in the evidence vault and queues its report in the same transaction as the
match: :func:`queue_at_match`. Nobody viewed the file and the report says so
(``fileViewedByEsp`` and ``exifViewedByEsp`` false).

A report that cannot be queued (no media, no vault key, reporting not configured, a
fact the schema refuses) never fails the match: the gap is logged and audited as
``report.not_queued`` in the match's transaction, and ``tipline report auto`` can make
the report once the cause is fixed. One report per submission (source
``auto:<submission id>``), whichever path makes it first, and one per file: a
submission with the content id and MD5 of a file already reported (a platform
retrying a call, a folder scanned again) is not reported again
(``report.already_reported``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.errors import TiplineError
from tipline.services import audit
from tipline.services.matching.match import Match
from tipline.services.reports.facts import ReviewFacts
from tipline.services.reports.outbox import ReportStatus
from tipline.services.reports.service import (
    DELIVERY_PRINCIPAL,
    EXACT_SIGNAL_TYPES,
    ReportKind,
    existing_report,
    queue_submission_report,
    reporter_from_settings,
)
from tipline.services.vault import Vault
from tipline.services.vault.evidence import VaultEvidence
from tipline.store.reports import ReportFileRow, ReportRow
from tipline.store.submissions import SubmissionRow
from tipline.store.vault import EvidenceItemRow

_log = logging.getLogger(__name__)

#: who queues reports made at match time (audit actor, ``created_by`` of the report)
ACTOR = "auto-report"


@dataclass(frozen=True)
class AutoReportPolicy:
    """The auto-report policy of ``settings`` (banks, reporter, platform)."""

    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings) -> AutoReportPolicy | None:
        """The policy, or None when no bank is listed in ``report_auto_banks``."""
        return cls(settings) if settings.report_auto_banks else None

    def covers(self, matches: Sequence[Match]) -> list[str]:
        """``bank/entry`` of the matches the policy reports: exact digest matches
        (distance 0), not suppressed by an allow bank, in an auto-report bank."""
        banks = set(self.settings.report_auto_banks)
        return sorted(
            {
                f"{m.bank}/{m.entry_id}"
                for m in matches
                if m.suppressed_by is None
                and m.distance == 0
                and m.signal_type in EXACT_SIGNAL_TYPES
                and m.bank in banks
            }
        )


def _same_file_reported(
    session: Session, submission: SubmissionRow, evidence_ids: Sequence[str]
) -> str | None:
    """The report (not retracted) already carrying this file: a submission of the same
    tenant and content id whose reported bytes have the SHA-256 of the media kept now
    (a platform retrying a call, a folder scanned again)."""
    digests = select(EvidenceItemRow.sha256).where(EvidenceItemRow.id.in_(list(evidence_ids)))
    found = session.execute(
        select(ReportRow.id)
        .join(ReportFileRow, ReportFileRow.report_id == ReportRow.id)
        .join(SubmissionRow, SubmissionRow.id == ReportFileRow.submission_id)
        .join(EvidenceItemRow, EvidenceItemRow.id == ReportFileRow.evidence_id)
        .where(
            EvidenceItemRow.sha256.in_(digests),
            SubmissionRow.content_id == submission.content_id,
            SubmissionRow.id != submission.id,
            SubmissionRow.tenant.is_(None)
            if submission.tenant is None
            else SubmissionRow.tenant == submission.tenant,
            ReportRow.status != ReportStatus.RETRACTED.value,
        )
        .limit(1)
    ).scalar_one_or_none()
    return found


def _not_queued(
    session: Session, submission: SubmissionRow, matched: Sequence[str], reason: str
) -> None:
    _log.error("auto-report of submission %s NOT queued: %s", submission.id, reason)
    audit.append(
        session,
        actor=ACTOR,
        action="report.not_queued",
        target=("submission", submission.id),
        details={"reason": reason, "matched": list(matched)},
        tenant=submission.tenant,
    )


def queue_at_match(
    session: Session,
    policy: AutoReportPolicy,
    vault: Vault | None,
    submission: SubmissionRow,
    matched: Sequence[str],
) -> str | None:
    """Queue the report of ``submission`` (whose matches the policy covers) in the
    caller's transaction, from the media kept for it; returns the report id (the
    existing one when the submission already has its auto-report), or None when it
    could not be queued (audited as ``report.not_queued``, nothing of the report kept).
    """
    existing = existing_report(session, f"auto:{submission.id}")
    if existing is not None:
        return existing.id
    if vault is None:
        _not_queued(session, submission, matched, "no media: the item's bytes were not given")
        return None
    evidence = VaultEvidence(vault, actor=DELIVERY_PRINCIPAL)
    media = evidence.media_of(session, submission.tenant, submission.id)
    if not media:
        _not_queued(session, submission, matched, "no media kept in the evidence vault")
        return None
    same = _same_file_reported(session, submission, [m.evidence_id for m in media])
    if same is not None:
        audit.append(
            session,
            actor=ACTOR,
            action="report.already_reported",
            target=("submission", submission.id),
            details={"report_id": same, "content_id": submission.content_id},
            tenant=submission.tenant,
        )
        return same
    settings = policy.settings
    try:
        reporter = reporter_from_settings(settings)
        with session.begin_nested():  # a refused fact drops the report, not the match
            row = queue_submission_report(
                session,
                submission,
                media,
                ReviewFacts(),  # not viewed, not classified by a person
                kind=ReportKind.AUTO,
                source=f"auto:{submission.id}",
                actor=ACTOR,
                reporter=reporter,
                settings=settings,
                evidence=evidence,
                additional_info="Reported without human review at upload on an exact match "
                "of " + ", ".join(matched) + ", entries a trusted source confirmed; no "
                "person at the platform viewed the file.",
            )
    except TiplineError as exc:
        _not_queued(session, submission, matched, exc.message)
        return None
    return row.id
