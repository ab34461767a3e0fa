"""Viral bundling at match time: an auto-report of a picture is held open for a short
while to collect the other uploads of its perceptual cluster, so that a meme uploaded
by thousands of accounts becomes a few reports instead of thousands.

How it works (:func:`queue_or_join`, called by
:func:`tipline.services.reports.auto.queue_at_match` in the match's transaction):

* An auto-report is *bundle-able* when the upload has a PDQ hash (a picture) and an
  uploader account (bundles are about different accounts: a scanned folder's files
  have none), ``report_viral_hold_seconds`` is above 0, and none of its auto-reported
  matches is in a bank of ``report_urgent_banks``. Anything else (videos, files
  without a PDQ or an account, urgent banks, hold 0) is queued for delivery at once,
  exactly as before: urgent and non-bundle-able reports are never held.
* A bundle-able upload joins the open bundle of its cluster: a report of the same
  tenant, still held (not yet released to the delivery outbox, so nothing of it was
  ever sent), whose founding upload is within ``report_viral_max_distance`` PDQ bits
  and within ``report_viral_window_seconds`` of this upload. Its file, its uploader
  (``personOrUserReported`` with the upload ``ipCaptureEvent``) and the file's upload
  event are added to that report (audited ``report.bundle_join``). Without an open
  bundle the upload founds one: a report held until ``hold_until`` = now + the hold
  (never longer than the window), audited ``report.create`` with ``held_until``.
* Once the cluster's distinct uploaders within the window (this bundle's and those of
  earlier bundles of the cluster) reach ``report_viral_threshold`` the bundle is
  marked viral (audited ``report.viral``): its document says ``batchedReport
  reason="VIRAL_POTENTIAL_MEME"`` and every file ``potentialMeme``.
* At ``hold_until`` a ``report.release`` job of the job runner (``tipline worker``),
  or the next ``tipline report deliver`` (:func:`sending.deliver_due` releases the
  bundles due first, by the same :func:`release_due`), builds the final document from the
  report's files and uploaders, validates it against NCMEC's schema, preserves it in
  the vault and queues the report for delivery (audited ``report.release``, reason
  ``hold``). Until then the report has no final document: its views say it is held,
  and its XML is not served. A report released is never changed
  again: later uploads of the cluster found a new bundle.
* A bundle holds at most ``report_viral_max_files`` files (the receiver never gets an
  unbounded document): an upload joins only a held bundle with room for all its files,
  and the join that fills a bundle releases it at once, in the match's transaction
  (reason ``full``). The cluster's next upload founds a new bundle. An upload with more
  files than that is never held.

Concurrency: the join-or-found decision and the release take a per-tenant lock (a
transaction-scoped advisory lock on PostgreSQL, the database write lock on SQLite), held
until the match's transaction commits, so two matches at once never found two bundles
of one cluster nor lose a file, and a release never misses a file that joined.

An auto-report therefore waits at most ``report_viral_hold_seconds`` (default 600 s)
after its cluster's first upload, plus the time until a worker runs the release job.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, defer, sessionmaker

from tipline.config import Settings
from tipline.errors import TiplineError
from tipline.services import audit, jobs
from tipline.services.auth import Principal
from tipline.services.reports import builder, delivery_job
from tipline.services.reports.evidence import EvidenceFiles, StoredFile
from tipline.services.reports.facts import ReviewFacts
from tipline.services.reports.model import (
    IncidentType,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
    file_from_json,
    file_to_json,
)
from tipline.services.reports.outbox import ReportStatus, Step
from tipline.services.reports.service import (
    ReportKind,
    defer_created,
    file_of,
    new_report_id,
    recorded_digests,
    report_rows,
    reporter_from_settings,
    upload_event,
    user_of,
)
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import Job
from tipline.store.report_bundles import ReportBundleRow
from tipline.store.reports import ReportFileRow, ReportOutboxRow, ReportRow
from tipline.store.submissions import SubmissionRow

#: the job that releases held bundles whose hold is over
RELEASE_JOB_KIND = "report.release"
#: first key of the PostgreSQL advisory lock (the second is the tenant's hash)
_LOCK_CLASS = 7_302_036
#: who releases held bundles (audit actor)
RELEASER = "report-bundler"
#: ``details`` key of a report file: the auto-reported matches of its upload
_MATCHED = "auto_matched"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class BundleRules:
    """The bundling settings, checked once."""

    hold: timedelta
    window: timedelta
    threshold: int
    max_distance: int
    urgent_banks: frozenset[str]
    #: most files of one bundle
    max_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BundleRules:
        """The rules of ``settings`` (the hold never outlasts the window)."""
        window = timedelta(seconds=settings.report_viral_window_seconds)
        return cls(
            hold=min(timedelta(seconds=settings.report_viral_hold_seconds), window),
            window=window,
            threshold=settings.report_viral_threshold,
            max_distance=settings.report_viral_max_distance,
            urgent_banks=frozenset(settings.report_urgent_banks),
            max_files=settings.report_viral_max_files,
        )


def pdq_of(submission: SubmissionRow) -> str | None:
    """The submission's PDQ hash (64 lowercase hex digits), None without one."""
    for signal in submission.signals or ():
        value = signal.get("value") if isinstance(signal, dict) else None
        if signal.get("type") == "pdq" and isinstance(value, str) and len(value) == 64:
            value = value.lower()
            if set(value) <= _HEX:
                return value
    return None


