"""A reviewer's verdict on a review item: confirm, false positive, escalate, skip.

Each one refuses while another reviewer holds a live lease on the item, and the first
decision wins (:func:`tipline.services.actions.decide`); the second decider gets a
:class:`ConflictError` naming who decided. A confirmation records the reviewer's
classification and annotations with ``viewed`` taken from their recorded reveals
(level 2+), then feeds the report builder. A false positive adds the item's hashes to
the tenant's allow bank with the reviewer's reason, so the same file stops matching.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.errors import ConflictError, InputError, NotFoundError, TiplineError
from tipline.services import actions, audit, banks
from tipline.services.auth import Principal, can_see_tenant
from tipline.services.database import Database
from tipline.services.reports import service as reports
from tipline.services.review import two_person
from tipline.services.review.media import VIEW_LEVEL, revealed_level
from tipline.services.review.queue import (
    CLASSIFICATIONS,
    _ensure_row,
    release_in,
    visible_item,
)
from tipline.store import submissions as sub_store
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import ReviewItem
from tipline.store.web import ReviewLeaseRow

#: file annotations a reviewer may add (NCMEC's names)
FILE_ANNOTATIONS: tuple[str, ...] = (
    "potentialMeme",
    "viral",
    "possibleSelfProduction",
    "physicalHarm",
    "violenceGore",
    "bestiality",
    "liveStreaming",
    "infant",
    "generativeAi",
    "animeDrawingVirtualHentai",
)
_MAX_TEXT = 2000


class Verdict(enum.Enum):
    """What the reviewer decided."""

    CONFIRM = "confirm"
    FALSE_POSITIVE = "false_positive"
    ESCALATE = "escalate"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a verdict did."""

    item_id: str
    verdict: Verdict
    decision_id: str | None = None
    viewed: bool = False
    report_id: str | None = None
    #: why no report was built (the decision stands; build it later from the decision)
    report_error: str | None = None
    allow_entry: str | None = None
    allow_error: str | None = None
    #: the two-person rule: this was the first confirmation; a second reviewer must confirm
    awaiting_second: bool = False


def _check_lease(session: Session, who: Principal, item: ReviewItem, now: datetime) -> None:
    if item.status != "pending":
        by = f" by {item.decided_by}" if item.decided_by else ""
        raise ConflictError(f"this item was already {item.status}{by}")
    row = session.get(ReviewLeaseRow, item.id, populate_existing=True)
    if (
        row is not None
        and row.holder is not None
        and row.holder != who.key_id
        and row.expires_at is not None
        and row.expires_at > now
    ):
        raise ConflictError(
            f"{row.holder} is working on this item until {row.expires_at:%H:%M:%S} UTC"
        )


def _text(value: str | None, what: str, *, required: bool) -> str | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise InputError(f"a {what} is required")
        return None
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise InputError(f"the {what} must be at most {_MAX_TEXT} printable characters")
    return value


