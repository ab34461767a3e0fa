"""The optional two-person rule (``TIPLINE_REVIEW_TWO_PERSON_UNMATCHED``): an item that
matched no bank (sent to review by :mod:`.flag`, not by a hash match) is confirmed only
when two different reviewers confirm it.

The first confirmation is recorded (who, when, what they concluded) and audited as
``review.confirm_first``; the item stays pending, released, marked in the queue as
waiting for a second reviewer. The same reviewer confirming again is refused and
audited (``review.confirm_refused``). A different reviewer's confirmation decides the
item (``review.decide``, then ``review.confirm_second`` naming the first); the report
says the file was viewed when either of them revealed it. A false positive by anyone
still rejects the item. Two reviewers giving a first confirmation at the same moment:
one insert wins (the database's primary key), the other becomes the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tipline.services.auth import Principal
from tipline.store.jobs import ReviewItem
from tipline.store.web import ReviewFirstConfirmationRow

#: the ``bank`` of a review item that matched no bank (bank names are never empty)
NO_BANK = ""


@dataclass(frozen=True, slots=True)
class FirstConfirmation:
    """The first of the two confirmations."""

    actor: str
    at: datetime
    facts: dict[str, Any]

    @property
    def classification(self) -> str | None:
        """What the first reviewer classified the file as."""
        value = self.facts.get("classification")
        return str(value) if value else None


def unmatched(item: ReviewItem) -> bool:
    """True for an item that matched no bank."""
    return item.bank == NO_BANK


def first_of(session: Session, item_id: str) -> FirstConfirmation | None:
    """The first confirmation of ``item_id``, if one was given."""
    row = session.scalar(
        select(ReviewFirstConfirmationRow)
        .where(ReviewFirstConfirmationRow.item_id == item_id)
        .execution_options(populate_existing=True)
    )
    return FirstConfirmation(row.actor, row.at, dict(row.facts)) if row is not None else None


def firsts_of(session: Session, item_ids: list[str]) -> dict[str, FirstConfirmation]:
    """The first confirmations of those of ``item_ids`` that have one."""
    if not item_ids:
        return {}
    rows = session.scalars(
        select(ReviewFirstConfirmationRow).where(ReviewFirstConfirmationRow.item_id.in_(item_ids))
    )
    return {r.item_id: FirstConfirmation(r.actor, r.at, dict(r.facts)) for r in rows}


def claim_first(
    session: Session, who: Principal, item: ReviewItem, facts: dict[str, Any], now: datetime
) -> tuple[FirstConfirmation, bool]:
    """Record ``who``'s confirmation as the first unless one exists (never fails on a
    concurrent insert); returns the first confirmation as it stands afterwards and True
    when this call recorded it."""
    before = first_of(session, item.id)
    if before is not None:
        return before, False
    values = {
        "item_id": item.id,
        "actor": who.key_id,
        "tenant": item.tenant,
        "at": now,
        "facts": facts,
    }
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            postgresql.insert(ReviewFirstConfirmationRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["item_id"])
        )
    else:
        session.execute(
            sqlite.insert(ReviewFirstConfirmationRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["item_id"])
        )
    found = first_of(session, item.id)
    assert found is not None
    return found, found.actor == who.key_id
