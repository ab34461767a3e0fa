"""Per-bank rules turn a match into actions: a review-queue item and/or webhook deliveries.

Call :func:`on_match` in the same transaction that records the match: the review items,
the delivery jobs and the audit record commit together or not at all, and calling it
again for the same ``event_id`` adds nothing (unique keys per event).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from ulid import ULID

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit, jobs, vault, webhooks
from tipline.services.auth import Permission, Principal, require_tenant, tenant_clause
from tipline.services.reports.facts import review_facts_from_json
from tipline.store import submissions as sub_store
from tipline.store.bank_tables import BankRow
from tipline.store.base import utcnow
from tipline.store.jobs import ActionRule, ReviewItem, Webhook
from tipline.store.submissions import DecisionKind, SubmissionRow


class ActionKind(enum.Enum):
    """What a rule does on a match."""

    ENQUEUE_REVIEW = "enqueue_review"
    WEBHOOK = "webhook"


class ReviewStatus(enum.Enum):
    """State of a review-queue item."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class MatchHit:
    """One bank entry that matched: ``distance`` in bits (PDQ) or 0 for exact digests."""

    bank: str
    signal_type: str
    distance: int
    entry_id: str | None = None
    #: the query's variant that matched (``trim``...; None: the media as given)
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class MatchEvent:
    """A match of one piece of content against one or more banks."""

    event_id: str
    hits: Sequence[MatchHit]
    content_id: str | None = None
    tenant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as sent to webhooks."""
        return {
            "event_id": self.event_id,
            "type": "match",
            "content_id": self.content_id,
            "tenant": self.tenant,
            "matches": [asdict(hit) for hit in self.hits],
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What :func:`on_match` did: new review item ids and delivery job ids."""

    review_items: list[str]
    deliveries: list[str]


def add_rule(
    session: Session,
    *,
    action: ActionKind | str,
    bank: str | None = None,
    webhook_id: str | None = None,
    tenant: str | None = None,
    actor: Principal | None = None,
) -> ActionRule:
    """Add a rule: on a match in ``bank`` (None: any bank) run ``action``.

    For :attr:`ActionKind.WEBHOOK`, ``webhook_id`` names one webhook; None means every
    enabled webhook of the tenant whose bank filter accepts the bank.
    """
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    if actor.tenant is not None:
        tenant = actor.tenant
    try:
        kind = ActionKind(action) if isinstance(action, str) else action
    except ValueError:
        raise InputError(f"unknown action {action!r}") from None
    if bank is not None:
        _check_rule_bank(session, bank, tenant)
    if webhook_id is not None:
        if kind is not ActionKind.WEBHOOK:
            raise InputError("webhook_id is only valid for the webhook action")
        webhook = webhooks.get_webhook(session, webhook_id, actor=actor)
        if webhook.tenant != tenant:
            raise ConflictError("the webhook belongs to another tenant")
    rule = ActionRule(
        id=str(ULID()),
        tenant=tenant,
        bank=bank,
        action=kind.value,
        webhook_id=webhook_id,
        enabled=True,
        created_at=utcnow(),
    )
    session.add(rule)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="rule.create",
        target=("rule", rule.id),
        details={"bank": bank, "action": kind.value, "webhook_id": webhook_id},
        tenant=tenant,
    )
    return rule


def _check_rule_bank(session: Session, bank: str, tenant: str | None) -> None:
    """A tenant's rule may only name a bank that tenant can see (its own or a shared
    one); NotFoundError otherwise, worded like a missing bank. A rule without a tenant
    applies to calls that see every bank, so any name (also a future bank) is allowed.
    """
    if tenant is None:
        return
    owner = session.execute(select(BankRow.tenant).where(BankRow.name == bank)).one_or_none()
    if owner is None or owner[0] not in (None, tenant):
        raise NotFoundError(f"bank {bank!r} not found")


def delete_rule(session: Session, rule_id: str, *, actor: Principal | None = None) -> None:
    """Remove a rule."""
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    rule = session.get(ActionRule, rule_id)
    if rule is None:
        raise NotFoundError(f"no rule {rule_id!r}")
    require_tenant(actor, rule.tenant, write=True, what=f"rule {rule_id!r}")
    session.delete(rule)
    session.flush()
    audit.append(
        session, actor=actor, action="rule.delete", target=("rule", rule_id), tenant=rule.tenant
    )


