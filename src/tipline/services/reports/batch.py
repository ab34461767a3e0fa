"""Reports of many confirmed decisions at once: one transaction per batch.

:func:`create_from_decisions` does for each decision what
:func:`tipline.services.reports.service.create_from_decision` does (the same checks,
the same document, the same audit records), but a batch of decisions costs one read
transaction and one durable write transaction instead of two each: the decisions,
submissions, existing reports and match records are read in a few queries, the report,
file and outbox rows are inserted in bulk, the audit records are appended together at
COMMIT, and one delivery job covers the batch. The work per report that needs no
database (decrypting the media, MD5/SHA-1, building the XML and validating it against
the XSD) runs on ``threads`` threads (hashing, decryption and validation release the
GIL).

A decision that cannot be reported (not found, not confirmed, already reported, no
media, a fact the schema refuses) is answered with its error and leaves the rest of
its batch unaffected.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.errors import ConflictError, InputError, NotFoundError, TiplineError
from tipline.services.auth import Permission, Principal, can_see_tenant
from tipline.services.reports import builder, delivery_job
from tipline.services.reports.evidence import EvidenceFiles, StoredFile
from tipline.services.reports.facts import ReviewFacts, review_facts_from_json
from tipline.services.reports.model import ReportContent, Reporter
from tipline.services.reports.outbox import ReportStatus
from tipline.services.reports.service import (
    FileDigests,
    ReportKind,
    ReportSummary,
    _summary,
    defer_created,
    evidence_from_settings,
    file_of,
    new_report_id,
    recorded_digests,
    report_rows,
    reporter_from_settings,
    user_of,
)
from tipline.store.db import transaction
from tipline.store.reports import ReportFileRow, ReportOutboxRow, ReportRow
from tipline.store.submissions import DecisionKind, DecisionRow, MatchRecordRow, SubmissionRow

#: decisions per transaction unless the caller says otherwise
DEFAULT_BATCH = 64
_MATCHES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decision's result: its report, or why none was made."""

    decision_id: str
    report: ReportSummary | None = None
    error: str | None = None


@dataclass
class _Planned:
    decision_id: str
    submission: SubmissionRow
    facts: ReviewFacts
    media: list[StoredFile]
    additional_info: str | None
    #: per file: its recorded digests, or a function reading its bytes
    sources: list[FileDigests | Callable[[], bytes]] | None = None
    content: ReportContent | None = None
    xml: bytes | None = None
    error: str | None = None


