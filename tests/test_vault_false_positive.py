"""Early purge: a false-positive decision erases the media kept only for review, at
once and audited, unless a report carries it, a legal hold protects it, or another
review item of the same submission is still open. Benign bytes throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.errors import ConflictError, NotFoundError
from tipline.services import actions, submissions
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.matching.match import Match
from tipline.services.reports import service
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.evidence import VaultEvidence
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.signals.base import Signal
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankRow
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models
from tipline.store.submissions import DecisionKind

MATCHER = Principal("acme00000001", Role.MATCHER, "acme")
REVIEWER = Principal("acme00000002", Role.REVIEWER, "acme")
OTHER = Principal("glbx00000001", Role.REVIEWER, "globex")
ADMIN = Principal("admin0000001", Role.ADMIN)
SIGNALS = [Signal(type="md5", value="2" * 32)]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    import_all_models()
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    factory = session_factory(engine)
    with transaction(factory) as session:
        for bank in ("b1", "b2"):
            session.add(BankRow(name=bank, tenant="acme"))
        session.flush()
        for bank in ("b1", "b2"):
            actions.add_rule(session, action="enqueue_review", bank=bank, tenant="acme")
    return factory


@pytest.fixture
def vault(tmp_path: Path) -> v.Vault:
    return v.Vault(BlobStore(tmp_path / "vault"), Keyring(MasterKey.generate()))


def _sent_to_review(
    sessions: sessionmaker[Session], vault: v.Vault, banks: tuple[str, ...] = ("b1",)
) -> tuple[str, list[str], str]:
    """A match sent to review: (submission id, review item ids, vault item id)."""
    matches = [Match(bank=b, entry_id="e", signal_type="md5", distance=0) for b in banks]
    recorded = submissions.match_and_record(
        sessions,
        MATCHER,
        SIGNALS,
        lambda _s: matches,
        submission=submissions.SubmissionFacts("c-1"),
        media=b"\xff\xd8benign\xff\xd9",
        vault=vault,
    )
    assert recorded.submission_id is not None
    with sessions() as session:
        queue = actions.review_queue(session, actor=REVIEWER)
    items = [q["id"] for q in queue if q["event_id"] == recorded.submission_id]
    (kept,) = v.list_items(sessions, actor=ADMIN, submission_id=recorded.submission_id)
    return recorded.submission_id, items, kept.id


def _reject(sessions: sessionmaker[Session], item_id: str, who: Principal = REVIEWER) -> None:
    with transaction(sessions) as session:
        actions.decide(session, item_id, actions.ReviewStatus.REJECTED, actor=who)


def _audit(sessions: sessionmaker[Session], action: str) -> list[AuditRecord]:
    with sessions() as session:
        return list(
            session.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
        )


def test_false_positive_in_review_erases_the_media_at_once(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    submission_id, (item,), kept = _sent_to_review(sessions, vault)
    _reject(sessions, item)
    info = v.show(sessions, kept, actor=ADMIN)
    assert info.purged_at is not None and info.purged_by == REVIEWER.key_id
    with pytest.raises(ConflictError, match="purged"):
        v.read_bytes(sessions, vault, kept, actor=ADMIN)
    (record,) = _audit(sessions, "vault.purge")
    assert record.target_id == kept and "false positive" in record.details
    assert submission_id in record.details
    # the key is gone at commit; the next purge run removes the file itself
    assert list(vault.blobs.ids()) == [kept]
    assert v.purge(sessions, vault, actor=ADMIN).files_removed == 1
    assert list(vault.blobs.ids()) == []


def test_held_or_still_open_or_reported_media_is_kept(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    # on legal hold
    _, (held_item,), held = _sent_to_review(sessions, vault)
    v.place_hold(sessions, held, reason="case 12", actor=ADMIN)
    _reject(sessions, held_item)
    assert v.show(sessions, held, actor=ADMIN).purged_at is None
    assert [r.target_id for r in _audit(sessions, "vault.purge_held")] == [held]
    # matched in two banks: kept until both review items are rejected
    _, (first, second), both = _sent_to_review(sessions, vault, ("b1", "b2"))
    _reject(sessions, first)
    assert v.show(sessions, both, actor=ADMIN).purged_at is None
    _reject(sessions, second)
    assert v.show(sessions, both, actor=ADMIN).purged_at is not None
    # in a report: a later false-positive decision never erases reported evidence
    reported_sub, (confirm_item,), reported = _sent_to_review(sessions, vault)
    with transaction(sessions) as session:
        decision = actions.decide(
            session, confirm_item, actions.ReviewStatus.CONFIRMED, actor=REVIEWER
        )
    assert decision is not None
    service.create_from_decision(
        sessions,
        REVIEWER,
        decision,
        settings=Settings(report_reporter_email="reports@example.org"),
        evidence=VaultEvidence(vault, actor=ADMIN),
    )
    submissions.add_decision(sessions, REVIEWER, reported_sub, DecisionKind.FALSE_POSITIVE)
    assert v.show(sessions, reported, actor=ADMIN).purged_at is None
    assert [r.target_id for r in _audit(sessions, "vault.purge")] == [both]


def test_a_direct_false_positive_decision_erases_and_another_tenant_cannot(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    submission_id, (item,), kept = _sent_to_review(sessions, vault)
    # another tenant: not found, nothing decided, nothing erased
    with pytest.raises(NotFoundError):
        _reject(sessions, item, OTHER)
    with pytest.raises(NotFoundError):
        submissions.add_decision(sessions, OTHER, submission_id, DecisionKind.FALSE_POSITIVE)
    assert submissions.list_decisions(sessions, REVIEWER, submission_id) == []
    assert v.show(sessions, kept, actor=ADMIN).purged_at is None
    # the review item still pending keeps the media; once rejected, it goes
    submissions.add_decision(sessions, REVIEWER, submission_id, DecisionKind.FALSE_POSITIVE)
    assert v.show(sessions, kept, actor=ADMIN).purged_at is None
    _reject(sessions, item)
    assert v.show(sessions, kept, actor=ADMIN).purged_at is not None
