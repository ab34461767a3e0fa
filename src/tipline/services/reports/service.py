"""Report use cases: queue a built report for delivery, list, show, download, retract,
retry. Each CLI command and API route calls one function here."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.config import Settings
from tipline.errors import ConfigError, ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal, Role, can_see_tenant, tenant_clause
from tipline.services.database import open_database
from tipline.services.jobs import Backoff
from tipline.services.reports import builder, bundling, delivery_job
from tipline.services.reports.client import IspwsClient
from tipline.services.reports.evidence import EvidenceFiles, StoredFile
from tipline.services.reports.facts import ReviewFacts, account_from_json, review_facts_from_json
from tipline.services.reports.model import (
    IncidentType,
    IpCapture,
    IpEvent,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
    file_to_json,
)
from tipline.services.reports.outbox import (
    Deliverer,
    DeliveryPolicy,
    DeliveryStats,
    ReportStatus,
    Step,
    StepHook,
    outbox_size,
)
from tipline.services.reports.policy import covered
from tipline.services.vault import Vault
from tipline.services.vault.evidence import VaultEvidence
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.report_bundles import ReportBundleRow
from tipline.store.reports import (
    OperatorItemRow,
    ReportEventRow,
    ReportFileRow,
    ReportOutboxRow,
    ReportRow,
)
from tipline.store.submissions import DecisionKind, DecisionRow, MatchRecordRow, SubmissionRow


class ReportingNotConfiguredError(ConfigError):
    """A setting reporting needs is missing (the API answers 503: the service, not the
    request, must change)."""

    status = 503
    code = "reports-not-configured"


class ReportKind(enum.Enum):
    """Why a report exists."""

    REVIEW = "review"  # a reviewer confirmed the match
    AUTO = "auto"  # auto-report policy: exact match of a trusted, confirmed entry
    BUNDLE = "bundle"  # viral bundle of one perceptual cluster


@dataclass(frozen=True, slots=True)
class FileDigests:
    """MD5 and SHA-1 (hex) and size (bytes) of a file as uploaded."""

    md5: str
    sha1: str
    size: int


def digests(data: bytes) -> FileDigests:
    """The hashes a report carries for ``data``."""
    return FileDigests(
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        size=len(data),
    )


_HEX = frozenset("0123456789abcdef")


def recorded_digests(submission: SubmissionRow, stored: StoredFile) -> FileDigests | None:
    """MD5 and SHA-1 of ``stored``'s bytes without reading them: the digests the matcher
    recorded with the submission (its ``md5``, ``sha1`` and ``sha256`` signals), used
    only when their SHA-256 is the one the evidence store recorded for these bytes (so
    they are digests of the same bytes); None otherwise (read the bytes and hash them)."""
    if stored.sha256 is None:
        return None
    values: dict[str, str] = {}
    for signal in submission.signals or ():
        if isinstance(signal, dict) and isinstance(signal.get("value"), str):
            values.setdefault(str(signal.get("type")), str(signal["value"]).lower())
    if values.get("sha256") != stored.sha256.lower():
        return None
    md5, sha1 = values.get("md5", ""), values.get("sha1", "")
    if len(md5) != 32 or len(sha1) != 40 or not set(md5 + sha1) <= _HEX:
        return None
    return FileDigests(md5=md5, sha1=sha1, size=stored.size)


def new_report_id() -> str:
    """A new report id (ULID)."""
    return str(ULID())


def queue_report(
    session: Session,
    content: ReportContent,
    evidence_ids: Sequence[str],
    *,
    kind: ReportKind,
    source: str,
    tenant: str | None,
    actor: str | Principal,
    evidence: EvidenceFiles,
) -> ReportRow:
    """Build and validate ``content``'s XML, store the report with its files and queue
    its delivery, all in the caller's transaction (audited as ``report.create``); the XML
    is also preserved in ``evidence``.

    ``evidence_ids[i]`` names the stored bytes of ``content.files[i]``, whose MD5 and
    SHA-1 the caller computed from those bytes.
    """
    if len(evidence_ids) != len(content.files):
        raise InputError("one evidence id per report file is needed")
    xml = builder.build_report(content)
    report, children = report_rows(
        content, xml, evidence_ids, kind=kind, source=source, tenant=tenant, actor=actor
    )
    session.add(report)
    session.flush()
    session.add_all(children)
    session.flush()
    evidence.keep_report_xml(session, tenant, report.id, xml)
    delivery_job.enqueue_delivery(session)  # a job per report, due once this commits
    # appended at commit with the media read and the XML's vault record: the audit
    # chain's head is locked for the commit only, not for the rest of the transaction
    defer_created(session, report, content, actor=actor)
    return report


def report_rows(
    content: ReportContent,
    xml: bytes,
    evidence_ids: Sequence[str],
    *,
    kind: ReportKind,
    source: str,
    tenant: str | None,
    actor: str | Principal,
) -> tuple[ReportRow, list[ReportFileRow | ReportOutboxRow]]:
    """The rows of a new queued report (built ``xml``): the report, then its files and
    its outbox row (added after the report is flushed)."""
    now = utcnow()
    report = ReportRow(
        id=content.report_id,
        tenant=tenant,
        kind=kind.value,
        status=ReportStatus.QUEUED.value,
        source=source[:128],
        xml=xml.decode("utf-8"),
        xml_sha256=hashlib.sha256(xml).hexdigest(),
        remote_id=None,
        orphans=0,
        created_at=now,
        created_by=actor.key_id if isinstance(actor, Principal) else actor,
    )
    children: list[ReportFileRow | ReportOutboxRow] = []
    for seq, (file, evidence_id) in enumerate(zip(content.files, evidence_ids, strict=True)):
        _check_file(file)
        children.append(
            ReportFileRow(
                report_id=report.id,
                seq=seq,
                submission_id=file.submission_id,
                evidence_id=evidence_id,
                file_name=file.file_name,
                size=file.size,
                md5=file.md5,
                sha1=file.sha1,
                details=file_to_json(file),
                remote_file_id=None,
                described=False,
            )
        )
    children.append(
        ReportOutboxRow(
            report_id=report.id,
            tenant=tenant,
            step=Step.SUBMIT.value,
            file_seq=0,
            inflight=False,
            final_retract=False,
            attempts=0,
            next_at=now,
        )
    )
    return report, children


def defer_created(
    session: Session,
    report: ReportRow,
    content: ReportContent,
    *,
    actor: str | Principal,
    extra: dict[str, Any] | None = None,
) -> None:
    """Audit ``report.create`` at the commit of the caller's transaction (``extra``:
    further details, e.g. a held bundle's ``held_until``)."""
    audit.defer(
        session,
        actor=actor,
        action="report.create",
        target=("report", report.id),
        details={
            "kind": report.kind,
            "source": report.source,
            "files": len(content.files),
            "xml_sha256": report.xml_sha256,
            "viewed": [f.viewed_by_esp for f in content.files],
            **(extra or {}),
        },
        tenant=report.tenant,
    )


