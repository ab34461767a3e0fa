"""The auto-report policy at match time.

When an item's match is one its bank's auto-report policy reports
(:mod:`tipline.banks.auto_report`: by default an exact digest match, MD5, SHA-1,
SHA-256, of an entry in a bank listed in ``report_auto_banks``, banks whose entries a
trusted source confirmed; per bank ``off``, ``exact`` or ``trusted``),
:func:`tipline.services.submissions.record_batch` keeps the item's
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

An auto-report of a picture (a PDQ hash) is bundled with the other uploads of its
perceptual cluster while it is held (``report_viral_hold_seconds``, see
:mod:`tipline.services.reports.viral`); urgent ones (``report_urgent_banks``) and
those without a PDQ hash are queued for delivery at once.
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
from tipline.services.reports import viral
from tipline.services.reports.facts import ReviewFacts
from tipline.services.reports.outbox import ReportStatus
from tipline.services.reports.policy import covered_many
from tipline.services.reports.service import (
    DELIVERY_PRINCIPAL,
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
    """The auto-report policy at match time: each bank's own policy, with the
    settings' ``report_auto_banks`` for banks left at ``default`` (and the reporter,
    platform and vault facts of ``settings``)."""

    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings) -> AutoReportPolicy:
        """The policy of ``settings`` (banks' own policies are read at match time)."""
        return cls(settings)

    def covers(self, session: Session, matches: Sequence[Match]) -> list[str]:
        """``bank/entry`` of the matches the policy reports: not suppressed by an allow
        bank, distance 0, and reported by their bank's policy (read in ``session``)."""
        return self.covers_each(session, [matches])[0]

    def covers_each(self, session: Session, items: Sequence[Sequence[Match]]) -> list[list[str]]:
        """:meth:`covers` for each item of a batch, the banks' policies read once."""
        return covered_many(
            session,
            self.settings,
            [
                [
                    (m.bank, m.entry_id, m.signal_type, m.distance, m.variant, m.tier)
                    for m in matches
                    if m.suppressed_by is None
                ]
                for matches in items
            ],
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
        pdq = viral.bundle_key(settings, submission, matched, files=len(media))
        if pdq is not None:
            viral.lock_tenant(session, submission.tenant)  # held to the match's commit
            with session.begin_nested():  # a refused fact drops the report, not the match
                row = viral.queue_or_join(
                    session,
                    submission,
                    media,
                    matched,
                    pdq=pdq,
                    settings=settings,
                    reporter=reporter,
                    evidence=evidence,
                    actor=ACTOR,
                )
            return row.id
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