def bundle_key(
    settings: Settings, submission: SubmissionRow, matched: Sequence[str], *, files: int = 1
) -> str | None:
    """The PDQ hash the auto-report of ``submission`` (``files`` files) is bundled on,
    or None when it is queued at once (hold 0, no uploader account, no PDQ hash, a match
    in an urgent bank, or more files than a bundle holds)."""
    rules = BundleRules.from_settings(settings)
    if rules.hold <= timedelta(0) or not submission.uploader_account:
        return None
    if files > rules.max_files:
        return None
    if any(m.split("/", 1)[0] in rules.urgent_banks for m in matched):
        return None
    return pdq_of(submission)


def lock_tenant(session: Session, tenant: str | None) -> None:
    """Serialize bundling decisions of ``tenant`` until the caller's transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32((tenant or "").encode("utf-8")) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK_CLASS, "b": key})
    else:
        # any write statement takes SQLite's database write lock, held to COMMIT
        session.execute(
            update(ReportBundleRow)
            .where(ReportBundleRow.report_id == "")
            .values(viral=ReportBundleRow.viral),
            execution_options={"synchronize_session": False},
        )


def _distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _when(submission: SubmissionRow) -> datetime:
    return submission.uploaded_at or submission.created_at


def _cluster(
    session: Session, tenant: str | None, pdq: str, at: datetime, rules: BundleRules
) -> list[ReportBundleRow]:
    """Bundles of the tenant (held or released) whose founding upload is within the
    window and the PDQ distance of an upload at ``at`` with ``pdq``; oldest first."""
    rows = session.scalars(
        select(ReportBundleRow)
        .where(
            ReportBundleRow.tenant.is_(None)
            if tenant is None
            else ReportBundleRow.tenant == tenant,
            ReportBundleRow.first_at >= at - rules.window,
            ReportBundleRow.first_at <= at + rules.window,
        )
        .order_by(ReportBundleRow.first_at, ReportBundleRow.report_id)
    ).all()
    return [b for b in rows if _distance(b.pdq, pdq) <= rules.max_distance]


def _uploaders(session: Session, report_ids: Sequence[str]) -> set[str]:
    """Distinct uploaders of the reports' files (reports not retracted; an upload
    without an account counts on its own)."""
    if not report_ids:
        return set()
    rows = session.execute(
        select(SubmissionRow.uploader_account, ReportFileRow.submission_id)
        .join(ReportRow, ReportRow.id == ReportFileRow.report_id)
        .join(SubmissionRow, SubmissionRow.id == ReportFileRow.submission_id)
        .where(
            ReportFileRow.report_id.in_(list(report_ids)),
            ReportRow.status != ReportStatus.RETRACTED.value,
        )
    ).all()
    return {str(account) if account else f"?{sid}" for account, sid in rows}


def _files(
    session: Session,
    submission: SubmissionRow,
    media: list[StoredFile],
    evidence: EvidenceFiles,
) -> list[ReportedFile]:
    """The upload's files (not viewed; the bytes read only when their digests are not
    recorded)."""
    facts = ReviewFacts()
    return [
        file_of(
            submission,
            m,
            recorded_digests(submission, m) or evidence.read(session, m.evidence_id),
            facts,
        )
        for m in media
    ]


def _additional_info(
    matched: Sequence[str], uploads: int, accounts: int, first: datetime, last: datetime
) -> str:
    shown = sorted(set(matched))[:20]
    text_ = (
        "Reported without human review at upload on exact matches of "
        + ", ".join(shown)
        + ", entries a trusted source confirmed; no person at the platform viewed the "
        + ("file." if uploads == 1 else "files.")
    )
    if uploads > 1:
        text_ += (
            f" Bundle: {uploads} uploads of one perceptual cluster by {accounts} accounts "
            f"between {builder.xml_datetime(first)} and {builder.xml_datetime(last)}."
        )
    return text_


def _content(
    report_id: str,
    reporter: Reporter,
    settings: Settings,
    files: Sequence[ReportedFile],
    users: Sequence[ReportedUser],
    *,
    incident_at: datetime,
    viral: bool,
    additional_info: str,
) -> ReportContent:
    return ReportContent(
        report_id=report_id,
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=incident_at,
        reporter=reporter,
        files=tuple(files),
        users=tuple(users),
        platform=settings.report_platform,
        urls=tuple(dict.fromkeys(f.location for f in files if f.location)),
        batched_viral=viral,
        additional_info=additional_info,
    )


def queue_or_join(
    session: Session,
    submission: SubmissionRow,
    media: list[StoredFile],
    matched: Sequence[str],
    *,
    pdq: str,
    settings: Settings,
    reporter: Reporter,
    evidence: EvidenceFiles,
    actor: str | Principal,
) -> ReportRow:
    """Add ``submission``'s auto-report to the open bundle of its cluster, or found a
    held one, in the caller's transaction (see the module docstring); returns the
    report. InputError (nothing written) when the upload's facts fail the schema."""
    rules = BundleRules.from_settings(settings)
    tenant = submission.tenant
    lock_tenant(session, tenant)
    at = _when(submission)
    files = _files(session, submission, media, evidence)
    user = user_of(submission, settings)
    # this upload alone must make a valid document (a refused fact drops its report, not
    # the bundle it would have joined); the whole bundle is validated again at release
    alone = _content(
        new_report_id(),
        reporter,
        settings,
        files,
        [user],
        incident_at=at,
        viral=False,
        additional_info=_additional_info(matched, 1, 1, at, at),
    )
    xml = builder.build_report(alone)  # the document of a bundle this upload founds
    for f in files:  # every file's fileDetails, viral or not, as delivery will send it
        for meme in (False, True):
            builder.build_file_details(replace(f, potential_meme=meme), report_id=1, file_id="1")
    cluster = _cluster(session, tenant, pdq, at, rules)
    # without their documents: a released bundle's is up to report_viral_max_files
    # files long, and every later upload of the cluster in the window reads its row
    reports = {
        r.id: r
        for r in session.scalars(
            select(ReportRow)
            .options(defer(ReportRow.xml))
            .where(ReportRow.id.in_([b.report_id for b in cluster]))
        )
    }
    held = [
        b
        for b in cluster
        if b.released_at is None
        and reports[b.report_id].status == ReportStatus.QUEUED.value
        and session.get(ReportOutboxRow, b.report_id) is None
    ]
    counts = _file_counts(session, [b.report_id for b in held])
    # a bundle with no room for this upload's files stays as it is (the cap is only
    # reached by a join, which releases it at once, or was lowered since it was founded)
    open_ = [b for b in held if counts.get(b.report_id, 0) + len(files) <= rules.max_files]
    if open_:
        bundle = open_[0]
        report = reports[bundle.report_id]
        _join(session, report, bundle, submission, media, files, matched, actor=actor)
        in_bundle = counts.get(bundle.report_id, 0) + len(files)
    else:
        report, bundle = _found(
            session, submission, media, alone, xml, matched,
            pdq=pdq, at=at, rules=rules, actor=actor,
        )  # fmt: skip
        cluster.append(bundle)
        in_bundle = len(files)
    if not bundle.viral:
        accounts = _uploaders(session, [b.report_id for b in cluster])
        if len(accounts) >= rules.threshold:
            bundle.viral = True
            audit.defer(
                session,
                actor=actor,
                action="report.viral",
                target=("report", report.id),
                details={"accounts": len(accounts), "threshold": rules.threshold},
                tenant=tenant,
            )
    session.flush()
    if in_bundle >= rules.max_files:  # full: nothing more may join, nothing to wait for
        _release(session, report.id, settings, evidence, utcnow(), reason="full")
    return report


