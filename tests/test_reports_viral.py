"""Viral bundling at match time: auto-reports of one perceptual cluster, by different
accounts, collect into one held report, released by the job runner as one document
(``batchedReport VIRAL_POTENTIAL_MEME`` once the threshold is reached); released reports
never change; urgent and non-bundle-able reports are never held; two matches at once
never make two bundles nor lose a file (threads, SQLite and PostgreSQL). Every document
is validated against NCMEC's schema. All media are benign placeholder bytes."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from _clock import HANG_SECONDS, ManualClock
from _ispws_server import RunningReceiver
from tipline.config import Settings
from tipline.services import submissions
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.jobs import JobRunner
from tipline.services.matching.match import Match
from tipline.services.reports import builder, service, viral
from tipline.services.reports.auto import AutoReportPolicy
from tipline.services.reports.model import file_from_json
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.evidence import VaultEvidence
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.signals.base import Signal
from tipline.store.audit import AuditRecord
from tipline.store.base import utcnow
from tipline.store.db import make_engine, session_factory
from tipline.store.models import import_all_models
from tipline.store.report_bundles import ReportBundleRow
from tipline.store.reports import ReportFileRow, ReportOutboxRow, ReportRow
from tipline.store.submissions import SubmissionRow

ACME = Principal("acme00000001", Role.MATCHER, "acme")
ACME_ADMIN = Principal("acme00000002", Role.ADMIN, "acme")
OTHER = Principal("othr00000001", Role.MATCHER, "other")
DELIVERY = Principal("report-delivery", Role.ADMIN)
EXACT = Match(bank="trusted", entry_id="e1", signal_type="md5", distance=0)
URGENT = Match(bank="urgent", entry_id="u1", signal_type="sha256", distance=0)
MEME = "f" * 64
NEAR = "f" * 60 + "0000"  # 16 bits from MEME
FAR = "0" * 64
BAD_PORT = 99  # upload number whose source port (70000) the schema refuses
SCHEMA = etree.XMLSchema(etree.fromstring(builder.schema_bytes()))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    import_all_models()
    eng = make_engine(db_url)  # db_url is migrated
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def vault(tmp_path: Path) -> v.Vault:
    return v.Vault(BlobStore(tmp_path / "vault"), Keyring(MasterKey.generate()))


@dataclass
class Deployment:
    """A configured tipline (data folder, database, vault key, reporter) as a test's
    own calls and the ``tipline`` commands it runs both see it."""

    settings: Settings
    key: str  # the vault master key, base64
    sessions: sessionmaker[Session]
    vault: v.Vault

    def env(self, rx: RunningReceiver | None = None) -> dict[str, str]:
        """The complete environment of a ``tipline`` command (delivering to ``rx``)."""
        env = {k: val for k, val in os.environ.items() if not k.startswith("TIPLINE_")} | {
            "TIPLINE_DATA_DIR": str(self.settings.data_dir),
            "TIPLINE_DATABASE_URL": str(self.settings.database_url),
            "TIPLINE_VAULT_MASTER_KEY": self.key,
            "TIPLINE_REPORT_REPORTER_EMAIL": "reports@example.org",
            "TIPLINE_REPORT_PLATFORM": "Example Photos",
        }
        if rx is not None:
            env |= {
                "TIPLINE_REPORT_ISPWS_URL": rx.url,
                "TIPLINE_REPORT_ISPWS_USERNAME": rx.username,
                "TIPLINE_REPORT_ISPWS_PASSWORD": rx.password,
            }
        return env


@pytest.fixture
def deployment(db_url: str, engine: Engine, tmp_path: Path) -> Deployment:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = _settings(
        data_dir=tmp_path / "data", database_url=db_url, vault_master_key=SecretStr(key)
    )
    return Deployment(settings, key, session_factory(engine), v.Vault.from_settings(settings))


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "report_reporter_email": "reports@example.org",
        "report_platform": "Example Photos",
        "report_auto_banks": ["trusted", "urgent"],
        "report_urgent_banks": ["urgent"],
        "report_viral_threshold": 3,
        "report_viral_hold_seconds": 600,
        "report_viral_window_seconds": 3600,
    }
    return Settings(**(base | kw))  # type: ignore[arg-type]


def _upload(
    sessions: sessionmaker[Session],
    vault: v.Vault,
    n: int,
    user: str | None,
    *,
    pdq: str | None = MEME,
    who: Principal = ACME,
    match: Match = EXACT,
    settings: Settings | None = None,
) -> str:
    """One upload of a benign placeholder file matching a trusted bank's entry."""
    signals = [Signal(type="md5", value=f"{n:032x}")]
    if pdq is not None:
        signals.append(Signal(type="pdq", value=pdq))
    facts = submissions.SubmissionFacts(
        f"c-{n}",
        uploader_account=user,
        upload_ip="198.51.100.9",
        upload_port=70_000 if n == BAD_PORT else 40000 + n,
    )
    sid = submissions.match_and_record(
        sessions,
        who,
        signals,
        lambda _session: [match],
        submission=facts,
        media=f"benign placeholder {n}".encode(),
        vault=vault,
        auto_report=AutoReportPolicy.from_settings(settings or _settings()),
    ).submission_id
    assert sid is not None
    return sid


