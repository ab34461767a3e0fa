"""Reports from confirmed decisions and from the auto-report policy, with the evidence
vault as the file store, delivered end to end to the local ISPWS receiver; tenant
isolation, bad input and the retract/retry operations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from _ispws_server import RemoteReport, ispws_server
from tipline.config import Settings
from tipline.errors import ConfigError, ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.reports import service
from tipline.services.reports.facts import ReviewFacts
from tipline.services.reports.model import Classification, FileAnnotation
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.evidence import VaultEvidence
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.store import submissions as sub
from tipline.store.audit import AuditRecord
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models
from tipline.store.reports import ReportRow

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
ACME = Principal("acme00000001", Role.REVIEWER, "acme")
GLOBEX = Principal("glbx00000001", Role.REVIEWER, "globex")
DELIVERY = Principal("report-delivery", Role.ADMIN)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    import_all_models()
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def vault(tmp_path: Path) -> v.Vault:
    return v.Vault(BlobStore(tmp_path / "vault"), Keyring(MasterKey.generate()))


@pytest.fixture
def evidence(sessions: sessionmaker[Session], vault: v.Vault) -> VaultEvidence:
    return VaultEvidence(vault, actor=DELIVERY)


def _settings(**kw: object) -> Settings:
    return Settings(
        report_reporter_email="reports@example.org",
        report_platform="Example Photos",
        **kw,  # type: ignore[arg-type]
    )


def _submission(
    sessions: sessionmaker[Session],
    vault: v.Vault,
    *,
    tenant: str | None = "acme",
    data: bytes | None = b"\xff\xd8benign-test-bytes\xff\xd9",
    match: tuple[str, str, int] = ("known", "md5", 0),
    pdq: str = "f" * 64,
    uploader: str = "user-42",
) -> str:
    with transaction(sessions) as session:
        row = sub.create_submission(
            session,
            tenant=tenant,
            content_id="c-1",
            created_by="test",
            uploader_account=uploader,
            upload_ip="198.51.100.23",
            uploaded_at=T0,
            upload_port=53211,
            file_name="holiday.jpg",
            uploader_screen_name="sunny",
            uploader_profile_url="https://photos.example.org/u/42",
            account={
                "ip_events": [{"ip": "198.51.100.5", "event": "Login", "at": T0.isoformat()}],
                "devices": [{"id_type": "IDFA", "value": "ABC-1"}],
                "permanently_disabled_at": T0.isoformat(),
                "location": {"city": "Springfield", "country": "US"},
            },
            signals=[{"type": "pdq", "value": pdq}],
        )
        bank, kind, distance = match
        sub.record_matches(session, tenant, row.id, [sub.MatchFact(bank, "e1", kind, distance)])
        if data is not None:
            v.store(
                session,
                vault,
                data,
                kind=v.EvidenceKind.MEDIA,
                actor="test",
                tenant=tenant,
                filename="holiday.jpg",
                submission_id=row.id,
            )
        return row.id


def _decide(
    sessions: sessionmaker[Session],
    submission_id: str,
    facts: ReviewFacts,
    *,
    tenant: str | None = "acme",
    kind: sub.DecisionKind = sub.DecisionKind.CONFIRMED,
) -> str:
    with transaction(sessions) as session:
        return sub.add_decision(
            session, tenant, submission_id, kind, decided_by="rev", facts=facts.as_json()
        ).id


def test_decision_report_delivered_with_the_reviewers_view(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    data = b"\xff\xd8benign-test-bytes\xff\xd9"
    submission_id = _submission(sessions, vault, data=data)
    facts = ReviewFacts(
        viewed=True,
        exif_viewed=False,
        classification=Classification.A2,
        file_annotations=frozenset({FileAnnotation.VIRAL}),
        escalation_reason="ongoing contact",
    )
    decision_id = _decide(sessions, submission_id, facts)
    settings = _settings()
    summary = service.create_from_decision(
        sessions, ACME, decision_id, settings=settings, evidence=evidence
    )
    assert summary.status == "queued" and summary.files == 1 and summary.tenant == "acme"
    again = service.create_from_decision(
        sessions, ACME, decision_id, settings=settings, evidence=evidence
    )
    assert again.id == summary.id  # one report per decision

    with ispws_server() as rx:
        settings = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        stats = service.deliver(sessions, settings=settings, evidence=evidence)
        assert stats.finished == 1
        [remote] = rx.receiver.reports.values()
    root = etree.fromstring(remote.xml)
    user = root.find("personOrUserReported")
    assert user.findtext("espIdentifier") == "user-42"
    assert user.findtext("screenName") == "sunny"
    events = user.findall("ipCaptureEvent")
    assert [
        (e.findtext("ipAddress"), e.findtext("eventName"), e.findtext("port")) for e in events
    ] == [
        ("198.51.100.5", "Login", None),
        ("198.51.100.23", "Upload", "53211"),
    ]
    assert root.findtext("incidentSummary/escalateToHighPriority") == "ongoing contact"
    [file] = remote.files.values()
    assert file.md5 == hashlib.md5(data).hexdigest()
    details = etree.fromstring(file.details)
    assert details.findtext("fileViewedByEsp") == "true"
    assert details.findtext("exifViewedByEsp") == "false"
    assert details.findtext("industryClassification") == "A2"
    assert details.findtext("originalFileName") == "holiday.jpg"
    hashes = {h.get("hashType"): h.text for h in details.findall("originalFileHash")}
    assert hashes == {"MD5": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest()}
    assert details.findtext("ipCaptureEvent/port") == "53211"

    detail = service.get_report(sessions, ACME, summary.id)
    assert detail.summary.status == "finished" and detail.summary.remote_id == remote.id
    assert [e["phase"] for e in detail.events].count("ok") == 4
    assert service.report_xml(sessions, ACME, summary.id) == remote.xml
    with sessions() as session:
        actions = set(session.scalars(select(AuditRecord.action)))
        items = v.list_items(sessions, actor=DELIVERY, report_id=summary.id)
    assert {"report.create", "report.finish", "vault.read", "vault.reported"} <= actions
    assert {i.kind for i in items} == {"media", "report_xml"}
    with pytest.raises(ConflictError, match="finished"):
        service.retract(sessions, ACME, summary.id)


def test_auto_report_says_not_viewed(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    exact = _submission(sessions, vault, match=("trusted", "md5", 0))
    near = _submission(sessions, vault, match=("trusted", "pdq", 4))
    other_bank = _submission(sessions, vault, match=("community", "md5", 0))
    settings = _settings(report_auto_banks=["trusted"])
    assert service.auto_report(sessions, near, settings=settings, evidence=evidence) is None
    assert service.auto_report(sessions, other_bank, settings=settings, evidence=evidence) is None
    summary = service.auto_report(sessions, exact, settings=settings, evidence=evidence)
    assert summary is not None and summary.kind == "auto"
    detail = service.get_report(sessions, ACME, summary.id)
    assert [f["viewed_by_esp"] for f in detail.files] == [False]
    with ispws_server() as rx:
        settings = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        service.deliver(sessions, settings=settings, evidence=evidence)
        [remote] = rx.receiver.reports.values()
    [file] = remote.files.values()
    details = etree.fromstring(file.details)
    assert details.findtext("fileViewedByEsp") == "false"
    assert details.findtext("exifViewedByEsp") == "false"


def test_bad_input_stores_nothing(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    settings = _settings()
    acme_sub = _submission(sessions, vault)
    decision = _decide(sessions, acme_sub, ReviewFacts(viewed=True))
    with pytest.raises(NotFoundError):  # another tenant's decision
        service.create_from_decision(
            sessions, GLOBEX, decision, settings=settings, evidence=evidence
        )
    bare = _submission(sessions, vault, data=None)
    bare_decision = _decide(sessions, bare, ReviewFacts())
    with pytest.raises(InputError, match="no stored media"):
        service.create_from_decision(
            sessions, ACME, bare_decision, settings=settings, evidence=evidence
        )
    rejected = _decide(sessions, acme_sub, ReviewFacts(), kind=sub.DecisionKind.FALSE_POSITIVE)
    with pytest.raises(ConflictError, match="confirmed"):
        service.create_from_decision(sessions, ACME, rejected, settings=settings, evidence=evidence)
    with pytest.raises(ConfigError, match="REPORTER_EMAIL"):
        service.create_from_decision(
            sessions, ACME, decision, settings=Settings(), evidence=evidence
        )
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(ReportRow)).scalar_one() == 0
    assert service.list_reports(sessions, ACME) == []


def test_retract_before_and_after_submit(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    settings = _settings()
    first = service.create_from_decision(
        sessions,
        ACME,
        _decide(sessions, _submission(sessions, vault), ReviewFacts()),
        settings=settings,
        evidence=evidence,
    )
    summary = service.retract(sessions, ACME, first.id)
    assert summary.status == "retracted" and summary.step is None
    with pytest.raises(NotFoundError):
        service.retract(sessions, GLOBEX, first.id)
    # a report open on the receiver is retracted there through the outbox
    second = service.create_from_decision(
        sessions,
        ACME,
        _decide(sessions, _submission(sessions, vault), ReviewFacts()),
        settings=settings,
        evidence=evidence,
    )
    with sessions() as session, session.begin():
        row = session.get(ReportRow, second.id)
        row.remote_id = 1_000_001  # as if submitted
        row.status = "delivering"
    with ispws_server() as rx:
        rx.receiver.reports[1_000_001] = RemoteReport(1_000_001, second.id, b"")
        assert service.retract(sessions, ACME, second.id).step == "retract"
        settings = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        stats = service.deliver(sessions, settings=settings, evidence=evidence)
        assert stats.retracted == 1
        assert rx.receiver.reports[1_000_001].retracted
    assert service.get_report(sessions, ACME, second.id).summary.status == "retracted"


def test_failed_report_retried_after_the_operator_fixes_the_account(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    summary = service.create_from_decision(
        sessions,
        ACME,
        _decide(sessions, _submission(sessions, vault), ReviewFacts()),
        settings=_settings(),
        evidence=evidence,
    )
    with ispws_server() as rx:
        wrong = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password="wrong",
        )
        assert service.deliver(sessions, settings=wrong, evidence=evidence).failed == 1
        [item] = service.operator_queue(sessions, ACME)
        assert item["report_id"] == summary.id and "401" in item["message"]
        assert service.operator_queue(sessions, GLOBEX) == []
        queued = service.create_from_decision(
            sessions,
            ACME,
            _decide(sessions, _submission(sessions, vault), ReviewFacts()),
            settings=_settings(),
            evidence=evidence,
        )
        with pytest.raises(ConflictError, match="only a failed one"):
            service.retry(sessions, ACME, queued.id)
        assert service.retry(sessions, ACME, summary.id).status == "queued"
        assert service.operator_queue(sessions, ACME) == []
        right = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        assert service.deliver(sessions, settings=right, evidence=evidence).finished == 2
    assert service.get_report(sessions, ACME, summary.id).summary.status == "finished"
    with sessions() as session:
        assert audit.verify(session).ok


def test_viral_uploads_become_one_batched_report(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    meme = int("a5" * 32, 16)
    viral = [
        _submission(
            sessions,
            vault,
            match=("trusted", "md5", 0),
            pdq=f"{meme ^ (1 << i) ^ (1 << (i + 100)):064x}",
            uploader=f"user-{i}",
            data=f"meme copy {i}".encode(),
        )
        for i in range(6)
    ]
    lone = _submission(sessions, vault, match=("trusted", "md5", 0), pdq="0" * 64, uploader="x")
    settings = _settings(
        report_auto_banks=["trusted"], report_viral_threshold=5, report_viral_max_distance=8
    )
    reports = service.auto_report_many(
        sessions, [*viral, lone], settings=settings, evidence=evidence
    )
    assert sorted((r.kind, r.files) for r in reports) == [("auto", 1), ("bundle", 6)]
    # asking again reports nothing twice
    assert (
        service.auto_report_many(sessions, [*viral, lone], settings=settings, evidence=evidence)
        == []
    )
    with ispws_server() as rx:
        delivery = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        assert service.deliver(sessions, settings=delivery, evidence=evidence).finished == 2
        bundled = [r for r in rx.receiver.reports.values() if b"batchedReport" in r.xml]
    [remote] = bundled
    root = etree.fromstring(remote.xml)
    assert root.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    assert len(root.findall("personOrUserReported")) == 6
    assert len(remote.files) == 6
    for file in remote.files.values():
        details = etree.fromstring(file.details)
        assert details.findtext("potentialMeme") == "true"
        assert details.findtext("fileViewedByEsp") == "false"


def test_review_queue_confirmation_reports_what_the_reviewer_viewed(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    from tipline.services import actions
    from tipline.store.jobs import ReviewItem

    submission_id = _submission(sessions, vault)
    item_id = "01JREVIEWITEM0000000000000"
    with transaction(sessions) as session:
        session.add(
            ReviewItem(
                id=item_id,
                tenant="acme",
                event_id=submission_id,
                content_id="c-1",
                bank="known",
                details="{}",
                status="pending",
                created_at=T0,
            )
        )
    with transaction(sessions) as session, pytest.raises(InputError, match="classification"):
        actions.decide(
            session,
            item_id,
            actions.ReviewStatus.CONFIRMED,
            actor=ACME,
            facts={"classification": "Z9"},
        )
    with transaction(sessions) as session:
        decision_id = actions.decide(
            session,
            item_id,
            actions.ReviewStatus.CONFIRMED,
            actor=ACME,
            facts={"viewed": True, "exif_viewed": True, "classification": "B2"},
        )
    assert decision_id is not None
    summary = service.create_from_decision(
        sessions, ACME, decision_id, settings=_settings(), evidence=evidence
    )
    detail = service.get_report(sessions, ACME, summary.id)
    assert [f["viewed_by_esp"] for f in detail.files] == [True]