def _file_counts(session: Session, report_ids: Sequence[str]) -> dict[str, int]:
    """Files of each of the reports."""
    if not report_ids:
        return {}
    rows = session.execute(
        select(ReportFileRow.report_id, func.count())
        .where(ReportFileRow.report_id.in_(list(report_ids)))
        .group_by(ReportFileRow.report_id)
    ).all()
    return {str(report_id): int(n) for report_id, n in rows}


def _join(
    session: Session,
    report: ReportRow,
    bundle: ReportBundleRow,
    submission: SubmissionRow,
    media: Sequence[StoredFile],
    files: Sequence[ReportedFile],
    matched: Sequence[str],
    *,
    actor: str | Principal,
) -> None:
    seq = session.execute(
        select(func.coalesce(func.max(ReportFileRow.seq), -1)).where(
            ReportFileRow.report_id == report.id
        )
    ).scalar_one()
    for n, (file, stored) in enumerate(zip(files, media, strict=True)):
        session.add(_file_row(report.id, int(seq) + 1 + n, file, stored.evidence_id, matched))
    report.kind = ReportKind.BUNDLE.value
    audit.defer(
        session,
        actor=actor,
        action="report.bundle_join",
        target=("report", report.id),
        details={
            "submission_id": submission.id,
            "files": len(files),
            "uploader": submission.uploader_account,
            "held_until": bundle.hold_until.isoformat(),
        },
        tenant=report.tenant,
    )


