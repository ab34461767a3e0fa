"""Recording what was submitted and matched: the one home for it.

Whatever door an item came in by (``POST /v1/match``, the HMA endpoints, ``tipline
scan``), its outcome is written here: the submission (when the platform gave its facts)
with its signals, one match-history row per match, and the banks' action rules
(review queue, webhook deliveries, the audited ``match`` event) — all in one
transaction, so they commit together or not at all.

- :func:`match_and_record`: match one item and record it, one transaction (the API).
- :func:`record_batch`: the batch form, in the caller's transaction (a scan batch
  commits its items, its checkpoint and their outcomes together).
- :func:`create_submission`, :func:`add_decision` and the reads: the rest of the
  submission use cases, each owning its transaction.

Suppressed matches (an allow-bank entry matched too) are kept in the history but
trigger no action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import InputError
from tipline.services import actions, audit, input_limits
from tipline.services import vault as vault_service
from tipline.services.auth import Principal
from tipline.services.matching.match import Match
from tipline.services.reports.auto import AutoReportPolicy, queue_at_match
from tipline.services.vault import Vault
from tipline.signals.base import Signal
from tipline.store import submissions as store
from tipline.store.db import transaction

# -- what is recorded -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmissionFacts:
    """What the platform knows about one piece of content (reports need these later)."""

    content_id: str
    uploader_account: str | None = None
    upload_ip: str | None = None
    uploaded_at: datetime | None = None
    #: source port of the upload (needed behind CGNAT)
    upload_port: int | None = None
    file_name: str | None = None
    uploader_screen_name: str | None = None
    uploader_profile_url: str | None = None
    #: uploader account facts for reports (see :mod:`tipline.services.reports.facts`)
    account: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One item's signals and matches, and what to record with them.

    ``submission`` stores a submission row; without it only the matches are recorded.
    ``event_id`` names the action event (rules add nothing twice for one id); when None
    it is the submission id, or a fresh ULID. ``content_id`` and ``extra`` describe
    the item in the event when there is no submission.
    """

    signals: Sequence[Signal]
    matches: Sequence[Match]
    submission: SubmissionFacts | None = None
    event_id: str | None = None
    content_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the item's bytes (or file): kept in the evidence vault when a rule sends the item
    #: to review (needs the ``vault`` argument of :func:`record_batch`)
    media: vault_service.Source | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Recorded:
    """Matches of one item (best first) and the id of its submission (None without)."""

    matches: list[Match]
    submission_id: str | None


@dataclass(frozen=True, slots=True)
class Submission:
    """A stored submission."""

    id: str
    tenant: str | None
    content_id: str
    uploader_account: str | None
    upload_ip: str | None
    uploaded_at: datetime | None
    upload_port: int | None
    file_name: str | None
    uploader_screen_name: str | None
    uploader_profile_url: str | None
    account: dict[str, Any]
    metadata: dict[str, Any]
    signals: list[dict[str, Any]]
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, row: store.SubmissionRow) -> Submission:
        """The stored row as a value."""
        return cls(
            id=row.id,
            tenant=row.tenant,
            content_id=row.content_id,
            uploader_account=row.uploader_account,
            upload_ip=row.upload_ip,
            uploaded_at=row.uploaded_at,
            upload_port=row.upload_port,
            file_name=row.file_name,
            uploader_screen_name=row.uploader_screen_name,
            uploader_profile_url=row.uploader_profile_url,
            account=dict(row.account or {}),
            metadata=dict(row.meta),
            signals=list(row.signals),
            created_at=row.created_at,
            created_by=row.created_by,
        )


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """One row of the match history; ``distance`` in the signal type's unit (bits)."""

    id: int
    submission_id: str | None
    at: datetime
    bank: str
    entry_id: str
    signal_type: str
    distance: int
    query_value: str | None
    labels: tuple[str, ...]
    #: the query's variant that matched (``trim``, ``flipx``...; None: as given)
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A reviewer's decision about a submission."""

    id: str
    submission_id: str
    decision: str
    reason: str
    #: what the reviewer viewed and concluded (reports use it)
    facts: dict[str, Any]
    decided_by: str
    decided_at: datetime

    @classmethod
    def of(cls, row: store.DecisionRow) -> Decision:
        """The stored row as a value."""
        return cls(
            id=row.id,
            submission_id=row.submission_id,
            decision=row.decision,
            reason=row.reason,
            facts=dict(row.facts or {}),
            decided_by=row.decided_by,
            decided_at=row.decided_at,
        )