def _check_file(file: ReportedFile) -> None:
    if len(file.md5) != 32 or len(file.sha1) != 40:
        raise InputError(f"{file.file_name}: MD5/SHA-1 must be 32/40 hex digits")


# -- reports from decisions and from the auto-report policy ---------------------------

#: signal types whose matches are exact (a digest of the bytes)


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """A report as listed: delivery state and the receiver's id once known."""

    id: str
    tenant: str | None
    kind: str
    status: str
    source: str
    remote_id: int | None
    orphans: int
    files: int
    created_at: datetime
    finished_at: datetime | None
    retracted_at: datetime | None
    last_error: str | None
    #: next delivery step (None when no delivery work is left; ``held`` while a
    #: match-time bundle collects uploads, until ``next_attempt_at``)
    step: str | None
    attempts: int
    next_attempt_at: datetime | None
    #: while held: the uploads and distinct accounts collected so far (its document is
    #: built at release; None otherwise)
    held_uploads: int | None = None
    held_accounts: int | None = None


@dataclass(frozen=True, slots=True)
class ReportDetail:
    """One report with its files, step log and operator-queue items."""

    summary: ReportSummary
    files: list[dict[str, Any]]
    events: list[dict[str, Any]]
    operator_items: list[dict[str, Any]]


def reporter_from_settings(settings: Settings) -> Reporter:
    """The ``reporter`` block; ConfigError when the reporting email is not set."""
    if not settings.report_reporter_email:
        raise ReportingNotConfiguredError(
            "set TIPLINE_REPORT_REPORTER_EMAIL (the reporting person's email)"
        )
    return Reporter(
        email=settings.report_reporter_email,
        first_name=settings.report_reporter_first_name,
        last_name=settings.report_reporter_last_name,
        phone=settings.report_reporter_phone,
        company_template=settings.report_company_template,
        terms_of_service=settings.report_terms_of_service,
        legal_url=settings.report_legal_url,
    )


def upload_event(submission: SubmissionRow) -> IpCapture | None:
    """The upload's IP capture event (address, time, source port)."""
    if not submission.upload_ip:
        return None
    return IpCapture(
        ip=submission.upload_ip,
        event=IpEvent.UPLOAD,
        at=submission.uploaded_at,
        port=submission.upload_port,
    )


def user_of(submission: SubmissionRow, settings: Settings) -> ReportedUser:
    """``personOrUserReported`` from a submission's uploader facts."""
    account = account_from_json(submission.account)
    events = list(account.ip_events)
    upload = upload_event(submission)
    if upload is not None and upload not in events:
        events.append(upload)
    return ReportedUser(
        esp_identifier=submission.uploader_account,
        esp_service=settings.report_platform,
        screen_name=submission.uploader_screen_name,
        display_names=account.display_names,
        profile_urls=(submission.uploader_profile_url,) if submission.uploader_profile_url else (),
        emails=account.emails,
        ip_events=tuple(events),
        devices=account.devices,
        temporarily_disabled_at=account.temporarily_disabled_at,
        reenabled_at=account.reenabled_at,
        permanently_disabled_at=account.permanently_disabled_at,
        location=account.location,
    )


