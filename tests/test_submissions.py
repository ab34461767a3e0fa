"""services/submissions: one transaction records a submission, its match history and the
action rules; the batch form records many items at once; nothing is left half-written
when a step fails. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy.orm import Session

from tipline.errors import NotFoundError
from tipline.services import actions, audit, submissions
from tipline.services.auth import Principal, Role
from tipline.services.database import Database, in_transaction, open_database
from tipline.services.matching.match import Match
from tipline.signals.base import Signal

PDQ = "f" * 64
ACME = Principal("key-acme", Role.ADMIN, "acme")
OTHER = Principal("key-other", Role.ADMIN, "other")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


def _match(bank: str, entry: str, *, suppressed: bool = False) -> Match:
    return Match(
        bank=bank,
        entry_id=entry,
        signal_type="pdq",
        distance=3,
        labels=("l",),
        query_value=PDQ,
        suppressed_by="allow/x" if suppressed else None,
    )


def _review_items(db: Database, who: Principal) -> list[dict[str, object]]:
    return in_transaction(db.sessions, actions.review_queue, actor=who)


def test_match_and_record_writes_all_of_it_in_one_transaction(db: Database) -> None:
    in_transaction(db.sessions, actions.add_rule, action="enqueue_review", actor=ACME)
    facts = submissions.SubmissionFacts("c-1", uploader_account="u", metadata={"k": "v"})
    signals = [Signal("pdq", PDQ), Signal("vpdq", "frames...")]
    seen: list[Session] = []

    def find(session: Session) -> Sequence[Match]:
        seen.append(session)
        return [_match("known", "e1"), _match("known", "e2", suppressed=True)]

    recorded = submissions.match_and_record(db.sessions, ACME, signals, find, submission=facts)

    assert len(seen) == 1 and recorded.submission_id is not None
    stored = submissions.get_submission(db.sessions, ACME, recorded.submission_id)
    assert stored.content_id == "c-1" and stored.metadata == {"k": "v"}
    assert stored.signals == [{"type": "pdq", "value": PDQ}]  # vPDQ frame lists not kept
    history = submissions.list_matches(db.sessions, ACME, submission_id=stored.id)
    assert sorted(h.entry_id for h in history) == ["e1", "e2"]  # suppressed kept in history
    items = _review_items(db, ACME)
    assert [i["event_id"] for i in items] == [stored.id]
    assert [m["entry_id"] for m in items[0]["details"]["matches"]] == ["e1"]  # type: ignore[index]
    # another tenant sees none of it
    with pytest.raises(NotFoundError):
        submissions.get_submission(db.sessions, OTHER, stored.id)
    assert submissions.list_matches(db.sessions, OTHER) == []


def test_a_failing_step_leaves_nothing_behind(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def find(session: Session) -> Sequence[Match]:
        raise RuntimeError("index gone")

    facts = submissions.SubmissionFacts("c-2")
    with pytest.raises(RuntimeError):
        submissions.match_and_record(
            db.sessions, ACME, [Signal("pdq", PDQ)], find, submission=facts
        )
    assert submissions.list_submissions(db.sessions, ACME) == []

    # fault injection: the action step fails after the submission and history rows
    # were written
    def broken(*args: object, **kwargs: object) -> actions.ActionOutcome:
        raise RuntimeError("rules table locked")

    monkeypatch.setattr(actions, "on_match", broken)
    with pytest.raises(RuntimeError):
        submissions.match_and_record(
            db.sessions, ACME, [], lambda s: [_match("known", "e1")], submission=facts
        )
    assert submissions.list_submissions(db.sessions, ACME) == []
    assert submissions.list_matches(db.sessions, ACME) == []


def test_batch_form_records_many_items_and_a_retried_event_adds_nothing(db: Database) -> None:
    in_transaction(db.sessions, actions.add_rule, action="enqueue_review")
    cli = Principal.cli()
    outcomes = [
        submissions.Outcome(
            (), [_match("known", f"e{i}")], event_id=f"scan:s:{i}", content_id=f"f{i}"
        )
        for i in range(3)
    ] + [submissions.Outcome((), [])]  # nothing to record for an item without matches

    ids = in_transaction(db.sessions, submissions.record_batch, cli, outcomes)
    assert ids == [None, None, None, None]
    assert len(submissions.list_matches(db.sessions, cli)) == 3
    items = _review_items(db, cli)
    assert sorted(str(i["event_id"]) for i in items) == ["scan:s:0", "scan:s:1", "scan:s:2"]
    assert {i["content_id"] for i in items} == {"f0", "f1", "f2"}

    # the same events again (a retried batch): no second review item
    in_transaction(db.sessions, submissions.record_batch, cli, outcomes[:1])
    assert len(_review_items(db, cli)) == 3
    with db.sessions() as session:
        matches = [r for r in audit.recent(session, limit=50) if r.action == "match"]
    assert len(matches) == 4


def test_create_submission_and_decisions_are_audited(db: Database) -> None:
    facts = submissions.SubmissionFacts("c-3", upload_ip="192.0.2.7")
    created = submissions.create_submission(
        db.sessions, ACME, facts, [{"type": "pdq", "value": PDQ}]
    )
    decision = submissions.add_decision(
        db.sessions, ACME, created.id, submissions.DecisionKind.CONFIRMED, reason="seen"
    )
    assert [d.id for d in submissions.list_decisions(db.sessions, ACME, created.id)] == [
        decision.id
    ]
    with pytest.raises(NotFoundError):
        submissions.add_decision(db.sessions, OTHER, created.id, submissions.DecisionKind.DISMISSED)
    with db.sessions() as session:
        actions_seen = [(r.action, r.target_id) for r in audit.recent(session, limit=10)]
    assert ("submission.create", created.id) in actions_seen
    assert ("submission.decide", created.id) in actions_seen