#: The decisions a reviewer can record.
DecisionKind = store.DecisionKind

# -- recording outcomes -----------------------------------------------------------------


def _stored_signals(signals: Sequence[Signal]) -> list[dict[str, Any]]:
    # vPDQ values are whole frame lists: too big for every submission row
    return [{"type": s.type, "value": s.value} for s in signals if s.type != "vpdq"]


def _insert(
    session: Session, who: Principal, facts: SubmissionFacts, signals: list[dict[str, Any]]
) -> store.SubmissionRow:
    return store.create_submission(
        session,
        tenant=who.tenant,
        created_by=who.key_id,
        content_id=facts.content_id,
        uploader_account=facts.uploader_account,
        upload_ip=facts.upload_ip,
        uploaded_at=facts.uploaded_at,
        upload_port=facts.upload_port,
        file_name=facts.file_name,
        uploader_screen_name=facts.uploader_screen_name,
        uploader_profile_url=facts.uploader_profile_url,
        account=dict(facts.account) if facts.account is not None else None,
        metadata=input_limits.check_metadata(dict(facts.metadata)),
        signals=signals,
    )


def _implicit_facts(outcome: Outcome) -> SubmissionFacts:
    """Submission facts for an item reported at match time that came without any (a
    scanned file, an upload without ``content_id``): what the item itself tells."""
    name = None
    if isinstance(outcome.media, Path):  # a file name need not be UTF-8
        raw = outcome.media.name.encode("utf-8", "surrogateescape")
        name = raw.decode("utf-8", "backslashreplace")[:256]
    return SubmissionFacts(
        content_id=(outcome.content_id or name or "upload")[:256],
        file_name=name,
        metadata={"recorded_for": "auto-report", **dict(outcome.extra)},
    )


def _vault_name(name: str | None) -> str | None:
    """``name`` when the vault can label an item with it (else the item has none)."""
    return name if name is not None and len(name) <= 256 and name.isprintable() else None


