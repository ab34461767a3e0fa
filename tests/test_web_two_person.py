"""The optional two-person rule for review items that matched no bank, against a real
``tipline serve`` (SQLite): a platform flags a recorded submission for review over the
API; under ``TIPLINE_REVIEW_TWO_PERSON_UNMATCHED`` the first reviewer's confirmation
waits (the queue and the item say so), the same reviewer cannot give the second, an API
client cannot confirm it directly, and a different reviewer's confirmation decides it;
everything audited. Without the rule one confirmation decides. Two reviewers confirming
at the same moment (two threads, SQLite and PostgreSQL) end with exactly one first and
one second confirmation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from _web_seed import settings_for
from _web_server import WebServer, hidden, web_server
from tipline.errors import ConflictError
from tipline.services import submissions
from tipline.services.auth import Principal, Role, create_key
from tipline.services.database import open_database
from tipline.services.review import decisions, flag
from tipline.store.audit import AuditRecord
from tipline.store.db import transaction
from tipline.store.jobs import ReviewItem

PDQ = "f" * 64


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with web_server(
        tmp_path_factory.mktemp("two-person"), count=1, REVIEW_TWO_PERSON_UNMATCHED="true"
    ) as srv:
        yield srv


def _key(web: WebServer, role: Role) -> str:
    with transaction(web.db.sessions) as s:
        return create_key(s, name=f"{role.value}-key", role=role, tenant="acme").secret


def _api(web: WebServer, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=web.base_url, headers={"X-API-Key": secret}, timeout=30, trust_env=False
    )


def _audit(web: WebServer, action: str) -> list[tuple[str, dict[str, Any]]]:
    with web.db.sessions() as s:
        rows = s.scalars(
            select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
        )
        return [(r.actor, json.loads(r.details) if r.details else {}) for r in rows]


def _confirm(client: httpx.Client, item_id: str, cls: str) -> httpx.Response:
    page = client.get(f"/web/review/{item_id}")
    assert page.status_code == 200, page.text
    return client.post(
        f"/web/review/{item_id}/decide",
        data={"csrf": hidden(page.text, "csrf"), "verdict": "confirm", "classification": cls},
    )


def test_an_unmatched_item_needs_two_reviewers(web: WebServer) -> None:
    with _api(web, _key(web, Role.MATCHER)) as platform:
        made = platform.post(
            "/v1/submissions",
            json={"content_id": "reported-by-a-user", "signals": [{"type": "pdq", "value": PDQ}]},
        )
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        flagged = platform.post(f"/v1/submissions/{sid}/review", json={"note": "user report"})
        assert flagged.status_code == 201, flagged.text
        item_id = flagged.json()["item_id"]
        again = platform.post(f"/v1/submissions/{sid}/review", json={"note": "again"})
        assert again.status_code == 409
        assert platform.post("/v1/submissions/NOSUCH/review", json={"note": "x"}).status_code == 404
    assert _audit(web, "review.flag")[0][1] == {"submission": sid, "note": "user report"}

    with closing(web.login("alice")) as alice, closing(web.login("bob")) as bob:
        page = alice.get(f"/web/review/{item_id}").text
        assert "No bank matched: sent to review with the note “user report”" in page
        first = _confirm(alice, item_id, "A1")
        assert first.status_code == 303 and "done=confirm_first" in first.headers["location"]
        assert "a different reviewer must confirm" in alice.get(first.headers["location"]).text
        queue = alice.get("/web/review").text
        assert "confirmed once by user:alice, needs a second reviewer" in queue
        page = alice.get(f"/web/review/{item_id}").text
        assert 'id="confirm-form"' not in page and 'id="confirm-waiting"' in page

        # the same reviewer again: refused and audited, nothing decided
        twice = alice.post(
            f"/web/review/{item_id}/decide",
            data={"csrf": hidden(page, "csrf"), "verdict": "confirm", "classification": "A1"},
        )
        assert twice.status_code == 409 and "a different reviewer must confirm" in twice.text
        assert [a for a, _ in _audit(web, "review.confirm_refused")] == ["user:alice"]
        # an API client cannot confirm it directly either
        with _api(web, _key(web, Role.REVIEWER)) as reviewer:
            direct = reviewer.post(f"/v1/review/{item_id}/decision", json={"decision": "confirmed"})
            assert direct.status_code == 409 and "two-person" in direct.text
        with web.db.sessions() as s:
            row = s.get(ReviewItem, item_id)
            assert row is not None and row.status == "pending"

        page = bob.get(f"/web/review/{item_id}").text
        assert "user:alice confirmed this item first (A1" in page
        assert "Confirm as second reviewer" in page
        second = _confirm(bob, item_id, "A2")
        assert second.status_code == 303 and "done=confirm&" in second.headers["location"]
    with web.db.sessions() as s:
        row = s.get(ReviewItem, item_id)
        assert row is not None and (row.status, row.decided_by) == ("confirmed", "user:bob")
    assert [a for a, _ in _audit(web, "review.confirm_first")] == ["user:alice"]
    ((actor, details),) = _audit(web, "review.confirm_second")
    assert actor == "user:bob" and details["first_by"] == "user:alice"
    assert (details["first_classification"], details["classification"]) == ("A1", "A2")

    # an item that matched a bank is confirmed by one reviewer, rule or not
    with closing(web.login("alice")) as alice:
        done = _confirm(alice, web.seeded.items[0], "B1")
        assert done.status_code == 303 and "done=confirm&" in done.headers["location"]


def _flagged(db_url: str, tmp_path: Path, *, rule: bool) -> tuple[Any, Any, str]:
    settings = settings_for(tmp_path, db_url, review_two_person_unmatched=rule)
    db = open_database(db_url, settings=settings)
    platform = Principal("platform", Role.MATCHER, "acme")
    made = submissions.create_submission(
        db.sessions,
        platform,
        submissions.SubmissionFacts(content_id="flag-me"),
        [{"type": "pdq", "value": PDQ}],
    )
    item_id = flag.flag_submission(db.sessions, platform, made.id, note="moderator")
    return db, settings, item_id


def test_without_the_rule_one_confirmation_decides(db_url: str, tmp_path: Path) -> None:
    db, settings, item_id = _flagged(db_url, tmp_path, rule=False)
    try:
        alice = Principal("user:alice", Role.REVIEWER, "acme")
        outcome = decisions.confirm(db, alice, item_id, classification="B2", settings=settings)
        assert not outcome.awaiting_second and outcome.decision_id is not None
    finally:
        db.close()


def test_two_reviewers_confirming_at_once(db_url: str, tmp_path: Path) -> None:
    db, settings, item_id = _flagged(db_url, tmp_path, rule=True)
    try:
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def confirm(name: str) -> None:
            who = Principal(f"user:{name}", Role.REVIEWER, "acme")
            start.wait()
            try:
                results[name] = decisions.confirm(
                    db, who, item_id, classification="A1", settings=settings
                )
            except ConflictError as exc:  # pragma: no cover - a failure names it
                results[name] = exc

        threads = [threading.Thread(target=confirm, args=(n,)) for n in ("alice", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes = [results["alice"], results["bob"]]
        assert all(isinstance(o, decisions.Outcome) for o in outcomes), outcomes
        waiting = [o for o in outcomes if isinstance(o, decisions.Outcome) and o.awaiting_second]
        assert len(waiting) == 1  # exactly one first confirmation; the other decided
        with db.sessions() as s:
            row = s.get(ReviewItem, item_id)
            assert row is not None and row.status == "confirmed"
    finally:
        db.close()