def create_from_decisions(
    sessions: sessionmaker[Session],
    who: Principal,
    decision_ids: Sequence[str],
    *,
    settings: Settings,
    evidence: EvidenceFiles | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Build and queue the reports of confirmed decisions, ``batch_size`` per
    transaction; one :class:`Outcome` per decision, in order (a decision already
    reported answers with that report). ``on_batch`` is told how many decisions each
    committed batch held (for progress)."""
    who.require(Permission.REPORT)
    if not 1 <= batch_size <= 1000:
        raise InputError("batch size must be between 1 and 1000")
    if not 1 <= threads <= 64:
        raise InputError("threads must be between 1 and 64")
    evidence = evidence or evidence_from_settings(sessions, settings)
    reporter = reporter_from_settings(settings)
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="report-build") as pool:
        for start in range(0, len(decision_ids), batch_size):
            chunk = list(dict.fromkeys(decision_ids[start : start + batch_size]))
            done = _batch(sessions, who, chunk, settings, evidence, reporter, pool)
            outcomes.extend(done[d] for d in decision_ids[start : start + batch_size])
            if on_batch is not None:
                on_batch(len(decision_ids[start : start + batch_size]))
    return outcomes


def _batch(
    sessions: sessionmaker[Session],
    who: Principal,
    decision_ids: list[str],
    settings: Settings,
    evidence: EvidenceFiles,
    reporter: Reporter,
    pool: ThreadPoolExecutor,
) -> dict[str, Outcome]:
    done: dict[str, Outcome] = {}
    with transaction(sessions) as session:
        planned = _plan(session, who, decision_ids, evidence, done)
        if not planned:
            return done
        # files whose digests the matcher recorded are not read; the other reads are
        # audited in this transaction and done by the threads
        for plan in planned:
            plan.sources = [
                recorded_digests(plan.submission, m) or evidence.opener(session, m.evidence_id)
                for m in plan.media
            ]
        list(pool.map(lambda p: _build(p, settings, reporter), planned))
        built = [p for p in planned if p.error is None]
        for plan in planned:
            if plan.error is not None:
                done[plan.decision_id] = Outcome(plan.decision_id, error=plan.error)
        if not built:
            return done  # the reads that happened stay audited
        rows = []
        for plan in built:
            assert plan.content is not None and plan.xml is not None
            report, children = report_rows(
                plan.content,
                plan.xml,
                [m.evidence_id for m in plan.media],
                kind=ReportKind.REVIEW,
                source=f"decision:{plan.decision_id}",
                tenant=plan.submission.tenant,
                actor=who,
            )
            rows.append((plan, report, children))
        session.add_all([report for _, report, _ in rows])
        session.flush()
        session.add_all([child for _, _, children in rows for child in children])
        session.flush()
        # the documents' vault files are written, then synced together
        evidence.keep_report_xmls(
            session, [(report.tenant, report.id, plan.xml or b"") for plan, report, _ in rows]
        )
        for plan, report, _ in rows:
            assert plan.content is not None
            defer_created(session, report, plan.content, actor=who)
        delivery_job.enqueue_delivery(session)  # one job delivers the whole batch
        session.flush()
        for plan, report, children in rows:
            outbox = next(c for c in children if isinstance(c, ReportOutboxRow))
            done[plan.decision_id] = Outcome(
                plan.decision_id, report=_new_summary(report, len(children) - 1, outbox)
            )
    return done


def _new_summary(report: ReportRow, files: int, outbox: ReportOutboxRow) -> ReportSummary:
    return ReportSummary(
        id=report.id,
        tenant=report.tenant,
        kind=report.kind,
        status=report.status,
        source=report.source,
        remote_id=None,
        orphans=0,
        files=files,
        created_at=report.created_at,
        finished_at=None,
        retracted_at=None,
        last_error=None,
        step=outbox.step,
        attempts=0,
        next_attempt_at=outbox.next_at,
    )


def _plan(
    session: Session,
    who: Principal,
    decision_ids: list[str],
    evidence: EvidenceFiles,
    done: dict[str, Outcome],
) -> list[_Planned]:
    """Check every decision (as create_from_decision does) in a few queries; errors and
    decisions already reported go to ``done``."""
    decisions = {
        row.id: row
        for row in session.scalars(select(DecisionRow).where(DecisionRow.id.in_(decision_ids)))
    }
    submission_ids = {d.submission_id for d in decisions.values()}
    submissions = {
        row.id: row
        for row in session.scalars(
            select(SubmissionRow).where(SubmissionRow.id.in_(submission_ids))
        )
    }
    sources = [f"decision:{d}" for d in decision_ids]
    existing = {
        row.source: row
        for row in session.scalars(select(ReportRow).where(ReportRow.source.in_(sources)))
    }
    reported: dict[str, ReportRow] = {}
    for submission_id, row in session.execute(
        select(ReportFileRow.submission_id, ReportRow)
        .join(ReportRow, ReportRow.id == ReportFileRow.report_id)
        .where(
            ReportFileRow.submission_id.in_(submission_ids),
            ReportRow.status != ReportStatus.RETRACTED.value,
        )
    ):
        reported.setdefault(str(submission_id), row)
    matches: dict[str, list[str]] = defaultdict(list)
    for sid, bank, entry, kind, distance in session.execute(
        select(
            MatchRecordRow.submission_id,
            MatchRecordRow.bank,
            MatchRecordRow.entry_id,
            MatchRecordRow.signal_type,
            MatchRecordRow.distance,
        )
        .where(MatchRecordRow.submission_id.in_(submission_ids))
        .order_by(MatchRecordRow.id)
    ):
        if sid is not None and len(matches[sid]) < _MATCHES_SHOWN:
            matches[sid].append(f"bank {bank!r} entry {entry} ({kind}, distance {distance})")
    # the media of every submission in one query (not one per decision)
    media_of = evidence.media_of_many(
        session, [(row.tenant, row.id) for row in submissions.values()]
    )
    planned: list[_Planned] = []
    claimed: set[str] = set()
    for decision_id in decision_ids:
        try:
            decision = decisions.get(decision_id)
            if decision is None or not can_see_tenant(who, decision.tenant, write=True):
                raise NotFoundError(f"no decision {decision_id!r}")
            if decision.decision != DecisionKind.CONFIRMED.value:
                raise ConflictError(
                    f"decision {decision_id} is {decision.decision!r}; "
                    "only a confirmed one is reported"
                )
            made = existing.get(f"decision:{decision_id}")
            if made is not None:
                done[decision_id] = Outcome(decision_id, report=_summary(session, made))
                continue
            submission = submissions.get(decision.submission_id)
            if submission is None or submission.tenant != decision.tenant:
                raise NotFoundError(f"no submission {decision.submission_id!r}")
            other = reported.get(submission.id)
            if other is not None or submission.id in claimed:
                where = other.id if other is not None else "this batch"
                raise ConflictError(
                    f"submission {submission.id} is already in report {where}; "
                    "a file is reported once"
                )
            media = media_of.get(submission.id, [])
            if not media:
                raise InputError(
                    f"submission {submission.id} has no stored media: there is no file to report"
                )
            claimed.add(submission.id)
            found = matches.get(submission.id)
            planned.append(
                _Planned(
                    decision_id,
                    submission,
                    review_facts_from_json(decision.facts),
                    media,
                    "Matched " + "; ".join(found) + "." if found else None,
                )
            )
        except TiplineError as exc:
            done[decision_id] = Outcome(decision_id, error=str(exc))
    return planned


def _build(plan: _Planned, settings: Settings, reporter: Reporter) -> None:
    """Read the files, build and validate the document (no database: any thread)."""
    assert plan.sources is not None
    try:
        submission = plan.submission
        files = tuple(
            file_of(
                submission, m, source if isinstance(source, FileDigests) else source(), plan.facts
            )
            for m, source in zip(plan.media, plan.sources, strict=True)
        )
        plan.content = ReportContent(
            report_id=new_report_id(),
            incident_type=plan.facts.incident_type,
            incident_at=submission.uploaded_at or submission.created_at,
            reporter=reporter,
            files=files,
            users=(user_of(submission, settings),),
            platform=settings.report_platform,
            escalation_reason=plan.facts.escalation_reason,
            annotations=plan.facts.report_annotations,
            urls=tuple(f.location for f in files if f.location),
            additional_info=plan.additional_info,
        )
        plan.xml = builder.build_report(plan.content)
    except TiplineError as exc:
        plan.error = str(exc)