def list_rules(session: Session, *, actor: Principal | None = None) -> list[dict[str, Any]]:
    """Rules visible to ``actor``."""
    actor = actor or Principal.cli()
    actor.require(Permission.WEBHOOK_ADMIN)
    query = select(ActionRule).where(tenant_clause(actor, ActionRule.tenant, include_shared=False))
    return [
        {
            "id": r.id,
            "tenant": r.tenant,
            "bank": r.bank,
            "action": r.action,
            "webhook_id": r.webhook_id,
            "enabled": r.enabled,
        }
        for r in session.execute(query.order_by(ActionRule.id)).scalars()
    ]


def on_match(
    session: Session,
    event: MatchEvent,
    *,
    actor: str | Principal = audit.CLI_ACTOR,
    max_attempts: int = jobs.DEFAULT_MAX_ATTEMPTS,
) -> ActionOutcome:
    """Apply the tenant's rules to ``event`` inside the caller's transaction.

    One review item per (event, bank) and one delivery per (event, webhook) at most; the
    match itself is audited (action ``match``).
    """
    banks = sorted({hit.bank for hit in event.hits})
    if not banks:
        _audit_match(session, event, banks, actor)
        return ActionOutcome([], [])
    rules = (
        session.execute(
            select(ActionRule)
            .where(
                ActionRule.enabled.is_(True),
                ActionRule.tenant.is_(None)
                if event.tenant is None
                else ActionRule.tenant == event.tenant,
                or_(ActionRule.bank.is_(None), ActionRule.bank.in_(banks)),
            )
            .order_by(ActionRule.id)
        )
        .scalars()
        .all()
    )
    review_banks: set[str] = set()
    webhook_ids: set[str] = set()
    any_webhook_banks: set[str] = set()
    for rule in rules:
        matched = banks if rule.bank is None else [rule.bank]
        if rule.action == ActionKind.ENQUEUE_REVIEW.value:
            review_banks.update(matched)
        elif rule.webhook_id is not None:
            hook = session.get(Webhook, rule.webhook_id)
            if hook is not None and any(webhooks.accepts(hook, bank) for bank in matched):
                webhook_ids.add(hook.id)
        else:
            any_webhook_banks.update(matched)
    if any_webhook_banks:
        tenant_hooks = session.execute(
            select(Webhook).where(
                Webhook.enabled.is_(True),
                Webhook.tenant.is_(None)
                if event.tenant is None
                else Webhook.tenant == event.tenant,
            )
        ).scalars()
        for hook in tenant_hooks:
            if any(webhooks.accepts(hook, bank) for bank in any_webhook_banks):
                webhook_ids.add(hook.id)

    review_ids = _enqueue_reviews(session, event, sorted(review_banks))
    deliveries = []
    payload = event.as_json()
    for webhook_id in sorted(webhook_ids):
        hook = session.get(Webhook, webhook_id)
        if hook is not None:
            deliveries.append(
                webhooks.enqueue_delivery(
                    session, hook, event.event_id, payload, max_attempts=max_attempts
                )
            )
    # last: the audit chain head stays locked until the caller commits
    _audit_match(session, event, banks, actor)
    return ActionOutcome(review_ids, deliveries)


def _audit_match(
    session: Session, event: MatchEvent, banks: list[str], actor: str | Principal
) -> None:
    audit.append(
        session,
        actor=actor,
        action="match",
        target=("content", event.content_id) if event.content_id else None,
        details={"event_id": event.event_id, "banks": banks, "hits": len(event.hits)},
        tenant=event.tenant,
    )


def _enqueue_reviews(session: Session, event: MatchEvent, banks: list[str]) -> list[str]:
    if not banks:
        return []
    existing = set(
        session.execute(
            select(ReviewItem.bank).where(
                ReviewItem.event_id == event.event_id, ReviewItem.bank.in_(banks)
            )
        ).scalars()
    )
    created = []
    for bank in banks:
        if bank in existing:
            continue
        hits = [asdict(hit) for hit in event.hits if hit.bank == bank]
        item = ReviewItem(
            id=str(ULID()),
            tenant=event.tenant,
            event_id=event.event_id,
            content_id=event.content_id,
            bank=bank,
            details=json.dumps({"matches": hits}, sort_keys=True),
            status=ReviewStatus.PENDING.value,
            created_at=utcnow(),
        )
        session.add(item)
        created.append(item.id)
    session.flush()
    return created