def _reports(sessions: sessionmaker[Session]) -> list[ReportRow]:
    with sessions() as session:
        return list(session.scalars(select(ReportRow).order_by(ReportRow.created_at)))


def _files(sessions: sessionmaker[Session], report_id: str) -> list[ReportFileRow]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ReportFileRow)
                .where(ReportFileRow.report_id == report_id)
                .order_by(ReportFileRow.seq)
            )
        )


def _actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))


def _release(
    sessions: sessionmaker[Session], vault: v.Vault, settings: Settings | None = None
) -> list[str]:
    """Release every held bundle as if its hold were over."""
    later = utcnow() + timedelta(hours=2)
    evidence = VaultEvidence(vault, actor=DELIVERY)
    return viral.release_due(sessions, settings or _settings(), evidence, now=later)


def _preserved(session: Session, report_id: str) -> list[str]:
    """SHA-256 of each report document the vault preserved for ``report_id``."""
    from tipline.store.vault import EvidenceItemRow

    return list(
        session.scalars(
            select(EvidenceItemRow.sha256).where(
                EvidenceItemRow.kind == "report_xml", EvidenceItemRow.report_id == report_id
            )
        )
    )


def _valid(sessions: sessionmaker[Session], report: ReportRow) -> etree._Element:
    """The report's document and every file's fileDetails, checked against the XSD."""
    doc = etree.fromstring(report.xml.encode("utf-8"))
    SCHEMA.assertValid(doc)
    for n, row in enumerate(_files(sessions, report.id)):
        details = builder.build_file_details(
            file_from_json(row.details), report_id=4_000_000, file_id=f"{n:032x}", validate=False
        )
        SCHEMA.assertValid(etree.fromstring(details))
    return doc