def confirm(
    db: Database,
    who: Principal,
    item_id: str,
    *,
    classification: str,
    file_annotations: Sequence[str] = (),
    settings: Settings,
    now: datetime | None = None,
) -> Outcome:
    """Confirm the match and queue its report (``fileViewedByEsp`` = revealed at level
    2+). A report that cannot be built (reporting not configured, no media kept)
    leaves the decision in place and says why in ``report_error``.

    Under the two-person rule (``settings.review_two_person_unmatched``) an item that
    matched no bank needs two reviewers: the first confirmation is recorded and the
    item stays pending (``awaiting_second``); the same reviewer again is refused
    (ConflictError, audited); another reviewer's confirmation decides it."""
    if classification not in CLASSIFICATIONS:
        raise InputError(f"classification must be one of {', '.join(CLASSIFICATIONS)}")
    unknown = sorted(set(file_annotations) - set(FILE_ANNOTATIONS))
    if unknown:
        raise InputError(f"unknown file annotation(s): {', '.join(unknown)}")
    now = now or utcnow()
    refused: two_person.FirstConfirmation | None = None
    with transaction(db.sessions) as session:
        item = visible_item(session, who, item_id)
        _check_lease(session, who, item, now)
        viewed = revealed_level(session, who, item_id) >= VIEW_LEVEL
        facts = {
            "viewed": viewed,
            "classification": classification,
            "file_annotations": sorted(set(file_annotations)),
            "potential_meme": "potentialMeme" in file_annotations,
        }
        first = None
        if settings.review_two_person_unmatched and two_person.unmatched(item):
            first, recorded = two_person.claim_first(session, who, item, facts, now)
            if first.actor == who.key_id and not recorded:
                refused = first  # the same reviewer again: audited, then refused
            elif recorded:
                release_in(session, who, item_id)
                audit.append(
                    session,
                    actor=who,
                    action="review.confirm_first",
                    target=("review_item", item_id),
                    details={"classification": classification, "viewed": viewed},
                    tenant=item.tenant,
                )
                return Outcome(item_id, Verdict.CONFIRM, None, viewed, awaiting_second=True)
            else:
                facts["viewed"] = viewed = viewed or bool(first.facts.get("viewed"))
        if refused is not None:
            audit.append(
                session,
                actor=who,
                action="review.confirm_refused",
                target=("review_item", item_id),
                details={"reason": "two-person rule: the same reviewer cannot confirm twice"},
                tenant=item.tenant,
            )
        else:
            release_in(session, who, item_id)
            decision_id = actions.decide(
                session, item_id, actions.ReviewStatus.CONFIRMED, actor=who, facts=facts
            )
            if first is not None:
                audit.append(
                    session,
                    actor=who,
                    action="review.confirm_second",
                    target=("review_item", item_id),
                    details={
                        "first_by": first.actor,
                        "first_classification": first.classification,
                        "classification": classification,
                    },
                    tenant=item.tenant,
                )
    if refused is not None:
        raise ConflictError(
            f"you gave the first confirmation at {refused.at:%H:%M:%S} UTC; under the "
            "two-person rule a different reviewer must confirm this item"
        )
    outcome = Outcome(item_id, Verdict.CONFIRM, decision_id, viewed)
    if decision_id is None:
        return outcome
    try:
        summary = reports.create_from_decision(db.sessions, who, decision_id, settings=settings)
    except TiplineError as exc:
        return Outcome(item_id, Verdict.CONFIRM, decision_id, viewed, report_error=exc.message)
    return Outcome(item_id, Verdict.CONFIRM, decision_id, viewed, report_id=summary.id)


def decide_item(
    sessions: sessionmaker[Session],
    who: Principal,
    item_id: str,
    status: actions.ReviewStatus,
    *,
    facts: Mapping[str, Any] | None,
    two_person_rule: bool,
) -> str | None:
    """A decision given whole by an API client (:func:`actions.decide`). Under the
    two-person rule an item that matched no bank cannot be confirmed this way
    (ConflictError): two reviewers confirm it in the web UI."""
    with transaction(sessions) as session:
        item = session.get(ReviewItem, item_id) if len(item_id) <= 26 else None
        if (
            two_person_rule
            and status is actions.ReviewStatus.CONFIRMED
            and item is not None
            and can_see_tenant(who, item.tenant, write=True)
            and two_person.unmatched(item)
        ):
            raise ConflictError(
                f"review item {item_id} matched no bank: under the two-person rule two "
                "different reviewers confirm it in the web UI"
            )
        return actions.decide(session, item_id, status, actor=who, facts=facts)


def allow_bank_name(tenant: str | None) -> str:
    """The allow bank false positives of ``tenant`` go to."""
    return f"allow-{tenant}" if tenant else "allow"