def _file_row(
    report_id: str, seq: int, file: ReportedFile, evidence_id: str, matched: Sequence[str]
) -> ReportFileRow:
    details = file_to_json(file)
    details[_MATCHED] = sorted(set(matched))
    return ReportFileRow(
        report_id=report_id,
        seq=seq,
        submission_id=file.submission_id,
        evidence_id=evidence_id,
        file_name=file.file_name,
        size=file.size,
        md5=file.md5,
        sha1=file.sha1,
        details=details,
        remote_file_id=None,
        described=False,
    )


def _found(
    session: Session,
    submission: SubmissionRow,
    media: list[StoredFile],
    content: ReportContent,
    xml: bytes,
    matched: Sequence[str],
    *,
    pdq: str,
    at: datetime,
    rules: BundleRules,
    actor: str | Principal,
) -> tuple[ReportRow, ReportBundleRow]:
    report, children = report_rows(
        content,
        xml,
        [m.evidence_id for m in media],
        kind=ReportKind.AUTO,
        source=f"auto:{submission.id}",
        tenant=submission.tenant,
        actor=actor,
    )
    session.add(report)
    session.flush()
    rows = [c for c in children if isinstance(c, ReportFileRow)]  # no outbox row: held
    for row in rows:
        row.details = {**row.details, _MATCHED: sorted(set(matched))}
    session.add_all(rows)
    now = utcnow()
    bundle = ReportBundleRow(
        report_id=report.id,
        tenant=submission.tenant,
        pdq=pdq,
        first_at=at,
        hold_until=now + rules.hold,
        released_at=None,
        viral=False,
    )
    session.add(bundle)
    session.flush()
    jobs.enqueue(
        session,
        RELEASE_JOB_KIND,
        {"report_id": report.id},
        run_at=bundle.hold_until,
        idempotency_key=f"{RELEASE_JOB_KIND}:{report.id}",
    )
    defer_created(
        session, report, content, actor=actor, extra={"held_until": bundle.hold_until.isoformat()}
    )
    return report, bundle


# -- release ----------------------------------------------------------------------------


def release_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    evidence: EvidenceFiles,
    *,
    now: datetime | None = None,
    only: str | None = None,
) -> list[str]:
    """Release every held bundle whose hold is over at ``now`` (``only``: that report
    whatever its hold): build and validate its final document, preserve it, queue the
    report for delivery; one transaction per bundle. Returns the released report ids.
    The one home of the release: the ``report.release`` job and
    :func:`tipline.services.reports.sending.deliver_due` both call it."""
    now = now or utcnow()
    query = select(ReportBundleRow.report_id, ReportBundleRow.tenant).where(
        ReportBundleRow.released_at.is_(None)
    )
    query = (
        query.where(ReportBundleRow.report_id == only)
        if only is not None
        else query.where(ReportBundleRow.hold_until <= now)
    )
    with sessions() as session:
        due = session.execute(
            query.order_by(ReportBundleRow.hold_until, ReportBundleRow.report_id)
        ).all()
    released: list[str] = []
    for report_id, tenant in due:
        with transaction(sessions) as session:
            lock_tenant(session, tenant)
            if _release(session, str(report_id), settings, evidence, now, reason="hold"):
                released.append(str(report_id))
    return released