def test_uploads_of_one_cluster_collect_in_one_held_report_released_as_viral(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    sids = [
        _upload(sessions, vault, 1, "user-1"),
        _upload(sessions, vault, 2, "user-2", pdq=NEAR),
        _upload(sessions, vault, 3, "user-1"),  # same account again: 2 accounts so far
        _upload(sessions, vault, 4, "user-3"),  # the threshold: 3 accounts
    ]
    (report,) = _reports(sessions)
    assert report.kind == "bundle" and report.source == f"auto:{sids[0]}"
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.status == "queued" and summary.step == "held" and summary.files == 4
    assert summary.next_attempt_at is not None
    with sessions() as session:
        assert session.get(ReportOutboxRow, report.id) is None  # nothing can be sent yet
        bundle = session.get(ReportBundleRow, report.id)
        assert bundle is not None and bundle.viral and bundle.released_at is None
    assert [f.submission_id for f in _files(sessions, report.id)] == sids
    # a submission that joined is already reported: `tipline report auto` says so
    evidence = VaultEvidence(vault, actor=DELIVERY)
    again = service.auto_report(sessions, sids[2], settings=_settings(), evidence=evidence)
    assert again is not None and again.id == report.id

    assert _release(sessions, vault) == [report.id]
    (report,) = _reports(sessions)
    doc = _valid(sessions, report)
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    users = [u.findtext("espIdentifier") for u in doc.findall("personOrUserReported")]
    assert users == ["user-1", "user-2", "user-3"]
    ports = {e.findtext("port") for e in doc.iter("ipCaptureEvent")}
    assert ports == {"40001", "40002", "40003", "40004"}
    assert "4 uploads of one perceptual cluster by 3 accounts" in doc.findtext("additionalInfo")
    for row in _files(sessions, report.id):
        file = file_from_json(row.details)
        assert file.potential_meme and not file.viewed_by_esp and not file.exif_viewed_by_esp
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.step == "submit" and summary.status == "queued"
    actions = _actions(sessions)
    assert actions.count("report.create") == 1 and actions.count("report.bundle_join") == 3
    assert actions.count("report.viral") == 1 and actions.count("report.release") == 1
    assert _release(sessions, vault) == []  # released once


def test_below_the_threshold_one_report_not_marked_viral(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")
    _upload(sessions, vault, 2, "user-2")
    (report,) = _reports(sessions)
    _release(sessions, vault)
    (report,) = _reports(sessions)
    doc = _valid(sessions, report)
    assert doc.find("batchedReport") is None
    assert len(doc.findall("personOrUserReported")) == 2
    assert not any(file_from_json(r.details).potential_meme for r in _files(sessions, report.id))


def test_other_clusters_tenants_and_times_found_their_own_bundles(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")
    _upload(sessions, vault, 2, "user-2", pdq=FAR)  # another picture
    _upload(sessions, vault, 3, "user-3", who=OTHER)  # another tenant
    assert len(_reports(sessions)) == 3
    # a single upload is released as a plain auto-report
    _release(sessions, vault)
    for report in _reports(sessions):
        assert report.kind == "auto" and len(_files(sessions, report.id)) == 1
        assert _valid(sessions, report).find("batchedReport") is None


def test_a_released_report_never_changes_and_later_bundles_count_the_cluster(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")
    _upload(sessions, vault, 2, "user-2")
    (first,) = _release(sessions, vault)
    xml_before = _reports(sessions)[0].xml
    _upload(sessions, vault, 3, "user-3")  # the cluster's third account, after release
    reports = _reports(sessions)
    assert len(reports) == 2
    assert reports[0].id == first and reports[0].xml == xml_before
    assert len(_files(sessions, first)) == 2
    with sessions() as session:
        later = session.get(ReportBundleRow, reports[1].id)
        assert later is not None and later.viral  # 3 accounts in the cluster's window
        assert not session.get(ReportBundleRow, first).viral  # type: ignore[union-attr]
    _release(sessions, vault)
    doc = _valid(sessions, _reports(sessions)[1])
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"


def test_urgent_unhashed_anonymous_and_unheld_reports_are_queued_at_once(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")  # held: the bundle others would join
    _upload(sessions, vault, 2, "user-2", match=URGENT)
    _upload(sessions, vault, 3, "user-3", pdq=None)  # no PDQ hash (e.g. a video)
    _upload(sessions, vault, 4, "user-4", settings=_settings(report_viral_hold_seconds=0))
    _upload(sessions, vault, 5, None)  # no account (a scanned file): not about accounts
    steps = {s.source: s.step for s in service.list_reports(sessions, ACME_ADMIN)}
    assert sorted(steps.values(), key=str) == ["held", "submit", "submit", "submit", "submit"]
    with sessions() as session:
        assert session.execute(select(func.count(ReportBundleRow.report_id))).scalar_one() == 1


def test_a_report_retracted_while_held_is_not_released_and_not_joined(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")
    (report,) = _reports(sessions)
    assert service.retract(sessions, ACME_ADMIN, report.id).status == "retracted"
    _upload(sessions, vault, 2, "user-2")
    reports = _reports(sessions)
    assert len(reports) == 2 and len(_files(sessions, report.id)) == 1
    assert _release(sessions, vault) == [reports[1].id]
    with sessions() as session:
        assert session.get(ReportOutboxRow, report.id) is None


def test_the_job_runner_releases_a_bundle_when_its_hold_is_over(
    engine: Engine, sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _upload(sessions, vault, 1, "user-1")
    _upload(sessions, vault, 2, "user-2")
    clock = ManualClock()
    settings = _settings()
    handler = viral.ReleaseJob(
        sessions, settings, VaultEvidence(vault, actor=DELIVERY), clock=clock.now
    )
    runner = JobRunner(engine, {viral.RELEASE_JOB_KIND: handler}, clock=clock)
    assert runner.run_once() == 0  # held: the release job is not due
    assert [s.step for s in service.list_reports(sessions, ACME_ADMIN)] == ["held"]
    clock.advance(601)
    assert runner.run_once() == 1
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.step == "submit" and summary.files == 2
    assert viral.ensure_release_scheduled(sessions) is None  # nothing held any more


def test_concurrent_matches_make_one_bundle_and_lose_no_file(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    threads, each = 6, 3
    barrier = threading.Barrier(threads)
    made: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=HANG_SECONDS)
            for k in range(each):
                n = t * each + k + 1
                sid = _upload(sessions, vault, n, f"user-{n}", pdq=MEME if k % 2 else NEAR)
                with lock:
                    made.append(sid)
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=HANG_SECONDS)
    assert not errors, errors
    (report,) = _reports(sessions)
    files = _files(sessions, report.id)
    assert sorted(f.submission_id for f in files) == sorted(made)
    assert [f.seq for f in files] == list(range(threads * each))
    _release(sessions, vault)
    doc = _valid(sessions, _reports(sessions)[0])
    assert len(doc.findall("personOrUserReported")) == threads * each
    assert doc.find("batchedReport") is not None


def test_concurrent_bundling_decisions_without_other_locks_stay_one_bundle(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    """The bundling step alone, in concurrent transactions that take no other lock
    before it (the match path's rules also lock the audit chain, which would hide a
    missing lock of ours): every round makes one bundle holding every upload."""
    from tipline.services.reports.auto import queue_at_match
    from tipline.store.db import transaction

    policy = AutoReportPolicy.from_settings(_settings(report_viral_threshold=50))
    threads, rounds = 6, 3
    for r in range(rounds):
        pdq = f"{r + 1:x}" * 64  # one cluster per round, far from the others
        sids = []
        for t in range(threads):
            n = 100 * (r + 1) + t
            facts = submissions.SubmissionFacts(
                f"c-{n}", uploader_account=f"user-{n}", upload_ip="198.51.100.9"
            )
            made = submissions.create_submission(
                sessions, ACME, facts, [{"type": "pdq", "value": pdq}]
            )
            with transaction(sessions) as session:
                v.keep_for_report(
                    session, vault, f"benign {n}".encode(), submission_id=made.id,
                    actor=ACME, tenant="acme",
                )  # fmt: skip
            sids.append(made.id)
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def work(sid: str, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            try:
                with transaction(sessions) as session:
                    row = session.get(SubmissionRow, sid)
                    assert row is not None
                    barrier.wait(timeout=HANG_SECONDS)
                    assert queue_at_match(session, policy, vault, row, ["trusted/e1"])
            except BaseException as exc:  # reported below
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(sid, barrier, errors)) for sid in sids]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=HANG_SECONDS)
        assert not errors, errors
        with sessions() as session:
            holding = set(
                session.scalars(
                    select(ReportFileRow.report_id).where(ReportFileRow.submission_id.in_(sids))
                )
            )
            files = session.scalars(
                select(ReportFileRow.submission_id).where(ReportFileRow.report_id.in_(holding))
            ).all()
        assert len(holding) == 1, f"round {r}: {len(holding)} bundles"
        assert sorted(files) == sorted(sids)


def test_a_released_viral_bundle_is_delivered_with_every_file(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    """The receiver (a real HTTP server validating every body against the XSD) gets
    one report naming every account, and every file, potential meme, NOT viewed, with
    its MD5; a later upload of the cluster is a new report."""
    import hashlib

    from _ispws_server import ispws_server

    for n in range(1, 5):
        _upload(sessions, vault, n, f"user-{n}")
    (report_id,) = _release(sessions, vault)
    evidence = VaultEvidence(vault, actor=DELIVERY)
    with ispws_server() as rx:
        delivery = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        assert service.deliver(sessions, settings=delivery, evidence=evidence).finished == 1
        assert rx.receiver.rejections == []
        (remote,) = rx.receiver.reports.values()
    doc = etree.fromstring(remote.xml)
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    assert len(doc.findall("personOrUserReported")) == 4
    assert sorted(f.md5 for f in remote.files.values()) == sorted(
        hashlib.md5(f"benign placeholder {n}".encode(), usedforsecurity=False).hexdigest()
        for n in range(1, 5)
    )
    for file in remote.files.values():
        assert file.details is not None
        details = etree.fromstring(file.details)
        assert details.findtext("fileViewedByEsp") == "false"
        assert details.findtext("potentialMeme") == "true"
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.id == report_id and summary.status == "finished"
    _upload(sessions, vault, 5, "user-5")
    assert len(_reports(sessions)) == 2 and len(_files(sessions, report_id)) == 4


@pytest.mark.parametrize("max_files", [None, 3])
def test_match_time_bundles_are_the_clusters_of_the_offline_plan(
    sessions: sessionmaker[Session], vault: v.Vault, max_files: int | None
) -> None:
    """Twin check: uploads in time order, each by its own account, bundle at match time
    exactly as :func:`bundling.plan` clusters them (the first open cluster whose
    founding upload is within the PDQ distance; with threshold 2 and distinct accounts
    every cluster of two or more is a bundle, the rest singles), also when a file cap
    splits clusters (a full bundle is released at once; the plan closes the cluster)."""
    import random

    from tipline.services.reports import bundling

    rng = random.Random(11)
    bases = [rng.getrandbits(256) for _ in range(3)]
    pdqs = []
    for _ in range(14):
        value = rng.choice(bases) if rng.random() < 0.8 else rng.getrandbits(256)
        for bit in rng.sample(range(256), rng.randint(0, 24)):
            value ^= 1 << bit
        pdqs.append(f"{value:064x}")
    settings = _settings(report_viral_max_files=max_files or 1000)
    sids = [
        _upload(sessions, vault, n, f"user-{n}", pdq=pdq, settings=settings)
        for n, pdq in enumerate(pdqs)
    ]
    with sessions() as session:
        at = {
            sid: when
            for sid, when in session.execute(
                select(SubmissionRow.id, SubmissionRow.created_at).where(SubmissionRow.id.in_(sids))
            )
        }
    expected = bundling.plan(
        [
            bundling.Upload(sid, f"user-{n}", at[sid], bytes.fromhex(pdq))
            for n, (sid, pdq) in enumerate(zip(sids, pdqs, strict=True))
        ],
        window=timedelta(hours=1),
        threshold=2,
        max_distance=31,
        max_files=max_files,
    )
    want = sorted(
        [sorted(u.key for u in b) for b in expected.bundles] + [[u.key] for u in expected.singles]
    )
    got = sorted(
        sorted(str(f.submission_id) for f in _files(sessions, r.id)) for r in _reports(sessions)
    )
    assert got == want and len(expected.bundles) >= 2
    if max_files is not None:  # the cap split a cluster here, so the test covers it
        assert max(len(b) for b in expected.bundles) == max_files
        assert len(expected.bundles) > len(bundling.plan(
            expected.singles + [u for b in expected.bundles for u in b],
            window=timedelta(hours=1), threshold=2, max_distance=31,
        ).bundles)  # fmt: skip


def test_a_full_bundle_is_released_at_once_and_the_next_upload_founds_another(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    """``report_viral_max_files`` 3: one file short of the cap the bundle is held; the
    join that fills it releases it in the match's transaction (final document valid,
    preserved, queued, audited with reason ``full``); the cluster's next upload founds a
    new held bundle, viral at once (the cluster already has 3 accounts)."""
    settings = _settings(report_viral_max_files=3)
    sids = [_upload(sessions, vault, n, f"user-{n}", settings=settings) for n in (1, 2)]
    (first,) = _reports(sessions)
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.step == "held" and summary.files == 2  # the boundary: 2 of 3
    sids.append(_upload(sessions, vault, 3, "user-3", settings=settings))
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.id == first.id and summary.step == "submit" and summary.files == 3
    with sessions() as session:
        assert session.get(ReportOutboxRow, first.id) is not None
        assert session.get(ReportBundleRow, first.id).released_at is not None  # type: ignore[union-attr]
        release = json.loads(
            session.scalars(
                select(AuditRecord.details).where(AuditRecord.action == "report.release")
            ).one()
        )
        assert release["reason"] == "full" and release["files"] == 3
        assert _preserved(session, first.id) == [_reports(sessions)[0].xml_sha256]
    doc = _valid(sessions, _reports(sessions)[0])
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    assert [f.submission_id for f in _files(sessions, first.id)] == sids
    for n in range(4, 8):
        _upload(sessions, vault, n, f"user-{n}", settings=settings)
    reports = _reports(sessions)
    assert [len(_files(sessions, r.id)) for r in reports] == [3, 3, 1]
    steps = {s.id: s.step for s in service.list_reports(sessions, ACME_ADMIN)}
    assert [steps[r.id] for r in reports] == ["submit", "submit", "held"]
    with sessions() as session:
        assert session.get(ReportBundleRow, reports[2].id).viral  # type: ignore[union-attr]
    assert _release(sessions, vault, settings) == [reports[2].id]
    for report in _reports(sessions):
        _valid(sessions, report)
    assert _release(sessions, vault, settings) == []  # the full ones were released once


def test_a_refused_fact_drops_that_uploads_report_not_the_bundle(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    from tipline.services import audit

    _upload(sessions, vault, 1, "user-1")
    refused = _upload(sessions, vault, BAD_PORT, "user-2")  # port 70000: not a port
    _upload(sessions, vault, 3, "user-3")
    (report,) = _reports(sessions)
    assert refused not in {f.submission_id for f in _files(sessions, report.id)}
    assert len(_files(sessions, report.id)) == 2
    assert _actions(sessions).count("report.not_queued") == 1
    with sessions() as session:  # the savepoint's rollback left the chain whole
        assert audit.verify(session).ok
    _release(sessions, vault)
    _valid(sessions, _reports(sessions)[0])


def test_tipline_worker_releases_the_bundle_and_delivers_it(deployment: Deployment) -> None:
    """``tipline worker`` runs the ``report.release`` job (the hold's end simulated by
    moving the bundle's and its job's time to now: no waiting on the wall clock) and
    then delivers the one report to the test receiver. (The worker runs in this
    process; the worker as a process: test_reports_worker.py.)"""
    from _cli import run_tipline
    from _ispws_server import ispws_server
    from tipline.store.db import transaction
    from tipline.store.jobs import Job

    sessions = deployment.sessions
    for n in range(1, 4):
        _upload(sessions, deployment.vault, n, f"user-{n}", settings=deployment.settings)
    (report,) = _reports(sessions)
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(update(ReportBundleRow).values(hold_until=now))
        session.execute(update(Job).where(Job.kind == viral.RELEASE_JOB_KIND).values(run_at=now))
    with ispws_server() as rx:
        done = run_tipline(
            ["worker", "--exit-when-idle", "--poll-interval", "0.1"], env=deployment.env(rx)
        )
        assert done.returncode == 0, done.stderr
        assert rx.receiver.rejections == []
        (remote,) = rx.receiver.reports.values()
        assert remote.finished == 1 and len(remote.files) == 3
    doc = etree.fromstring(remote.xml)
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    assert len(doc.findall("personOrUserReported")) == 3
    (summary,) = service.list_reports(sessions, ACME_ADMIN)
    assert summary.id == report.id and summary.status == "finished"


def test_tipline_report_deliver_releases_the_bundles_whose_hold_is_over(
    deployment: Deployment,
) -> None:
    """``tipline report deliver`` (no worker running) first releases the bundles whose
    hold is over, by the release job's own function, and delivers them; a bundle still
    held stays held and unsent."""
    from _cli import run_tipline
    from _ispws_server import ispws_server
    from tipline.store.db import transaction

    sessions, settings = deployment.sessions, deployment.settings
    for n in range(1, 4):
        _upload(sessions, deployment.vault, n, f"user-{n}", settings=settings)
    (due,) = _reports(sessions)
    _upload(sessions, deployment.vault, 4, "user-4", pdq=FAR, settings=settings)
    with transaction(sessions) as session:  # the first bundle's hold is over
        session.execute(
            update(ReportBundleRow)
            .where(ReportBundleRow.report_id == due.id)
            .values(hold_until=utcnow() - timedelta(seconds=1))
        )
    assert service.pending_deliveries(sessions) == 1
    with ispws_server() as rx:
        done = run_tipline(["report", "deliver"], env=deployment.env(rx))
        assert done.returncode == 0, done.stderr
        assert "finished 1, failed 0" in done.stderr
        assert rx.receiver.rejections == []
        (remote,) = rx.receiver.reports.values()
        assert remote.finished == 1 and len(remote.files) == 3
    doc = etree.fromstring(remote.xml)
    assert doc.find("batchedReport").get("reason") == "VIRAL_POTENTIAL_MEME"
    assert len(doc.findall("personOrUserReported")) == 3
    states = {s.id: (s.status, s.step) for s in service.list_reports(sessions, ACME_ADMIN)}
    assert states.pop(due.id) == ("finished", None)
    assert list(states.values()) == [("queued", "held")]
    assert _actions(sessions).count("report.release") == 1


def test_a_held_bundle_says_so_and_its_unfinished_document_is_refused(
    db_url: str, deployment: Deployment, tmp_path: Path
) -> None:
    """While held a bundle has no final document (its release builds one from every
    upload), so every view says "held: N uploads, document built at release" and every
    download of the XML (service, ``tipline report xml``, ``GET /v1/reports/{id}/xml``)
    is refused with that reason (409, one CLI line, audited); once released the final
    document is what each of them gives, the one preserved in the vault."""
    import hashlib

    from _app_server import app_server
    from _cli import run_tipline
    from tipline.errors import ConflictError

    sessions, vault = deployment.sessions, deployment.vault
    tenant_a = Principal("tena00000001", Role.MATCHER, "tenant-a")
    cli = Principal.cli()
    for n, user in ((1, "user-1"), (2, "user-2"), (3, "user-1")):
        _upload(sessions, vault, n, user, who=tenant_a)
    (report,) = _reports(sessions)
    (summary,) = service.list_reports(sessions, cli)
    assert (summary.step, summary.held_uploads, summary.held_accounts) == ("held", 3, 2)
    with pytest.raises(ConflictError, match=r"held until .*3 upload\(s\) by 2 account\(s\)"):
        service.report_xml(sessions, cli, report.id)
    assert _actions(sessions).count("report.download_refused") == 1

    env = deployment.env()
    got = run_tipline(["report", "xml", report.id], env=env)
    assert got.returncode == 2 and got.stdout == ""
    assert len(got.stderr.strip().splitlines()) == 1 and "held until" in got.stderr
    held = "3 upload(s) by 2 account(s) so far, document built at release"
    assert held in run_tipline(["report", "list"], env=env).stdout
    assert held in run_tipline(["report", "show", report.id], env=env).stdout.splitlines()[0]

    with app_server(db_url, tmp_path / "api", report_reporter_email="reports@example.org") as srv:
        client = srv.client("a_reviewer")
        refused = client.get(f"/v1/reports/{report.id}/xml")
        assert refused.status_code == 409 and "held until" in refused.json()["detail"]
        (listed,) = client.get("/v1/reports").json()
        assert (listed["step"], listed["held_uploads"], listed["held_accounts"]) == ("held", 3, 2)
        assert _actions(sessions).count("report.download_refused") == 3

        assert _release(sessions, vault) == [report.id]
        final = client.get(f"/v1/reports/{report.id}/xml")
        assert final.status_code == 200, final.text
    (report,) = _reports(sessions)
    assert final.content == report.xml.encode() == service.report_xml(sessions, cli, report.id)
    with sessions() as session:
        assert _preserved(session, report.id) == [hashlib.sha256(final.content).hexdigest()]
    doc = _valid(sessions, report)
    assert len(doc.findall("personOrUserReported")) == 2
    assert "3 uploads of one perceptual cluster by 2 accounts" in doc.findtext("additionalInfo")
    (summary,) = service.list_reports(sessions, cli)
    assert summary.step == "submit" and summary.held_uploads is None
