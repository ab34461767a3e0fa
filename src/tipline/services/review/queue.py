"""The review queue as people work it: priority order, filters, and leases.

Priority: escalated items first, then the bank's severity (a setting, higher first),
then the industry classification of the matched entries (A1, A2, B1, B2, none; from
the labels recorded with the match), then age (oldest first).

A *lease* reserves a pending item for one reviewer until it expires: opening an item
claims it when nobody else holds a live lease, and a decision is refused while
another reviewer holds one. Claiming is one conditional UPDATE (after an insert that
does nothing when the row exists), so two reviewers racing for an item never both win.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal, require_tenant, tenant_clause
from tipline.services.review import two_person
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import ReviewItem
from tipline.store.submissions import MatchRecordRow
from tipline.store.web import ReviewLeaseRow

#: industry classification labels, most severe first
CLASSIFICATIONS: tuple[str, ...] = ("A1", "A2", "B1", "B2")
_RANK = {name: len(CLASSIFICATIONS) - i for i, name in enumerate(CLASSIFICATIONS)}
#: pending items read to sort one queue page (the oldest first)
MAX_SCANNED = 5000


class QueueStatus(enum.Enum):
    """What a queue page lists."""

    PENDING = "pending"
    ESCALATED = "escalated"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds an item (None: nobody) and until when; ``mine`` for the asker."""

    holder: str | None
    expires_at: datetime | None
    mine: bool


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One row of the queue page."""

    id: str
    tenant: str | None
    bank: str
    content_id: str | None
    status: str
    created_at: datetime
    severity: int
    classification: str | None
    best_distance: int | None
    signal_types: tuple[str, ...]
    escalated: bool
    lease: Lease
    #: the two-person rule: who gave the first confirmation (None: nobody yet)
    first_by: str | None = None


def classification_of(labels: Sequence[str]) -> str | None:
    """The most severe industry classification among ``labels`` (None without one)."""
    found = [label.strip().upper() for label in labels if label.strip().upper() in _RANK]
    return max(found, key=lambda c: _RANK[c]) if found else None


def _lease_of(row: ReviewLeaseRow | None, who: Principal, now: datetime) -> Lease:
    if row is None or row.holder is None or row.expires_at is None or row.expires_at <= now:
        return Lease(None, None, False)
    return Lease(row.holder, row.expires_at, row.holder == who.key_id)


def _classifications(session: Session, items: Sequence[ReviewItem]) -> dict[str, str | None]:
    """Item id -> classification of its matched entries' labels."""
    by_event = {(i.event_id, i.bank): i.id for i in items if len(i.event_id) <= 26}
    out: dict[str, str | None] = {i.id: None for i in items}
    events = sorted({event for event, _ in by_event})
    for start in range(0, len(events), 500):
        rows = session.execute(
            select(MatchRecordRow.submission_id, MatchRecordRow.bank, MatchRecordRow.labels).where(
                MatchRecordRow.submission_id.in_(events[start : start + 500])
            )
        )
        labels: dict[str, list[str]] = {}
        for submission_id, bank, found in rows:
            item_id = by_event.get((str(submission_id), bank))
            if item_id is not None:
                labels.setdefault(item_id, []).extend(found or [])
        for item_id, found in labels.items():
            out[item_id] = classification_of(found)
    return out