def record_batch(
    session: Session,
    who: Principal,
    outcomes: Sequence[Outcome],
    *,
    vault: Vault | None = None,
    auto_report: AutoReportPolicy | None = None,
) -> list[str | None]:
    """Record ``outcomes`` in ``session``'s transaction (the caller commits); return each
    one's submission id (None without submission facts).

    An outcome with neither submission facts nor matches records nothing. The match
    history of the whole batch is written in one statement. With a ``vault``, the
    ``media`` of an outcome whose matches send it to review is kept there, linked to
    the submission and the review items, in this same transaction (encrypted before
    the action rules take the audit chain's lock; dropped again when no rule asked for
    review).

    With an ``auto_report`` policy, an outcome it covers (an exact match of an entry
    a trusted source confirmed, see :mod:`tipline.services.reports.auto`) gets a
    submission even without facts, its media is kept in ``vault`` whether or not a
    rule asked for review, and its report (files NOT viewed) is queued in this same
    transaction; a report that cannot be made is audited, never fails the batch.
    """
    ids: list[str | None] = []
    history: list[tuple[str | None, Sequence[Match]]] = []
    events: list[actions.MatchEvent] = []
    kept: list[tuple[Outcome, str | None]] = []
    to_report: dict[int, tuple[store.SubmissionRow, list[str]]] = {}
    reportable = (  # each outcome's matches the auto-report policy covers (one read)
        auto_report.covers_each(session, [o.matches for o in outcomes])
        if auto_report is not None
        else [[] for _ in outcomes]
    )
    for outcome, covered in zip(outcomes, reportable, strict=True):
        if outcome.submission is None and not outcome.matches:
            ids.append(None)
            continue
        facts = outcome.submission
        if facts is None and covered:
            facts = _implicit_facts(outcome)
        submission_id: str | None = None
        if facts is not None:
            row = _insert(session, who, facts, _stored_signals(outcome.signals))
            submission_id = row.id
            if covered:
                to_report[len(kept)] = (row, covered)
        ids.append(submission_id)
        history.append((submission_id, outcome.matches))
        kept.append((outcome, submission_id))
        events.append(
            actions.MatchEvent(
                event_id=outcome.event_id or submission_id or str(ULID()),
                hits=[
                    actions.MatchHit(
                        bank=m.bank,
                        signal_type=m.signal_type,
                        distance=m.distance,
                        entry_id=m.entry_id,
                        variant=m.variant,
                    )
                    for m in outcome.matches
                    if m.suppressed_by is None
                ],
                content_id=facts.content_id if facts is not None else outcome.content_id,
                tenant=who.tenant,
                extra=dict(outcome.extra),
            )
        )
    store.record_history(
        session,
        who.tenant,
        [
            (
                submission_id,
                store.MatchFact(
                    bank=m.bank,
                    entry_id=m.entry_id,
                    signal_type=m.signal_type,
                    distance=m.distance,
                    query_value=m.query_value,
                    labels=m.labels,
                    variant=m.variant,
                ),
            )
            for submission_id, matches in history
            for m in matches
        ],
    )
    media = _seal_media(session, vault, kept)
    for index, (event, (outcome, submission_id), sealed) in enumerate(
        zip(events, kept, media, strict=True)
    ):
        done = actions.on_match(session, event, actor=who)
        report = to_report.get(index)
        if vault is not None and outcome.media is not None:
            data = sealed if sealed is not None else outcome.media
            if done.review_items or report is None:
                vault_service.keep_for_review(
                    session,
                    vault,
                    data,
                    review_item_ids=done.review_items,
                    actor=who,
                    submission_id=submission_id,
                    content_id=event.content_id,
                )
            elif submission_id is not None:
                vault_service.keep_for_report(
                    session,
                    vault,
                    data,
                    submission_id=submission_id,
                    actor=who,
                    content_id=event.content_id,
                    filename=_vault_name(report[0].file_name),
                )
        if report is not None and auto_report is not None:
            queue_at_match(
                session,
                auto_report,
                vault if outcome.media is not None else None,
                report[0],
                report[1],
            )
    return ids


def _seal_media(
    session: Session, vault: Vault | None, kept: Sequence[tuple[Outcome, str | None]]
) -> list[vault_service.SealedFile | None]:
    """Encrypt the media of outcomes that may go to review (an unsuppressed match)
    before any rule runs: the rules' audit record takes the chain's lock, held until
    commit, and encrypting under it would stall every other audited write."""
    out: list[vault_service.SealedFile | None] = []
    for outcome, _ in kept:
        may_review = any(m.suppressed_by is None for m in outcome.matches)
        if vault is None or vault.keyring is None or outcome.media is None or not may_review:
            out.append(None)
            continue
        try:
            out.append(vault_service.seal(session, vault, outcome.media))
        except InputError:  # an unreadable file: keep_for_review audits it as not kept
            out.append(None)
    return out


def match_and_record(
    sessions: sessionmaker[Session],
    who: Principal,
    signals: Sequence[Signal],
    find: Callable[[Session], Sequence[Match]],
    *,
    submission: SubmissionFacts | None = None,
    media: vault_service.Source | None = None,
    vault: Vault | None = None,
    auto_report: AutoReportPolicy | None = None,
) -> Recorded:
    """Match one item and record the outcome, in one transaction.

    ``find`` returns the item's matches (best first), reading the hits' entries in the
    session it is given: one pooled connection serves the whole request. ``media`` (the
    item's bytes) is kept in ``vault`` when a rule sends the item to review, or when
    the ``auto_report`` policy covers a match (the report is then queued with it).
    """
    with transaction(sessions) as session:
        matches = list(find(session))
        (submission_id,) = record_batch(
            session,
            who,
            [Outcome(signals, matches, submission, media=media)],
            vault=vault,
            auto_report=auto_report,
        )
    return Recorded(matches, submission_id)