def _perceptual(submission: SubmissionRow) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(s["type"]).upper(), str(s["value"]))
        for s in submission.signals
        if s.get("type") == "pdq" and isinstance(s.get("value"), str)
    )


def file_of(
    submission: SubmissionRow,
    stored: StoredFile,
    data: bytes | FileDigests,
    facts: ReviewFacts,
    *,
    potential_meme: bool | None = None,
) -> ReportedFile:
    """One ``fileDetails`` from a submission, its stored bytes (or their digests) and
    the review facts."""
    d = data if isinstance(data, FileDigests) else digests(data)
    url = submission.meta.get("url") if isinstance(submission.meta, dict) else None
    return ReportedFile(
        file_name=submission.file_name or stored.file_name or submission.content_id,
        md5=d.md5,
        sha1=d.sha1,
        size=d.size,
        viewed_by_esp=facts.viewed,
        exif_viewed_by_esp=facts.exif_viewed,
        uploaded_at=submission.uploaded_at,
        upload_ip=upload_event(submission),
        potential_meme=facts.potential_meme if potential_meme is None else potential_meme,
        annotations=facts.file_annotations,
        classification=facts.classification,
        location=url if isinstance(url, str) else None,
        hashes=_perceptual(submission),
        submission_id=submission.id,
    )


def _match_summary(session: Session, submission_id: str) -> str | None:
    rows = session.execute(
        select(
            MatchRecordRow.bank,
            MatchRecordRow.entry_id,
            MatchRecordRow.signal_type,
            MatchRecordRow.distance,
        )
        .where(MatchRecordRow.submission_id == submission_id)
        .order_by(MatchRecordRow.id)
        .limit(20)
    ).all()
    if not rows:
        return None
    parts = [f"bank {b!r} entry {e} ({t}, distance {d})" for b, e, t, d in rows]
    return "Matched " + "; ".join(parts) + "."


def existing_report(session: Session, source: str) -> ReportRow | None:
    """The report made for ``source`` (``decision:<id>``, ``auto:<submission id>``...)."""
    return session.scalars(select(ReportRow).where(ReportRow.source == source)).first()


def _reported_in(session: Session, submission_id: str) -> ReportRow | None:
    """A report (not retracted) that already carries the submission's file."""
    return session.scalars(
        select(ReportRow)
        .join(ReportFileRow, ReportFileRow.report_id == ReportRow.id)
        .where(
            ReportFileRow.submission_id == submission_id,
            ReportRow.status != ReportStatus.RETRACTED.value,
        )
        .limit(1)
    ).first()


def _media(
    session: Session, evidence: EvidenceFiles, submission: SubmissionRow
) -> list[StoredFile]:
    media = evidence.media_of(session, submission.tenant, submission.id)
    if not media:
        raise InputError(
            f"submission {submission.id} has no stored media: there is no file to report"
        )
    return media


def create_from_decision(
    sessions: sessionmaker[Session],
    who: Principal,
    decision_id: str,
    *,
    settings: Settings,
    evidence: EvidenceFiles | None = None,
) -> ReportSummary:
    """Build and queue the report of a confirmed decision (one report per decision:
    asking again returns the report already made). Files are reported as viewed only
    when the decision says the reviewer viewed them."""
    who.require(Permission.REPORT)
    evidence = evidence or evidence_from_settings(sessions, settings)
    source = f"decision:{decision_id}"
    with transaction(sessions) as session:
        decision = session.get(DecisionRow, decision_id)
        if decision is None or not can_see_tenant(who, decision.tenant, write=True):
            raise NotFoundError(f"no decision {decision_id!r}")
        if decision.decision != DecisionKind.CONFIRMED.value:
            raise ConflictError(
                f"decision {decision_id} is {decision.decision!r}; only a confirmed one is reported"
            )
        existing = existing_report(session, source)
        if existing is not None:
            return _summary(session, existing)
        submission = session.get(SubmissionRow, decision.submission_id)
        if submission is None or submission.tenant != decision.tenant:
            raise NotFoundError(f"no submission {decision.submission_id!r}")
        other = _reported_in(session, submission.id)
        if other is not None:
            raise ConflictError(
                f"submission {submission.id} is already in report {other.id} ({other.kind}); "
                "a file is reported once"
            )
        facts = review_facts_from_json(decision.facts)
        media = _media(session, evidence, submission)
        reporter = reporter_from_settings(settings)
    with transaction(sessions) as session:
        existing = existing_report(session, source)
        if existing is not None:
            return _summary(session, existing)
        row = queue_submission_report(
            session,
            submission,
            media,
            facts,
            kind=ReportKind.REVIEW,
            source=source,
            actor=who,
            reporter=reporter,
            settings=settings,
            evidence=evidence,
            additional_info=_match_summary(session, submission.id),
        )
        return _summary(session, row)