def false_positive(
    db: Database, who: Principal, item_id: str, *, reason: str, now: datetime | None = None
) -> Outcome:
    """Reject the match and add the item's hashes to the tenant's allow bank (created
    when missing) with ``reason`` as the entry's source: later matches of the same file
    are suppressed with that reason."""
    text = _text(reason, "reason", required=True)
    assert text is not None
    now = now or utcnow()
    with transaction(db.sessions) as session:
        item = visible_item(session, who, item_id)
        _check_lease(session, who, item, now)
        viewed = revealed_level(session, who, item_id) >= VIEW_LEVEL
        tenant = item.tenant
        signals: list[str] = []
        if len(item.event_id) <= 26:
            row = session.get(sub_store.SubmissionRow, item.event_id)
            if row is not None and row.tenant == tenant:
                signals = [
                    f"{s['type']}:{s['value']}"
                    for s in row.signals
                    if isinstance(s, dict) and s.get("type") and s.get("value")
                ]
        release_in(session, who, item_id)
        decision_id = actions.decide(
            session,
            item_id,
            actions.ReviewStatus.REJECTED,
            actor=who,
            facts={"viewed": viewed},
        )
    if not signals:
        return Outcome(
            item_id,
            Verdict.FALSE_POSITIVE,
            decision_id,
            viewed,
            allow_error="no hash was recorded for this item; nothing added to an allow bank",
        )
    name = allow_bank_name(tenant)
    try:
        try:
            info = banks.show_bank(db, name)
            if not info.bank.is_allow_bank or info.bank.tenant != tenant:
                raise ConflictError(f"bank {name!r} exists and is not this tenant's allow bank")
        except NotFoundError:
            banks.create_bank(
                db,
                name,
                description="false positives found in review",
                allow=True,
                tenant=tenant,
                actor=who,
            )
        entry = banks.add_entry(
            db,
            name,
            signals,
            entry_id=f"review-{item_id}",
            labels=("false-positive",),
            source=f"false positive (review {item_id}): {text}"[:500],
            actor=who,
        )
    except TiplineError as exc:
        return Outcome(
            item_id, Verdict.FALSE_POSITIVE, decision_id, viewed, allow_error=exc.message
        )
    return Outcome(
        item_id,
        Verdict.FALSE_POSITIVE,
        decision_id,
        viewed,
        allow_entry=f"{name}/{entry.entry_id}",
    )


def escalate(
    db: Database, who: Principal, item_id: str, *, note: str, now: datetime | None = None
) -> Outcome:
    """Send the item up: it stays pending, goes to the top of the queue marked
    escalated, and the submission gets an ``escalated`` decision with the note."""
    text = _text(note, "note", required=True)
    now = now or utcnow()
    with transaction(db.sessions) as session:
        item = visible_item(session, who, item_id)
        _check_lease(session, who, item, now)
        _ensure_row(session, item_id)
        row = session.get(ReviewLeaseRow, item_id, populate_existing=True)
        assert row is not None
        row.escalated_at = now
        row.escalated_by = who.key_id
        row.escalation_note = text
        row.holder = None
        row.expires_at = None
        decision_id = None
        if len(item.event_id) <= 26:
            sub = session.get(sub_store.SubmissionRow, item.event_id)
            if sub is not None and sub.tenant == item.tenant:
                decision_id = sub_store.add_decision(
                    session,
                    item.tenant,
                    sub.id,
                    sub_store.DecisionKind.ESCALATED,
                    decided_by=who.key_id,
                    reason=f"review item {item_id} ({item.bank}): {text}",
                    facts={"viewed": revealed_level(session, who, item_id) >= VIEW_LEVEL},
                ).id
        session.flush()
        audit.append(
            session,
            actor=who,
            action="review.escalate",
            target=("review_item", item_id),
            details={"note": text, "submission_decision": decision_id},
            tenant=item.tenant,
        )
    return Outcome(item_id, Verdict.ESCALATE, decision_id)


def skip(db: Database, who: Principal, item_id: str) -> Outcome:
    """Give the item back to the queue undecided (audited as ``review.skip``)."""
    with transaction(db.sessions) as session:
        item = visible_item(session, who, item_id)
        release_in(session, who, item_id)
        audit.append(
            session,
            actor=who,
            action="review.skip",
            target=("review_item", item_id),
            tenant=item.tenant,
        )
    return Outcome(item_id, Verdict.SKIP)
