"""One review item as its page shows it: why it matched, what a report needs, who holds
it, what the reviewer revealed. Opening it claims it (when free) and is audited."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.services import audit
from tipline.services.auth import Principal
from tipline.services.review.media import (
    Exposure,
    MediaRef,
    exposure_in,
    media_ref,
    media_row,
    revealed_level,
)
from tipline.services.review.queue import (
    Lease,
    claim_in,
    classification_of,
    lease_of,
    visible_item,
)
from tipline.services.review.two_person import FirstConfirmation, first_of, unmatched
from tipline.services.submissions import Submission
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.submissions import MatchRecordRow, SubmissionRow
from tipline.store.web import ReviewLeaseRow

#: signal types that only videos have
VIDEO_SIGNALS = frozenset({"vpdq", "video_md5", "video_sha256"})


@dataclass(frozen=True, slots=True)
class MatchLine:
    """One matched bank entry: ``distance`` in the signal type's unit (bits for PDQ;
    0 for an exact digest)."""

    bank: str
    entry_id: str | None
    signal_type: str
    distance: int
    labels: tuple[str, ...]
    #: the query's variant that matched (``trim``...; None: the media as given)
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class ItemView:
    """Everything the item page shows."""

    id: str
    tenant: str | None
    bank: str
    status: str
    event_id: str
    content_id: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    matches: list[MatchLine]
    classification: str | None
    submission: Submission | None
    media: MediaRef | None
    lease: Lease
    escalated: bool
    escalation_note: str | None
    #: a video (shown as a contact sheet of frames, never played)
    video: bool
    #: the level to show now: what the reviewer revealed, else their default
    level: int
    #: highest level the reviewer revealed (-1: none)
    revealed: int
    exposure: Exposure
    #: matched no bank: sent to review with this note (see :mod:`.flag`)
    flag_note: str | None = None
    #: the two-person rule: the first confirmation, when one was given
    first: FirstConfirmation | None = None


def _matches(session: Session, item_details: str, item_bank: str, event_id: str) -> list[MatchLine]:
    hits: list[dict[str, Any]] = json.loads(item_details).get("matches", [])
    labels: dict[tuple[str, str], tuple[str, ...]] = {}
    if len(event_id) <= 26:
        rows = session.execute(
            select(MatchRecordRow.bank, MatchRecordRow.entry_id, MatchRecordRow.labels).where(
                MatchRecordRow.submission_id == event_id, MatchRecordRow.bank == item_bank
            )
        )
        for bank, entry, found in rows:
            labels[(bank, entry)] = tuple(found or ())
    return [
        MatchLine(
            bank=str(hit.get("bank", item_bank)),
            entry_id=hit.get("entry_id"),
            signal_type=str(hit.get("signal_type", "?")),
            distance=int(hit.get("distance", 0)),
            labels=labels.get((str(hit.get("bank")), str(hit.get("entry_id"))), ()),
            variant=hit.get("variant") if isinstance(hit.get("variant"), str) else None,
        )
        for hit in sorted(hits, key=lambda h: int(h.get("distance", 0)))
    ]


def open_item(
    sessions: sessionmaker[Session],
    who: Principal,
    item_id: str,
    *,
    lease_seconds: int,
    default_level: int,
    daily_limit: int,
    now: datetime | None = None,
) -> ItemView:
    """The item for its page; claims it for ``who`` when pending and free. Audited as
    ``review.view``. NotFoundError for an unknown or another tenant's item."""
    now = now or utcnow()
    with transaction(sessions) as session:
        item = visible_item(session, who, item_id)
        first = first_of(session, item_id)
        if first is not None and first.actor == who.key_id:
            # the two-person rule: whoever confirmed first does not hold the item back
            # from the second reviewer by opening it again
            lease = lease_of(session, who, item_id, now)
        else:
            lease = claim_in(session, who, item, lease_seconds=lease_seconds, now=now)
        state = session.get(ReviewLeaseRow, item_id)
        submission = None
        if len(item.event_id) <= 26:
            row = session.get(SubmissionRow, item.event_id)
            if row is not None and row.tenant == item.tenant:
                submission = Submission.of(row)
        matches = _matches(session, item.details, item.bank, item.event_id)
        revealed = revealed_level(session, who, item_id)
        media = media_ref(media_row(session, item))
        seen = exposure_in(session, who, daily_limit, now)
        view = ItemView(
            id=item.id,
            tenant=item.tenant,
            bank=item.bank,
            status=item.status,
            event_id=item.event_id,
            content_id=item.content_id,
            created_at=item.created_at,
            decided_at=item.decided_at,
            decided_by=item.decided_by,
            matches=matches,
            classification=classification_of([lbl for m in matches for lbl in m.labels]),
            submission=submission,
            media=media,
            lease=lease,
            escalated=state is not None and state.escalated_at is not None,
            escalation_note=state.escalation_note if state is not None else None,
            video=any(m.signal_type in VIDEO_SIGNALS for m in matches),
            level=max(revealed, min(default_level, 1)),
            revealed=revealed,
            exposure=seen,
            flag_note=json.loads(item.details).get("flag") if unmatched(item) else None,
            first=first,
        )
        audit.append(
            session,
            actor=who,
            action="review.view",
            target=("review_item", item_id),
            details={"claimed": lease.mine, "holder": lease.holder},
            tenant=item.tenant,
        )
    return view