def list_queue(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    status: QueueStatus = QueueStatus.PENDING,
    bank: str | None = None,
    tenant: str | None = None,
    severity: Mapping[str, int] | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[QueueEntry]:
    """Items visible to ``who`` in ``status``, highest priority first (decided items:
    newest decision first)."""
    who.require(Permission.REVIEW)
    if not 1 <= limit <= 1000:
        raise InputError("limit must be between 1 and 1000")
    now = now or utcnow()
    severity = severity or {}
    stored = QueueStatus.PENDING.value if status is QueueStatus.ESCALATED else status.value
    query = select(ReviewItem).where(
        ReviewItem.status == stored, tenant_clause(who, ReviewItem.tenant, include_shared=False)
    )
    if bank:
        query = query.where(ReviewItem.bank == bank)
    if tenant:
        query = query.where(ReviewItem.tenant == tenant)
    if stored == QueueStatus.PENDING.value:
        query = query.order_by(ReviewItem.created_at, ReviewItem.id).limit(MAX_SCANNED)
    else:
        query = query.order_by(ReviewItem.decided_at.desc(), ReviewItem.id.desc()).limit(limit)
    with sessions() as session:
        items = list(session.execute(query).scalars())
        ids = [i.id for i in items]
        leases: dict[str, ReviewLeaseRow] = {}
        firsts: dict[str, two_person.FirstConfirmation] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in session.scalars(
                select(ReviewLeaseRow).where(ReviewLeaseRow.item_id.in_(chunk))
            ):
                leases[row.item_id] = row
            firsts.update(two_person.firsts_of(session, chunk))
        classes = _classifications(session, items)
    out = []
    for item in items:
        lease_row = leases.get(item.id)
        escalated = lease_row is not None and lease_row.escalated_at is not None
        if status is QueueStatus.ESCALATED and not escalated:
            continue
        hits = json.loads(item.details).get("matches", [])
        distances = [int(h["distance"]) for h in hits if isinstance(h.get("distance"), int)]
        out.append(
            QueueEntry(
                id=item.id,
                tenant=item.tenant,
                bank=item.bank,
                content_id=item.content_id,
                status="escalated" if escalated and item.status == "pending" else item.status,
                created_at=item.created_at,
                severity=int(severity.get(item.bank, 0)),
                classification=classes.get(item.id),
                best_distance=min(distances) if distances else None,
                signal_types=tuple(sorted({str(h.get("signal_type")) for h in hits})),
                escalated=escalated,
                lease=_lease_of(lease_row, who, now),
                first_by=firsts[item.id].actor if item.id in firsts else None,
            )
        )
    if stored == QueueStatus.PENDING.value:
        out.sort(
            key=lambda e: (
                not e.escalated,
                -e.severity,
                -_RANK.get(e.classification or "", 0),
                e.created_at,
                e.id,
            )
        )
    return out[:limit]


def _ensure_row(session: Session, item_id: str) -> None:
    """Insert an empty lease row for ``item_id`` unless one exists (never fails on a
    concurrent insert: ON CONFLICT DO NOTHING on both backends)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            postgresql.insert(ReviewLeaseRow)
            .values(item_id=item_id)
            .on_conflict_do_nothing(index_elements=["item_id"])
        )
    else:
        session.execute(
            sqlite.insert(ReviewLeaseRow)
            .values(item_id=item_id)
            .on_conflict_do_nothing(index_elements=["item_id"])
        )


def visible_item(session: Session, who: Principal, item_id: str) -> ReviewItem:
    """The review item, when ``who`` may work on it (NotFoundError otherwise, also for
    another tenant's item: existence is not revealed)."""
    who.require(Permission.REVIEW)
    item = session.get(ReviewItem, item_id) if len(item_id) <= 26 else None
    if item is None:
        raise NotFoundError(f"no review item {item_id!r}")
    require_tenant(who, item.tenant, write=True, what=f"review item {item_id!r}")
    return item


def lease_of(session: Session, who: Principal, item_id: str, now: datetime) -> Lease:
    """The lease on ``item_id`` as it stands, without claiming it."""
    return _lease_of(session.get(ReviewLeaseRow, item_id, populate_existing=True), who, now)


def claim_in(
    session: Session, who: Principal, item: ReviewItem, *, lease_seconds: int, now: datetime
) -> Lease:
    """Claim (or renew) ``item`` for ``who`` in the caller's transaction, when nobody
    else holds a live lease; returns the lease as it stands afterwards."""
    if item.status != "pending":
        return Lease(None, None, False)
    _ensure_row(session, item.id)
    session.execute(
        update(ReviewLeaseRow)
        .where(
            ReviewLeaseRow.item_id == item.id,
            or_(
                ReviewLeaseRow.holder.is_(None),
                ReviewLeaseRow.holder == who.key_id,
                ReviewLeaseRow.expires_at.is_(None),
                ReviewLeaseRow.expires_at <= now,
            ),
        )
        .values(holder=who.key_id, expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    row = session.get(ReviewLeaseRow, item.id, populate_existing=True)
    return _lease_of(row, who, now)


def claim(
    sessions: sessionmaker[Session],
    who: Principal,
    item_id: str,
    *,
    lease_seconds: int,
    now: datetime | None = None,
) -> Lease:
    """Claim a pending item for ``who`` (audited as ``review.claim`` when won)."""
    now = now or utcnow()
    with transaction(sessions) as session:
        item = visible_item(session, who, item_id)
        lease = claim_in(session, who, item, lease_seconds=lease_seconds, now=now)
        if lease.mine:
            audit.append(
                session,
                actor=who,
                action="review.claim",
                target=("review_item", item_id),
                details={"until": lease.expires_at.isoformat() if lease.expires_at else None},
                tenant=item.tenant,
            )
        return lease


def release_in(session: Session, who: Principal, item_id: str) -> bool:
    """Drop ``who``'s lease on ``item_id`` (caller's transaction); True when held."""
    result = session.execute(
        update(ReviewLeaseRow)
        .where(ReviewLeaseRow.item_id == item_id, ReviewLeaseRow.holder == who.key_id)
        .values(holder=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release(sessions: sessionmaker[Session], who: Principal, item_id: str) -> bool:
    """Give an item back to the queue (audited as ``review.release`` when held)."""
    with transaction(sessions) as session:
        item = visible_item(session, who, item_id)
        held = release_in(session, who, item_id)
        if held:
            audit.append(
                session,
                actor=who,
                action="review.release",
                target=("review_item", item_id),
                tenant=item.tenant,
            )
        return held