# -- the other submission use cases -----------------------------------------------------


def create_submission(
    sessions: sessionmaker[Session],
    who: Principal,
    facts: SubmissionFacts,
    signals: Sequence[Mapping[str, Any]],
) -> Submission:
    """Record a submission by its (validated) signals, without matching (audited)."""
    with transaction(sessions) as session:
        row = _insert(session, who, facts, [dict(s) for s in signals])
        audit.append(
            session,
            actor=who,
            action="submission.create",
            target=("submission", row.id),
            details={},
        )
        return Submission.of(row)


def get_submission(
    sessions: sessionmaker[Session], who: Principal, submission_id: str
) -> Submission:
    """One submission of ``who``'s tenant (NotFoundError for another tenant's id)."""
    with sessions() as session:
        return Submission.of(store.get_submission(session, who.tenant, submission_id))


def list_submissions(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    content_id: str | None = None,
    uploader_account: str | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[Submission]:
    """The tenant's submissions, newest first; ``before`` is an id cursor (exclusive)."""
    with sessions() as session:
        rows = store.list_submissions(
            session,
            who.tenant,
            content_id=content_id,
            uploader_account=uploader_account,
            limit=limit,
            before=before,
        )
        return [Submission.of(r) for r in rows]


def list_matches(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    submission_id: str | None = None,
    bank: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[MatchRecord]:
    """The tenant's match history, newest first; ``before`` is an id cursor (exclusive)."""
    with sessions() as session:
        rows = store.list_matches(
            session, who.tenant, submission_id=submission_id, bank=bank, limit=limit, before=before
        )
        return [
            MatchRecord(
                id=r.id,
                submission_id=r.submission_id,
                at=r.at,
                bank=r.bank,
                entry_id=r.entry_id,
                signal_type=r.signal_type,
                distance=r.distance,
                query_value=r.query_value,
                labels=tuple(r.labels),
                variant=r.variant,
            )
            for r in rows
        ]


def add_decision(
    sessions: sessionmaker[Session],
    who: Principal,
    submission_id: str,
    decision: store.DecisionKind,
    *,
    reason: str = "",
    facts: Mapping[str, Any] | None = None,
) -> Decision:
    """Record a decision on the tenant's submission (audited; NotFoundError if not
    theirs); ``facts`` says what the reviewer viewed and concluded. A false positive
    erases the media kept only for review (see
    :func:`tipline.services.actions.discard_false_positive_media`)."""
    with transaction(sessions) as session:
        row = store.add_decision(
            session,
            who.tenant,
            submission_id,
            decision,
            decided_by=who.key_id,
            reason=reason,
            facts=dict(facts) if facts is not None else None,
        )
        if decision is store.DecisionKind.FALSE_POSITIVE:
            actions.discard_false_positive_media(
                session,
                store.get_submission(session, who.tenant, submission_id),
                actor=who,
                decision_id=row.id,
            )
        audit.append(
            session,
            actor=who,
            action="submission.decide",
            target=("submission", submission_id),
            details={"decision": decision.value},
        )
        return Decision.of(row)


def list_decisions(
    sessions: sessionmaker[Session], who: Principal, submission_id: str
) -> list[Decision]:
    """Decisions on one of the tenant's submissions, newest first (NotFoundError if the
    submission is not theirs)."""
    with sessions() as session:
        store.get_submission(session, who.tenant, submission_id)
        return [Decision.of(r) for r in store.list_decisions(session, who.tenant, submission_id)]