def queue_submission_report(
    session: Session,
    submission: SubmissionRow,
    media: list[StoredFile],
    facts: ReviewFacts,
    *,
    kind: ReportKind,
    source: str,
    actor: Principal | str,
    reporter: Reporter,
    settings: Settings,
    evidence: EvidenceFiles,
    additional_info: str | None,
) -> ReportRow:
    """Build and queue the report of one submission's files, as ``facts`` describe them
    (the reviewer's, or :class:`ReviewFacts` defaults for a file nobody viewed)."""
    # the bytes are read (and the read audited) only when their digests are not known
    datas = [
        recorded_digests(submission, m) or evidence.read(session, m.evidence_id) for m in media
    ]
    files = tuple(file_of(submission, m, d, facts) for m, d in zip(media, datas, strict=True))
    content = ReportContent(
        report_id=new_report_id(),
        incident_type=facts.incident_type,
        incident_at=submission.uploaded_at or submission.created_at,
        reporter=reporter,
        files=files,
        users=(user_of(submission, settings),),
        platform=settings.report_platform,
        escalation_reason=facts.escalation_reason,
        annotations=facts.report_annotations,
        urls=tuple(f.location for f in files if f.location),
        additional_info=additional_info,
    )
    return queue_report(
        session,
        content,
        [m.evidence_id for m in media],
        kind=kind,
        source=source,
        tenant=submission.tenant,
        actor=actor,
        evidence=evidence,
    )


def auto_report_matches(session: Session, submission_id: str, settings: Settings) -> list[str]:
    """The auto-report policy: ``bank/entry`` of this submission's recorded matches
    (distance 0) that their bank's policy reports (:mod:`tipline.banks.auto_report`;
    ``default``: exact digest matches in a bank listed in ``report_auto_banks``)."""
    rows = session.execute(
        select(
            MatchRecordRow.bank,
            MatchRecordRow.entry_id,
            MatchRecordRow.signal_type,
            MatchRecordRow.distance,
            MatchRecordRow.variant,
        ).where(
            MatchRecordRow.submission_id == submission_id,
            MatchRecordRow.distance == 0,
        )
    ).all()
    return covered(
        session,
        settings,
        ((bank, entry, kind, dist, variant, None) for bank, entry, kind, dist, variant in rows),
    )


def auto_report(
    sessions: sessionmaker[Session],
    submission_id: str,
    *,
    settings: Settings,
    evidence: EvidenceFiles | None = None,
    actor: str = "auto-report",
) -> ReportSummary | None:
    """Report a submission without review when the auto-report policy covers it (None
    otherwise). Nobody viewed the file, and the report says so (``fileViewedByEsp``
    false): an exact match of a confirmed entry is not a view."""
    reporter = reporter_from_settings(settings)
    evidence = evidence or evidence_from_settings(sessions, settings)
    source = f"auto:{submission_id}"
    with transaction(sessions) as session:
        submission = session.get(SubmissionRow, submission_id)
        if submission is None:
            raise NotFoundError(f"no submission {submission_id!r}")
        existing = existing_report(session, source) or _reported_in(session, submission_id)
        if existing is not None:  # its own report, or a bundle it joined
            return _summary(session, existing)
        matched = auto_report_matches(session, submission_id, settings)
        if not matched:
            return None
        media = _media(session, evidence, submission)
    facts = ReviewFacts()  # not viewed, not classified by a person
    with transaction(sessions) as session:
        existing = existing_report(session, source)
        if existing is not None:
            return _summary(session, existing)
        row = queue_submission_report(
            session,
            submission,
            media,
            facts,
            kind=ReportKind.AUTO,
            source=source,
            actor=actor,
            reporter=reporter,
            settings=settings,
            evidence=evidence,
            additional_info="Reported without human review on an exact match of "
            + ", ".join(matched)
            + ", entries a trusted source confirmed; no person at the platform viewed "
            "the file.",
        )
        return _summary(session, row)


# -- reading, retracting, retrying -----------------------------------------------------


def _held(
    session: Session, row: ReportRow, outbox: ReportOutboxRow | None
) -> ReportBundleRow | None:
    """The bundle of ``row`` while it is held to collect its cluster's uploads
    (services/reports/viral.py): no final document yet, nothing to deliver."""
    if outbox is not None or row.status != ReportStatus.QUEUED.value:
        return None
    bundle = session.get(ReportBundleRow, row.id)
    return bundle if bundle is not None and bundle.released_at is None else None


