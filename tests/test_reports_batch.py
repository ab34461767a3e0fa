"""Reports of many decisions built per batch (one transaction per batch): the same
documents as one at a time, per-decision errors that leave the rest of the batch
unaffected, one delivery job per batch, and delivery end to end to the local receiver."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from _ispws_server import ispws_server
from test_reports_service import ACME, DELIVERY, GLOBEX, _decide, _settings, _submission
from tipline.errors import InputError
from tipline.services import vault as v
from tipline.services.reports import batch, delivery_job, service
from tipline.services.reports.facts import ReviewFacts
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.evidence import VaultEvidence
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.store import submissions as sub
from tipline.store.audit import AuditRecord
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.jobs import Job
from tipline.store.models import import_all_models
from tipline.store.reports import ReportFileRow, ReportOutboxRow, ReportRow


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
def evidence(vault: v.Vault) -> VaultEvidence:
    return VaultEvidence(vault, actor=DELIVERY)


def _without_ids(xml: bytes) -> bytes:
    """The document without what differs between two builds of one decision."""
    return re.sub(rb"ESP report reference: [0-9A-Z]{26}", b"", xml)


def test_batch_reports_match_single_ones_and_errors_stay_per_decision(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    settings = _settings()
    datas = [b"\xff\xd8benign-batch-" + bytes([65 + i]) + b"\xff\xd9" for i in range(5)]
    subs = [_submission(sessions, vault, data=d, uploader=f"user-{i}") for i, d in enumerate(datas)]
    good = [_decide(sessions, s, ReviewFacts(viewed=i % 2 == 0)) for i, s in enumerate(subs)]
    no_media = _decide(sessions, _submission(sessions, vault, data=None), ReviewFacts())
    dismissed = _decide(sessions, subs[0], ReviewFacts(), kind=sub.DecisionKind.DISMISSED)
    twice = _decide(sessions, subs[1], ReviewFacts())  # a second decision on one file
    other_tenant = _decide(
        sessions, _submission(sessions, vault, tenant="globex"), ReviewFacts(), tenant="globex"
    )
    asked = [good[0], no_media, good[1], dismissed, twice, other_tenant, *good[2:], "nope"]
    outcomes = batch.create_from_decisions(
        sessions, ACME, asked, settings=settings, evidence=evidence, batch_size=4, threads=3
    )
    assert [o.decision_id for o in outcomes] == asked
    by_id = {o.decision_id: o for o in outcomes}
    for d in good:
        assert by_id[d].error is None and by_id[d].report is not None
        assert by_id[d].report.status == "queued" and by_id[d].report.files == 1
    assert "no stored media" in (by_id[no_media].error or "")
    assert "only a confirmed one" in (by_id[dismissed].error or "")
    assert "already in report" in (by_id[twice].error or "")
    assert "no decision" in (by_id[other_tenant].error or "")
    assert "no decision" in (by_id["nope"].error or "")
    # asking again answers with the reports made, and makes none
    again = batch.create_from_decisions(
        sessions, ACME, good, settings=settings, evidence=evidence, batch_size=64
    )
    assert [o.report.id for o in again if o.report] == [by_id[d].report.id for d in good]
    # GLOBEX sees only its own decision
    [theirs] = batch.create_from_decisions(
        sessions, GLOBEX, [other_tenant], settings=settings, evidence=evidence
    )
    assert theirs.report is not None and theirs.report.tenant == "globex"

    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ReportRow)) == 6
        assert session.scalar(select(func.count()).select_from(ReportOutboxRow)) == 6
        jobs = session.scalar(
            select(func.count()).where(Job.kind == delivery_job.DELIVERY_JOB_KIND)
        )
        # batches of 4 over 11 decisions: 3 batches made reports, then GLOBEX's
        assert jobs == 4
        actions = list(session.scalars(select(AuditRecord.action)))
        md5s = {f.report_id: f.md5 for f in session.scalars(select(ReportFileRow))}
        batch_xml = {d: session.get(ReportRow, by_id[d].report.id).xml.encode() for d in good[:2]}
    assert actions.count("report.create") == 6
    assert actions.count("vault.read") == 6
    for d, data in zip(good, datas, strict=True):
        assert md5s[by_id[d].report.id] == hashlib.md5(data).hexdigest()

    # the same decisions made one at a time give the same documents
    for d, data in zip(good[:2], datas[:2], strict=True):
        s = _submission(sessions, vault, data=data + b"x", uploader="user-" + str(good.index(d)))
        single = service.create_from_decision(
            sessions,
            ACME,
            _decide(sessions, s, ReviewFacts(viewed=good.index(d) % 2 == 0)),
            settings=settings,
            evidence=evidence,
        )
        with sessions() as session:
            one = session.get(ReportRow, single.id).xml.encode()
        a, b = etree.fromstring(_without_ids(one)), etree.fromstring(_without_ids(batch_xml[d]))
        for tree in (a, b):
            for node in tree.iter("originalFileHash", "fileSize", "originalFileName"):
                node.text = ""
        assert etree.tostring(a) == etree.tostring(b)

    with ispws_server() as rx:
        live = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        stats = service.deliver(sessions, settings=live, evidence=evidence, workers=4)
        remote_md5 = {
            ref: [f.md5 for f in r[0].files.values()]
            for ref, r in rx.receiver.finished_by_ref().items()
        }
    assert stats.finished == 8 and stats.failed == 0
    for d in good:
        assert remote_md5[by_id[d].report.id] == [md5s[by_id[d].report.id]]


def test_batch_size_is_bounded(sessions: sessionmaker[Session], evidence: VaultEvidence) -> None:
    with pytest.raises(InputError, match="batch size"):
        batch.create_from_decisions(
            sessions, ACME, ["x"], settings=_settings(), evidence=evidence, batch_size=0
        )


def _with_signals(
    sessions: sessionmaker[Session], vault: v.Vault, data: bytes, signals: list[dict[str, str]]
) -> str:
    with transaction(sessions) as session:
        row = sub.create_submission(
            session,
            tenant="acme",
            content_id="c-sig",
            created_by="test",
            uploader_account="user-7",
            file_name="x.jpg",
            signals=signals,
        )
        v.store(
            session,
            vault,
            data,
            kind=v.EvidenceKind.MEDIA,
            actor="test",
            tenant="acme",
            filename="x.jpg",
            submission_id=row.id,
        )
        return row.id


def test_digests_the_matcher_recorded_spare_reading_the_file(
    sessions: sessionmaker[Session], vault: v.Vault, evidence: VaultEvidence
) -> None:
    """A file whose MD5, SHA-1 and SHA-256 the matcher recorded (the SHA-256 the vault
    holds for its bytes) is reported without decrypting it; a file whose recorded SHA-256
    is another file's is read and hashed."""
    data = b"\xff\xd8benign-signals\xff\xd9"
    digests = {name: hashlib.new(name, data).hexdigest() for name in ("md5", "sha1", "sha256")}
    recorded = [{"type": t, "value": value} for t, value in digests.items()]
    known = _with_signals(sessions, vault, data, recorded)
    other = b"\xff\xd8benign-other\xff\xd9"
    # signals of different bytes than those kept: never trusted
    wrong = _with_signals(sessions, vault, other, recorded)
    decisions = [_decide(sessions, s, ReviewFacts()) for s in (known, wrong)]
    outcomes = batch.create_from_decisions(
        sessions, ACME, decisions, settings=_settings(), evidence=evidence
    )
    assert all(o.report is not None for o in outcomes)
    with sessions() as session:
        reads = session.scalars(
            select(AuditRecord.target_id).where(AuditRecord.action == "vault.read")
        ).all()
        files = {f.submission_id: f for f in session.scalars(select(ReportFileRow))}
    assert files[known].md5 == digests["md5"] and files[known].sha1 == digests["sha1"]
    assert files[wrong].md5 == hashlib.md5(other).hexdigest()
    assert reads == [files[wrong].evidence_id]  # only the file whose digests were not known