def _release(
    session: Session,
    report_id: str,
    settings: Settings,
    evidence: EvidenceFiles,
    now: datetime,
    *,
    reason: Literal["hold", "full"],
) -> bool:
    """Release one held bundle in the caller's transaction (the tenant locked): its
    final document built, validated and preserved, its delivery queued. ``reason``:
    its hold is over, or it holds ``report_viral_max_files`` files. False when it was
    released already, retracted, or its document was refused (the report FAILED)."""
    bundle = session.get(ReportBundleRow, report_id, populate_existing=True)
    report = session.get(ReportRow, report_id, populate_existing=True)
    if bundle is None or report is None or bundle.released_at is not None:
        return False
    bundle.released_at = now
    if report.status != ReportStatus.QUEUED.value:  # retracted while held
        return False
    rows = list(
        session.scalars(
            select(ReportFileRow)
            .where(ReportFileRow.report_id == report_id)
            .order_by(ReportFileRow.seq)
        )
    )
    submissions = {
        s.id: s
        for s in session.scalars(
            select(SubmissionRow).where(
                SubmissionRow.id.in_([r.submission_id for r in rows if r.submission_id])
            )
        )
    }
    files: list[ReportedFile] = []
    users: dict[str, ReportedUser] = {}
    matched: set[str] = set()
    for row in rows:
        file = replace(file_from_json(row.details), potential_meme=bundle.viral)
        files.append(file)
        row.details = {**row.details, "potential_meme": bundle.viral}
        found = row.details.get(_MATCHED)
        if isinstance(found, list):
            matched.update(str(m) for m in found)
        submission = submissions.get(row.submission_id or "")
        if submission is not None:
            key = submission.uploader_account or f"?{submission.id}"
            if key not in users:
                users[key] = user_of(submission, settings)
            else:  # the account uploaded again: that upload's event is theirs too
                event = upload_event(submission)
                known = users[key]
                if event is not None and event not in known.ip_events:
                    users[key] = replace(known, ip_events=(*known.ip_events, event))
    times = [_when(s) for s in submissions.values()] or [report.created_at]
    content = _content(
        report.id,
        reporter_from_settings(settings),
        settings,
        files,
        list(users.values()),
        incident_at=min(times),
        viral=bundle.viral,
        additional_info=_additional_info(
            sorted(matched), len(submissions), len(users), min(times), max(times)
        ),
    )
    try:
        xml = builder.build_report(content)
    except TiplineError as exc:  # each upload was valid alone: not expected
        report.status = ReportStatus.FAILED.value
        report.last_error = f"the bundle's document is refused: {exc.message}"[:2000]
        audit.defer(
            session,
            actor=RELEASER,
            action="report.release_failed",
            target=("report", report.id),
            details={"error": report.last_error},
            tenant=report.tenant,
        )
        return False
    report.xml = xml.decode("utf-8")
    report.xml_sha256 = hashlib.sha256(xml).hexdigest()
    session.add(
        ReportOutboxRow(
            report_id=report.id,
            tenant=report.tenant,
            step=Step.SUBMIT.value,
            file_seq=0,
            inflight=False,
            final_retract=False,
            attempts=0,
            next_at=min(now, utcnow()),  # due at once, whatever clock ``now`` came from
        )
    )
    session.flush()
    evidence.keep_report_xml(session, report.tenant, report.id, xml)
    delivery_job.enqueue_delivery(session)
    audit.defer(
        session,
        actor=RELEASER,
        action="report.release",
        target=("report", report.id),
        details={
            "files": len(files),
            "uploads": len(submissions),
            "accounts": len(users),
            "viral": bundle.viral,
            "xml_sha256": report.xml_sha256,
            "reason": reason,
        },
        tenant=report.tenant,
    )
    return True


def next_release_time(session: Session) -> datetime | None:
    """When the next held bundle is due (None when none is held)."""
    at: datetime | None = session.execute(
        select(func.min(ReportBundleRow.hold_until)).where(ReportBundleRow.released_at.is_(None))
    ).scalar()
    return at


def ensure_release_scheduled(sessions: sessionmaker[Session]) -> str | None:
    """Make sure a release job is pending for the earliest held bundle (``tipline
    worker`` calls this when it starts: a release job that ran out of attempts)."""
    with transaction(sessions) as session:
        at = next_release_time(session)
        if at is None:
            return None
        covered = session.execute(
            select(Job.id)
            .where(
                Job.kind == RELEASE_JOB_KIND,
                Job.status == jobs.JobStatus.PENDING.value,
                Job.run_at <= at,
            )
            .limit(1)
        ).scalar()
        if covered is not None:
            return None
        return jobs.enqueue(session, RELEASE_JOB_KIND, {}, run_at=at)


@dataclass
class ReleaseJob:
    """The ``report.release`` handler: releases every bundle due now."""

    sessions: sessionmaker[Session]
    settings: Settings
    evidence: EvidenceFiles
    #: the current instant (a test passes the job runner's clock)
    clock: Callable[[], datetime] = utcnow

    def __call__(self, job: jobs.JobContext) -> None:
        # every bundle due now, not only the job's own (each bundle has its own job)
        release_due(self.sessions, self.settings, self.evidence, now=self.clock())

    def close(self) -> None:
        """Nothing to close (the interface of the worker's report handlers)."""