def review_queue(
    session: Session,
    *,
    actor: Principal | None = None,
    status: ReviewStatus = ReviewStatus.PENDING,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Review items visible to ``actor`` in ``status``, oldest first."""
    actor = actor or Principal.cli()
    actor.require(Permission.REVIEW)
    if not 1 <= limit <= 1000:
        raise InputError("limit must be between 1 and 1000")
    query = (
        select(ReviewItem)
        .where(
            ReviewItem.status == status.value,
            tenant_clause(actor, ReviewItem.tenant, include_shared=False),
        )
        .order_by(ReviewItem.created_at, ReviewItem.id)
        .limit(limit)
    )
    return [
        {
            "id": item.id,
            "tenant": item.tenant,
            "event_id": item.event_id,
            "content_id": item.content_id,
            "bank": item.bank,
            "details": json.loads(item.details),
            "status": item.status,
            "created_at": item.created_at.isoformat(),
        }
        for item in session.execute(query).scalars()
    ]


def _by(item: ReviewItem) -> str:
    return f" (decided by {item.decided_by})" if item.decided_by else ""


def decide(
    session: Session,
    item_id: str,
    decision: ReviewStatus,
    *,
    actor: Principal | None = None,
    facts: Mapping[str, Any] | None = None,
) -> str | None:
    """Confirm or reject a pending review item (audited as ``review.decide``).

    When the item's event is a recorded submission, the decision is also recorded on
    the submission (confirmed, or false positive) with ``facts``: what the reviewer
    viewed and concluded (see :mod:`tipline.services.reports.facts`; absent facts mean
    the file was not viewed). Returns that submission decision's id (None without a
    submission); a confirmed one can be reported.
    """
    actor = actor or Principal.cli()
    actor.require(Permission.REVIEW)
    if decision is ReviewStatus.PENDING:
        raise InputError("a decision is confirmed or rejected")
    review_facts = review_facts_from_json(dict(facts) if facts is not None else None)
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise NotFoundError(f"no review item {item_id!r}")
    require_tenant(actor, item.tenant, write=True, what=f"review item {item_id!r}")
    if item.status != ReviewStatus.PENDING.value:
        raise ConflictError(f"review item {item_id!r} is already {item.status}{_by(item)}")
    # first decision wins: a conditional UPDATE, so of two reviewers deciding at once
    # (each having read "pending") only one changes the row; the other gets a conflict
    won = session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item_id, ReviewItem.status == ReviewStatus.PENDING.value)
        .values(status=decision.value, decided_at=utcnow(), decided_by=actor.key_id)
        .execution_options(synchronize_session=False)
    )
    session.refresh(item)
    if getattr(won, "rowcount", 0) != 1:
        raise ConflictError(f"review item {item_id!r} is already {item.status}{_by(item)}")
    decision_id = None
    submission = session.get(SubmissionRow, item.event_id) if len(item.event_id) <= 26 else None
    if submission is not None and submission.tenant == item.tenant:
        kind = (
            DecisionKind.CONFIRMED
            if decision is ReviewStatus.CONFIRMED
            else DecisionKind.FALSE_POSITIVE
        )
        decision_id = sub_store.add_decision(
            session,
            item.tenant,
            submission.id,
            kind,
            decided_by=actor.key_id,
            reason=f"review item {item_id} ({item.bank})",
            facts=review_facts.as_json(),
        ).id
        if kind is DecisionKind.FALSE_POSITIVE:
            discard_false_positive_media(session, submission, actor=actor, decision_id=decision_id)
    audit.append(
        session,
        actor=actor,
        action="review.decide",
        target=("review_item", item_id),
        details={
            "decision": decision.value,
            "bank": item.bank,
            "submission_decision": decision_id,
            "viewed": review_facts.viewed,
        },
        tenant=item.tenant,
    )
    return decision_id


def discard_false_positive_media(
    session: Session, submission: SubmissionRow, *, actor: Principal, decision_id: str
) -> list[str]:
    """After a false-positive decision, erase the submission's media kept only for
    review (in no report, no active legal hold), in the caller's transaction: there is
    nothing to report or preserve. Kept while another review item of the submission
    (another bank) is pending or confirmed. Returns the purged vault item ids."""
    open_items = session.execute(
        select(ReviewItem.id).where(
            ReviewItem.event_id == submission.id,
            ReviewItem.status != ReviewStatus.REJECTED.value,
        )
    ).first()
    if open_items is not None:
        return []
    purged, _held = vault.purge_unreported_media(
        session,
        submission.id,
        tenant=submission.tenant,
        actor=actor,
        reason=f"false positive (decision {decision_id})",
    )
    return purged