def _held_counts(session: Session, report_id: str) -> tuple[int, int]:
    """Distinct uploads and uploader accounts in a held bundle."""
    uploads, accounts = session.execute(
        select(
            func.count(func.distinct(ReportFileRow.submission_id)),
            func.count(func.distinct(SubmissionRow.uploader_account)),
        )
        .select_from(ReportFileRow)
        .join(SubmissionRow, SubmissionRow.id == ReportFileRow.submission_id)
        .where(ReportFileRow.report_id == report_id)
    ).one()
    return int(uploads), int(accounts)


def _summary(session: Session, row: ReportRow) -> ReportSummary:
    outbox = session.get(ReportOutboxRow, row.id)
    files = session.execute(
        select(func.count()).where(ReportFileRow.report_id == row.id)
    ).scalar_one()
    held = _held(session, row, outbox)
    uploads: int | None = None
    accounts: int | None = None
    if held is not None:
        step: str | None = "held"
        next_at: datetime | None = held.hold_until
        uploads, accounts = _held_counts(session, row.id)
    else:
        step = outbox.step if outbox else None
        next_at = outbox.next_at if outbox else None
    return ReportSummary(
        id=row.id,
        tenant=row.tenant,
        kind=row.kind,
        status=row.status,
        source=row.source,
        remote_id=row.remote_id,
        orphans=row.orphans,
        files=int(files),
        created_at=row.created_at,
        finished_at=row.finished_at,
        retracted_at=row.retracted_at,
        last_error=row.last_error,
        step=step,
        attempts=outbox.attempts if outbox else 0,
        next_attempt_at=next_at,
        held_uploads=uploads,
        held_accounts=accounts,
    )


def _visible(session: Session, who: Principal, report_id: str, *, write: bool) -> ReportRow:
    row = session.get(ReportRow, report_id) if len(report_id) <= 26 else None
    if row is None or not can_see_tenant(who, row.tenant, write=True):
        raise NotFoundError(f"no report {report_id!r}")
    return row


def list_reports(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    status: ReportStatus | None = None,
    before: str | None = None,
    limit: int = 100,
) -> list[ReportSummary]:
    """Reports visible to ``who``, newest first (``before``: id cursor, exclusive)."""
    who.require(Permission.REPORT)
    if not 1 <= limit <= 1000:
        raise InputError("limit must be between 1 and 1000")
    query = select(ReportRow).where(tenant_clause(who, ReportRow.tenant, include_shared=False))
    if status is not None:
        query = query.where(ReportRow.status == status.value)
    if before is not None:
        query = query.where(ReportRow.id < before)
    with sessions() as session:
        rows = session.scalars(query.order_by(ReportRow.id.desc()).limit(limit)).all()
        return [_summary(session, row) for row in rows]


def get_report(sessions: sessionmaker[Session], who: Principal, report_id: str) -> ReportDetail:
    """One report with its files, step log and operator-queue items."""
    who.require(Permission.REPORT)
    with sessions() as session:
        row = _visible(session, who, report_id, write=False)
        files = session.scalars(
            select(ReportFileRow)
            .where(ReportFileRow.report_id == row.id)
            .order_by(ReportFileRow.seq)
        ).all()
        events = session.scalars(
            select(ReportEventRow)
            .where(ReportEventRow.report_id == row.id)
            .order_by(ReportEventRow.id)
        ).all()
        items = session.scalars(
            select(OperatorItemRow)
            .where(OperatorItemRow.report_id == row.id)
            .order_by(OperatorItemRow.id)
        ).all()
        return ReportDetail(
            summary=_summary(session, row),
            files=[
                {
                    "seq": f.seq,
                    "submission_id": f.submission_id,
                    "evidence_id": f.evidence_id,
                    "file_name": f.file_name,
                    "size": f.size,
                    "md5": f.md5,
                    "sha1": f.sha1,
                    "viewed_by_esp": f.details.get("viewed_by_esp") is True,
                    "remote_file_id": f.remote_file_id,
                    "described": f.described,
                }
                for f in files
            ],
            events=[
                {"at": e.at.isoformat(), "step": e.step, "phase": e.phase, "detail": e.detail}
                for e in events
            ],
            operator_items=[
                {
                    "id": i.id,
                    "step": i.step,
                    "file_seq": i.file_seq,
                    "response_code": i.response_code,
                    "message": i.message,
                    "created_at": i.created_at.isoformat(),
                    "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
                }
                for i in items
            ],
        )


