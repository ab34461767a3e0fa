"""Feedback to a source about its entries: our reviewers' decisions become votes.

A confirmed decision on a submission that matched an entry an exchange brought in owes
the source an up vote on the fingerprint that matched; a false-positive decision owes a
down vote (the failure HMA never reports back, facebook/ThreatExchange#1614), and so does
a hash added to an allow bank (a tenant's known false positives) that one of the
exchange's entries carries. Votes are collected from the decisions and allow banks into
``exchange_feedback`` (one row per entry, fingerprint and vote, so a vote is owed once
however often it is collected), then sent by the adapter; a vote the source refuses is
kept as failed with its message and tried again on later syncs, up to
:data:`MAX_ATTEMPTS`. Only adapters with ``send_vote`` (NCMEC) take feedback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import and_, func, select
from sqlalchemy.orm import aliased

from tipline.errors import ExchangeError, SourceUnavailableError
from tipline.services import audit
from tipline.services.database import Database
from tipline.services.exchanges.configure import get_row
from tipline.store.bank_tables import BankEntryRow, BankRow, BankSignalRow
from tipline.store.db import transaction
from tipline.store.exchanges import ExchangeFeedbackRow, ExchangeRow
from tipline.store.submissions import DecisionKind, DecisionRow, MatchRecordRow

#: tipline signal type -> the source's fingerprint name (NCMEC)
FINGERPRINTS = {"pdq": "PDQ", "md5": "MD5", "sha1": "SHA1", "video_md5": "MD5"}
#: decisions that owe a vote, and which
VOTES = {DecisionKind.CONFIRMED.value: "up", DecisionKind.FALSE_POSITIVE.value: "down"}
MAX_ATTEMPTS = 5
#: the ``decision_id`` of a vote owed because of an allow-bank entry (+ its primary key)
ALLOW_PREFIX = "allow:"


@runtime_checkable
class VoteSender(Protocol):
    """An adapter that takes feedback."""

    def send_vote(self, entry_id: str, fingerprint: str, vote: str) -> None: ...


@dataclass(slots=True)
class FeedbackReport:
    """What one feedback round did."""

    collected: int = 0
    sent: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        """JSON form."""
        return {"collected": self.collected, "sent": self.sent, "failed": self.failed}


def _banks(row: ExchangeRow) -> list[str]:
    routed = dict(row.config.get("banks") or {})
    return sorted({row.bank, *(str(b) for b in routed.values())})


def _allowed_query(name: str) -> Any:
    """(allow-bank entry pk, signal type, exchange entry id) for every signal that an
    allow bank (a tenant's known false positives) shares with an entry exchange
    ``name`` brought in: each owes the source a down vote."""
    allow_signal = aliased(BankSignalRow)
    allow_entry = aliased(BankEntryRow)
    ours = aliased(BankSignalRow)
    our_entry = aliased(BankEntryRow)
    return (
        select(allow_entry.id, allow_signal.type, our_entry.entry_id)
        .join(allow_entry, allow_entry.id == allow_signal.entry_pk)
        .join(BankRow, and_(BankRow.id == allow_entry.bank_id, BankRow.is_allow_bank))
        .join(ours, and_(ours.type == allow_signal.type, ours.value == allow_signal.value))
        .join(our_entry, our_entry.id == ours.entry_pk)
        .where(our_entry.source == f"exchange:{name}", allow_entry.disabled.is_(False))
    )


def collect(db: Database, name: str) -> int:
    """Turn decisions made since the last collected one into owed votes; the count."""
    now = datetime.now(UTC)
    with transaction(db.sessions) as s:
        row = get_row(s, name, for_update=True)
        since = s.execute(
            select(func.max(ExchangeFeedbackRow.decision_id)).where(
                ExchangeFeedbackRow.exchange_id == row.id,
                ExchangeFeedbackRow.decision_id.not_like(f"{ALLOW_PREFIX}%"),
            )
        ).scalar_one()
        query = (
            select(
                DecisionRow.id,
                DecisionRow.decision,
                MatchRecordRow.entry_id,
                MatchRecordRow.signal_type,
            )
            .join(MatchRecordRow, MatchRecordRow.submission_id == DecisionRow.submission_id)
            .join(BankRow, BankRow.name == MatchRecordRow.bank)
            .join(
                BankEntryRow,
                and_(
                    BankEntryRow.bank_id == BankRow.id,
                    BankEntryRow.entry_id == MatchRecordRow.entry_id,
                ),
            )
            .where(
                MatchRecordRow.bank.in_(_banks(row)),
                BankEntryRow.source == f"exchange:{name}",
                DecisionRow.decision.in_(list(VOTES)),
            )
            .order_by(DecisionRow.id)
        )
        if since is not None:
            query = query.where(DecisionRow.id >= since)
        owed: dict[tuple[str, str, str], str] = {}
        for decision_id, decision, entry_id, signal_type in s.execute(query):
            fingerprint = FINGERPRINTS.get(str(signal_type))
            if fingerprint is not None:
                owed.setdefault((str(entry_id), fingerprint, VOTES[decision]), str(decision_id))
        for allow_pk, signal_type, entry_id in s.execute(_allowed_query(name)):
            fingerprint = FINGERPRINTS.get(str(signal_type))
            if fingerprint is not None:
                owed.setdefault((str(entry_id), fingerprint, "down"), f"{ALLOW_PREFIX}{allow_pk}")
        existing = {
            (e, f, v)
            for e, f, v in s.execute(
                select(
                    ExchangeFeedbackRow.entry_id,
                    ExchangeFeedbackRow.fingerprint,
                    ExchangeFeedbackRow.vote,
                ).where(ExchangeFeedbackRow.exchange_id == row.id)
            )
        }
        fresh = [k for k in owed if k not in existing]
        s.add_all(
            ExchangeFeedbackRow(
                exchange_id=row.id,
                entry_id=entry_id,
                fingerprint=fingerprint,
                vote=vote,
                decision_id=owed[(entry_id, fingerprint, vote)],
                status="pending",
                attempts=0,
                created_at=now,
            )
            for entry_id, fingerprint, vote in fresh
        )
    return len(fresh)


def send(db: Database, name: str, sender: VoteSender, *, actor: str) -> FeedbackReport:
    """Send every owed vote (pending, or failed fewer than MAX_ATTEMPTS times). An
    unreachable source raises ExchangeError (the rest waits for the next sync); a vote
    the source refuses is marked failed with its message."""
    report = FeedbackReport()
    with db.sessions() as s:
        exchange_id = get_row(s, name).id
        owed = s.execute(
            select(
                ExchangeFeedbackRow.id,
                ExchangeFeedbackRow.entry_id,
                ExchangeFeedbackRow.fingerprint,
                ExchangeFeedbackRow.vote,
            )
            .where(
                ExchangeFeedbackRow.exchange_id == exchange_id,
                ExchangeFeedbackRow.status.in_(["pending", "failed"]),
                ExchangeFeedbackRow.attempts < MAX_ATTEMPTS,
            )
            .order_by(ExchangeFeedbackRow.id)
        ).all()
    sent: list[dict[str, Any]] = []
    try:
        for vote_id, entry_id, fingerprint, vote in owed:
            error: str | None = None
            try:
                sender.send_vote(entry_id, fingerprint, vote)
            except SourceUnavailableError:
                raise  # the source is unreachable: stop, the rest stays owed
            except ExchangeError as exc:
                error = exc.message
            with transaction(db.sessions) as s:
                fb = s.get(ExchangeFeedbackRow, vote_id)
                assert fb is not None
                fb.attempts += 1
                if error is None:
                    fb.status, fb.sent_at, fb.last_error = "sent", datetime.now(UTC), None
                    report.sent += 1
                    sent.append({"entry": entry_id, "fingerprint": fingerprint, "vote": vote})
                else:
                    fb.status, fb.last_error = "failed", error[:2000]
                    report.failed += 1
    finally:
        if report.sent or report.failed:
            with transaction(db.sessions) as s:
                audit.append(
                    s,
                    actor=actor,
                    action="exchange.feedback",
                    target=("exchange", name),
                    details={**report.as_json(), "votes": sent[:200]},
                )
    return report
