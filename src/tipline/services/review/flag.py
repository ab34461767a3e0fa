"""Sending a recorded submission to review although it matched no bank (a user's
report of the content, a moderator's suspicion): a review item with no bank and no
match, shown in the queue as "no bank (flagged)" with the note. Media kept for the
submission (see :mod:`tipline.services.vault`) is shown as for any item. Such items
fall under the optional two-person rule (:mod:`.two_person`)."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal, require_tenant
from tipline.services.review.two_person import NO_BANK
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import ReviewItem
from tipline.store.submissions import SubmissionRow

MAX_NOTE_CHARS = 2000


def flag_submission(
    sessions: sessionmaker[Session], who: Principal, submission_id: str, *, note: str
) -> str:
    """Queue ``submission_id`` for review without a bank match; returns the review item's
    id (audited as ``review.flag``). ConflictError when it was flagged before."""
    who.require(Permission.SUBMIT)
    note = note.strip()
    if not note or len(note) > MAX_NOTE_CHARS or not note.isprintable():
        raise InputError(f"a note of 1-{MAX_NOTE_CHARS} printable characters is required")
    with transaction(sessions) as session:
        row = session.get(SubmissionRow, submission_id) if len(submission_id) <= 26 else None
        if row is None:
            raise NotFoundError(f"no submission {submission_id!r}")
        require_tenant(who, row.tenant, write=True, what=f"submission {submission_id!r}")
        taken = session.scalar(
            select(ReviewItem.id).where(
                ReviewItem.event_id == submission_id, ReviewItem.bank == NO_BANK
            )
        )
        if taken is not None:
            raise ConflictError(f"submission {submission_id} was already flagged: item {taken}")
        item = ReviewItem(
            id=str(ULID()),
            tenant=row.tenant,
            event_id=submission_id,
            content_id=row.content_id,
            bank=NO_BANK,
            details=json.dumps({"matches": [], "flag": note}, sort_keys=True),
            status="pending",
            created_at=utcnow(),
        )
        session.add(item)
        session.flush()
        audit.append(
            session,
            actor=who,
            action="review.flag",
            target=("review_item", item.id),
            details={"submission": submission_id, "note": note},
            tenant=row.tenant,
        )
        return item.id