def report_xml(sessions: sessionmaker[Session], who: Principal, report_id: str) -> bytes:
    """The report document exactly as built and submitted (audited as ``report.download``).

    ConflictError while the report is a held viral bundle: it has no final document
    until its release builds one from every upload it collected (the refusal is
    audited as ``report.download_refused``)."""
    who.require(Permission.REPORT)
    with transaction(sessions) as session:
        row = _visible(session, who, report_id, write=False)
        held = _held(session, row, session.get(ReportOutboxRow, row.id))
        if held is None:
            audit.append(
                session,
                actor=who,
                action="report.download",
                target=("report", row.id),
                details={"xml_sha256": row.xml_sha256},
                tenant=row.tenant,
            )
            return row.xml.encode("utf-8")
        uploads, accounts = _held_counts(session, row.id)
        refusal = (
            f"report {row.id} is a viral bundle held until "
            f"{held.hold_until.isoformat(timespec='seconds')} to collect its cluster's "
            f"uploads ({uploads} upload(s) by {accounts} account(s) so far); its document "
            "is built, validated and preserved at release: download it then"
        )
        audit.append(
            session,
            actor=who,
            action="report.download_refused",
            target=("report", row.id),
            details={"reason": "held", "held_until": held.hold_until.isoformat()},
            tenant=row.tenant,
        )
    raise ConflictError(refusal)


def retract(sessions: sessionmaker[Session], who: Principal, report_id: str) -> ReportSummary:
    """Withdraw an unfinished report: at once when nothing was sent, else through the
    outbox (``retract`` on the receiver); ConflictError once it is finished."""
    who.require(Permission.REPORT)
    with transaction(sessions) as session:
        row = _visible(session, who, report_id, write=True)
        if row.status == ReportStatus.FINISHED.value:
            raise ConflictError(
                f"report {report_id} is finished; a finished report cannot be retracted"
            )
        if row.status == ReportStatus.RETRACTED.value:
            return _summary(session, row)
        outbox = session.get(ReportOutboxRow, report_id)
        if outbox is not None and outbox.inflight:
            raise ConflictError(f"report {report_id} has a call in flight; try again shortly")
        now = utcnow()
        if row.remote_id is None:
            # nothing exists on the receiver (orphans excepted, which we cannot name)
            if outbox is not None:
                session.delete(outbox)
            row.status = ReportStatus.RETRACTED.value
            row.retracted_at = now
        else:
            if outbox is None:
                outbox = ReportOutboxRow(
                    report_id=row.id, tenant=row.tenant, file_seq=0, inflight=False, attempts=0
                )
                session.add(outbox)
            outbox.step = Step.RETRACT.value
            outbox.final_retract = True
            outbox.attempts = 0
            outbox.next_at = now
            outbox.lease_owner = None
            outbox.lease_expires_at = None
            row.status = ReportStatus.DELIVERING.value
            delivery_job.enqueue_delivery(session)
        _resolve_operator_items(session, row.id, who)
        session.flush()
        audit.append(
            session,
            actor=who,
            action="report.retract_requested",
            target=("report", row.id),
            details={"remote_id": row.remote_id},
            tenant=row.tenant,
        )
        return _summary(session, row)


def _resolve_operator_items(
    session: Session, report_id: str, who: Principal
) -> list[OperatorItemRow]:
    items = list(
        session.scalars(
            select(OperatorItemRow)
            .where(OperatorItemRow.report_id == report_id, OperatorItemRow.resolved_at.is_(None))
            .order_by(OperatorItemRow.id)
        )
    )
    for item in items:
        item.resolved_at = utcnow()
        item.resolved_by = who.key_id
    return items


def retry(sessions: sessionmaker[Session], who: Principal, report_id: str) -> ReportSummary:
    """Put a failed report back in the outbox at the step that failed."""
    who.require(Permission.REPORT)
    with transaction(sessions) as session:
        row = _visible(session, who, report_id, write=True)
        if row.status != ReportStatus.FAILED.value:
            raise ConflictError(f"report {report_id} is {row.status}; only a failed one is retried")
        items = _resolve_operator_items(session, row.id, who)
        last = items[-1] if items else None
        step = Step(last.step) if last is not None else Step.SUBMIT
        if row.remote_id is None:
            step = Step.SUBMIT
        session.add(
            ReportOutboxRow(
                report_id=row.id,
                tenant=row.tenant,
                step=step.value,
                file_seq=last.file_seq if last is not None and step is not Step.SUBMIT else 0,
                inflight=False,
                final_retract=False,
                attempts=0,
                next_at=utcnow(),
            )
        )
        row.status = (
            ReportStatus.QUEUED.value if row.remote_id is None else ReportStatus.DELIVERING.value
        )
        row.last_error = None
        delivery_job.enqueue_delivery(session)
        session.flush()
        audit.append(
            session,
            actor=who,
            action="report.retry",
            target=("report", row.id),
            details={"step": step.value},
            tenant=row.tenant,
        )
        return _summary(session, row)


def operator_queue(
    sessions: sessionmaker[Session], who: Principal, *, limit: int = 100
) -> list[dict[str, Any]]:
    """Unresolved operator-queue items visible to ``who``, oldest first."""
    who.require(Permission.REPORT)
    with sessions() as session:
        items = session.scalars(
            select(OperatorItemRow)
            .where(
                OperatorItemRow.resolved_at.is_(None),
                tenant_clause(who, OperatorItemRow.tenant, include_shared=False),
            )
            .order_by(OperatorItemRow.id)
            .limit(limit)
        ).all()
        return [
            {
                "id": i.id,
                "report_id": i.report_id,
                "step": i.step,
                "response_code": i.response_code,
                "message": i.message,
                "created_at": i.created_at.isoformat(),
            }
            for i in items
        ]


# -- delivery ---------------------------------------------------------------------------


def client_from_settings(settings: Settings, *, transport: Any = None) -> IspwsClient:
    """The ISPWS client for the configured endpoint and account."""
    if not settings.report_ispws_url:
        raise ReportingNotConfiguredError("set TIPLINE_REPORT_ISPWS_URL to deliver reports")
    if not settings.report_ispws_username or settings.report_ispws_password is None:
        raise ReportingNotConfiguredError(
            "set TIPLINE_REPORT_ISPWS_USERNAME and TIPLINE_REPORT_ISPWS_PASSWORD to deliver"
        )
    return IspwsClient(
        settings.report_ispws_url,
        settings.report_ispws_username,
        settings.report_ispws_password.get_secret_value(),
        timeout=settings.report_timeout_seconds,
        transport=transport,
    )


def receiver_status(settings: Settings, *, transport: Any = None) -> str:
    """``GET /status`` of the configured endpoint: its description when the service is
    up and the account accepted (IspwsError otherwise)."""
    client = client_from_settings(settings, transport=transport)
    try:
        answer = client.status()
    finally:
        client.close()
    return f"{client.base_url}: {answer.response_code} {answer.description}"


def policy_from_settings(settings: Settings) -> DeliveryPolicy:
    """Retry rules from settings (the lease outlives the longest call)."""
    return DeliveryPolicy(
        max_attempts=settings.report_max_attempts,
        backoff=Backoff(
            base=settings.report_retry_base_seconds, maximum=settings.report_retry_max_seconds
        ),
        lease_seconds=max(60.0, 4 * settings.report_timeout_seconds),
    )


def deliver(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    evidence: EvidenceFiles | None = None,
    workers: int = 1,
    on_step: StepHook | None = None,
    transport: Any = None,
    wait_for_retries: bool = True,
) -> DeliveryStats:
    """Deliver every queued report until the outbox is empty (failures go to the
    operator queue); without ``wait_for_retries``, until nothing is due now. Held viral
    bundles are not released here: :func:`tipline.services.reports.sending.deliver_due`
    (``tipline report deliver``) releases the due ones first, and the ``report.release``
    job releases them in a running ``tipline worker``."""
    client = client_from_settings(settings, transport=transport)
    evidence = evidence or evidence_from_settings(sessions, settings)
    try:
        deliverer = Deliverer(
            sessions, client, evidence, policy=policy_from_settings(settings), on_step=on_step
        )
        return deliverer.run(workers=workers, wait_for_retries=wait_for_retries)
    finally:
        client.close()


def delivery_job_handler(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    in_flight: int = delivery_job.DEFAULT_IN_FLIGHT,
    budget_seconds: float = 20.0,
    transport: Any = None,
) -> delivery_job.DeliveryJob:
    """The ``report.deliver`` job handler for ``tipline worker``
    (ReportingNotConfiguredError without an ISPWS endpoint and account in settings)."""
    return delivery_job.DeliveryJob(
        sessions,
        client_from_settings(settings, transport=transport),
        evidence_from_settings(sessions, settings),
        policy_from_settings(settings),
        in_flight=in_flight,
        budget_seconds=budget_seconds,
    )


def pending_deliveries(sessions: sessionmaker[Session]) -> int:
    """Reports with delivery work left, held bundles due for release included (for
    progress bars)."""
    with sessions() as session:
        due = session.execute(
            select(func.count())
            .select_from(ReportBundleRow)
            .join(ReportRow, ReportRow.id == ReportBundleRow.report_id)
            .where(
                ReportBundleRow.released_at.is_(None),
                ReportBundleRow.hold_until <= utcnow(),
                ReportRow.status == ReportStatus.QUEUED.value,
            )
        ).scalar_one()
        return outbox_size(session) + int(due)


# -- wiring for the adapters ----------------------------------------------------------

#: the principal that reads evidence to deliver reports (reads are audited under it)
DELIVERY_PRINCIPAL = Principal(key_id="report-delivery", role=Role.ADMIN, tenant=None)


def evidence_from_settings(sessions: sessionmaker[Session], settings: Settings) -> VaultEvidence:
    """The evidence vault of ``settings`` as the reports' file store."""
    return VaultEvidence(Vault.from_settings(settings), actor=DELIVERY_PRINCIPAL)


@contextmanager
def reports_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, migrated (for the command line)."""
    db = open_database(settings=settings)
    try:
        yield db.sessions
    finally:
        db.close()


# -- viral bundling ----------------------------------------------------------------------


def _pdq_bytes(submission: SubmissionRow) -> bytes | None:
    for signal in submission.signals:
        value = signal.get("value")
        if signal.get("type") == "pdq" and isinstance(value, str) and len(value) == 64:
            try:
                return bytes.fromhex(value)
            except ValueError:
                return None
    return None


def auto_report_many(
    sessions: sessionmaker[Session],
    submission_ids: Sequence[str],
    *,
    settings: Settings,
    evidence: EvidenceFiles | None = None,
    actor: str = "auto-report",
) -> list[ReportSummary]:
    """Apply the auto-report policy to many submissions, bundling viral ones.

    Uploads of one perceptual cluster by at least ``report_viral_threshold`` distinct
    accounts of one tenant within ``report_viral_window_seconds`` become ONE batched
    report (``VIRAL_POTENTIAL_MEME``, files marked potential memes, NOT viewed) of at
    most ``report_viral_max_files`` files; the others are reported one by one.
    Submissions already in a report are skipped.
    """
    evidence = evidence or evidence_from_settings(sessions, settings)
    by_tenant: dict[str | None, list[bundling.Upload]] = {}
    with sessions() as session:
        reported = set(
            session.scalars(
                select(ReportFileRow.submission_id).where(
                    ReportFileRow.submission_id.in_(list(submission_ids))
                )
            )
        )
        for submission_id in dict.fromkeys(submission_ids):
            submission = session.get(SubmissionRow, submission_id)
            if submission is None:
                raise NotFoundError(f"no submission {submission_id!r}")
            if submission_id in reported or not auto_report_matches(
                session, submission_id, settings
            ):
                continue
            by_tenant.setdefault(submission.tenant, []).append(
                bundling.Upload(
                    key=submission.id,
                    uploader=submission.uploader_account,
                    at=submission.uploaded_at or submission.created_at,
                    pdq=_pdq_bytes(submission),
                    files=max(1, len(evidence.media_of(session, submission.tenant, submission.id))),
                )
            )
    out: list[ReportSummary] = []
    window = timedelta(seconds=settings.report_viral_window_seconds)
    for tenant, uploads in sorted(by_tenant.items(), key=lambda kv: kv[0] or ""):
        plan = bundling.plan(
            uploads,
            window=window,
            threshold=settings.report_viral_threshold,
            max_distance=settings.report_viral_max_distance,
            max_files=settings.report_viral_max_files,
        )
        for bundle in plan.bundles:
            out.append(_bundle_report(sessions, tenant, bundle, settings, evidence, actor))
        for single in plan.singles:
            summary = auto_report(
                sessions, single.key, settings=settings, evidence=evidence, actor=actor
            )
            if summary is not None:
                out.append(summary)
    return out


def _bundle_report(
    sessions: sessionmaker[Session],
    tenant: str | None,
    bundle: list[bundling.Upload],
    settings: Settings,
    evidence: EvidenceFiles,
    actor: str,
) -> ReportSummary:
    reporter = reporter_from_settings(settings)
    source = f"bundle:{bundle[0].key}"
    with sessions() as session:
        existing = existing_report(session, source)
        if existing is not None:
            return _summary(session, existing)
        submissions = [session.get(SubmissionRow, u.key) for u in bundle]
        media = [_media(session, evidence, s) for s in submissions if s is not None]
    rows = [s for s in submissions if s is not None]
    facts = ReviewFacts()  # reported on the policy: nobody viewed these files
    with transaction(sessions) as session:
        existing = existing_report(session, source)
        if existing is not None:
            return _summary(session, existing)
        files: list[ReportedFile] = []
        evidence_ids: list[str] = []
        users: dict[str, ReportedUser] = {}
        for submission, stored in zip(rows, media, strict=True):
            for m in stored:
                data = evidence.read(session, m.evidence_id)
                files.append(file_of(submission, m, data, facts, potential_meme=True))
                evidence_ids.append(m.evidence_id)
            key = submission.uploader_account or f"?{submission.id}"
            users.setdefault(key, user_of(submission, settings))
        first = min(s.uploaded_at or s.created_at for s in rows)
        last = max(s.uploaded_at or s.created_at for s in rows)
        content = ReportContent(
            report_id=new_report_id(),
            incident_type=IncidentType.CHILD_PORNOGRAPHY,
            incident_at=first,
            reporter=reporter,
            files=tuple(files),
            users=tuple(users.values()),
            platform=settings.report_platform,
            batched_viral=True,
            additional_info=(
                f"Viral bundle: {len(rows)} uploads of one perceptual cluster by "
                f"{len(users)} accounts between {builder.xml_datetime(first)} and "
                f"{builder.xml_datetime(last)}, reported without human review on exact "
                "matches of entries a trusted source confirmed; no person at the platform "
                "viewed the files."
            ),
        )
        row = queue_report(
            session,
            content,
            evidence_ids,
            kind=ReportKind.BUNDLE,
            source=source,
            tenant=tenant,
            actor=actor,
            evidence=evidence,
        )
        return _summary(session, row)
