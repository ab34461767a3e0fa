"""The auto-report policy at match time: an exact match of an entry in a bank whose
entries a trusted source confirmed queues the report (files NOT viewed) and keeps the
media in the vault, in the match's own transaction; through the service, the API
(``/v1/match``, served in this process) and a real scan. All media are benign generated
pictures whose digests were put in a bank."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from _app_server import app_server
from _clock import HANG_SECONDS
from _ispws_server import ispws_server
from tipline.config import Settings
from tipline.errors import ConflictError
from tipline.services import actions, audit, submissions
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.matching.match import Match
from tipline.services.reports import service
from tipline.services.reports.auto import AutoReportPolicy
from tipline.services.vault.blobs import BlobStore
from tipline.services.vault.evidence import VaultEvidence
from tipline.services.vault.keys import Keyring, MasterKey
from tipline.signals.base import Signal
from tipline.store.audit import AuditRecord
from tipline.store.bank_tables import BankRow
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.models import import_all_models
from tipline.store.reports import ReportRow
from tipline.store.submissions import SubmissionRow

ACME = Principal("acme00000001", Role.MATCHER, "acme")
ACME_ADMIN = Principal("acme00000002", Role.ADMIN, "acme")
ADMIN = Principal("admin0000001", Role.ADMIN)
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


def _settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "report_reporter_email": "reports@example.org",
        "report_platform": "Example Photos",
        "report_auto_banks": ["trusted"],
        "report_viral_hold_seconds": 0,  # queued at once (bundling: test_reports_viral.py)
    }
    return Settings(**(base | kw))  # type: ignore[arg-type]


SIGNALS = [Signal(type="md5", value="1" * 32), Signal(type="pdq", value="f" * 64)]
EXACT = Match(bank="trusted", entry_id="e1", signal_type="md5", distance=0)


def _match(
    sessions: sessionmaker[Session],
    vault: v.Vault | None,
    matches: list[Match],
    *,
    settings: Settings | None = None,
    media: bytes | None = b"\xff\xd8benign bytes\xff\xd9",
    content_id: str | None = "c-1",
) -> str | None:
    policy = AutoReportPolicy.from_settings(settings or _settings())
    facts = (
        submissions.SubmissionFacts(
            content_id, uploader_account="user-7", upload_ip="198.51.100.9", upload_port=40001
        )
        if content_id is not None
        else None
    )
    return submissions.match_and_record(
        sessions,
        ACME,
        SIGNALS,
        lambda _session: matches,
        submission=facts,
        media=media,
        vault=vault,
        auto_report=policy,
    ).submission_id


def _actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))


def _reports(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(ReportRow)).scalar_one())


def _banks(sessions: sessionmaker[Session], **modes: str) -> None:
    with transaction(sessions) as session:
        for name, mode in modes.items():
            session.add(BankRow(name=name, auto_report=mode))


def test_policy_covers_only_exact_unsuppressed_matches_of_auto_banks(
    sessions: sessionmaker[Session],
) -> None:
    policy = AutoReportPolicy.from_settings(_settings(report_auto_banks=["trusted", "t2"]))
    near = Match(bank="trusted", entry_id="e2", signal_type="pdq", distance=0)
    other = Match(bank="community", entry_id="e3", signal_type="md5", distance=0)
    allowed = Match(
        bank="trusted", entry_id="e4", signal_type="sha256", distance=0, suppressed_by="allow/x"
    )
    sha = Match(bank="t2", entry_id="e5", signal_type="sha256", distance=0)
    _banks(sessions, trusted="default", community="default")  # t2: no row, counts as default
    with sessions() as session:
        assert policy.covers(session, [near, other, allowed]) == []
        assert policy.covers(session, [EXACT, near, sha, EXACT]) == ["t2/e5", "trusted/e1"]
        assert AutoReportPolicy.from_settings(Settings()).covers(session, [EXACT, sha]) == []
        assert policy.covers_each(session, [[near], [], [sha, other], [EXACT]]) == [
            [],
            [],
            ["t2/e5"],
            ["trusted/e1"],
        ]


def test_each_bank_policy_decides_which_matches_are_reported(
    sessions: sessionmaker[Session],
) -> None:
    # listed in the settings, but each bank's own policy decides; default follows the list
    policy = AutoReportPolicy.from_settings(_settings(report_auto_banks=["listed", "off"]))
    _banks(sessions, listed="default", unlisted="default", off="off", exact="exact")
    _banks(sessions, trust="trusted")

    def covers(*matches: Match) -> list[str]:
        with sessions() as session:
            return policy.covers(session, list(matches))

    def m(bank: str, kind: str, distance: int = 0, **kw: str) -> Match:
        return Match(
            bank=bank, entry_id=f"{kind}{distance}", signal_type=kind, distance=distance, **kw
        )

    assert covers(m("listed", "md5"), m("unlisted", "md5"), m("off", "sha256")) == ["listed/md50"]
    assert covers(m("exact", "sha1"), m("exact", "pdq"), m("exact", "md5", 3)) == ["exact/sha10"]
    assert covers(
        m("trust", "sha256"),
        m("trust", "pdq"),
        m("trust", "pdq", 4),  # a near match is never reported unseen
        m("trust", "pdq", variant="uncaption"),
        m("trust", "pdq", tier="region"),
        m("trust", "vpdq"),
        m("trust", "md5", suppressed_by="allow/x"),
    ) == ["trust/pdq0", "trust/sha2560"]


def test_a_bank_policy_applies_at_match_time_and_to_report_auto(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    _banks(sessions, trusted="off", exact="exact")
    # listed in report_auto_banks but switched off on the bank: no report, either path
    sid = _match(sessions, vault, [EXACT])
    assert sid is not None and _reports(sessions) == 0
    evidence = VaultEvidence(vault, actor=DELIVERY)
    assert service.auto_report(sessions, sid, settings=_settings(), evidence=evidence) is None
    # a bank set to exact is reported although the settings list no bank
    unlisted = _settings(report_auto_banks=[])
    hit = Match(bank="exact", entry_id="e9", signal_type="sha256", distance=0)
    sid = _match(sessions, vault, [hit], settings=unlisted, content_id="c-2")
    (report,) = service.list_reports(sessions, ACME_ADMIN)
    assert report.source == f"auto:{sid}" and report.kind == "auto"
    with sessions() as session:
        assert service.auto_report_matches(session, str(sid), unlisted) == ["exact/e9"]


def test_exact_trusted_match_queues_a_not_viewed_report_with_the_media_kept(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    upload = b"\xff\xd8benign bytes\xff\xd9"
    submission_id = _match(sessions, vault, [EXACT], media=upload)
    assert submission_id is not None
    (report,) = service.list_reports(sessions, ACME_ADMIN)
    assert report.kind == "auto" and report.status == "queued" and report.step == "submit"
    assert report.source == f"auto:{submission_id}" and report.tenant == "acme"
    detail = service.get_report(sessions, ACME_ADMIN, report.id)
    assert [(f["submission_id"], f["viewed_by_esp"]) for f in detail.files] == [
        (submission_id, False)
    ]
    items = v.list_items(sessions, actor=ADMIN, submission_id=submission_id)
    assert [(i.kind, i.meta.get("reason")) for i in items] == [("media", "auto-report")]
    assert v.read_bytes(sessions, vault, items[0].id, actor=ADMIN) == upload
    xml = etree.fromstring(service.report_xml(sessions, ACME_ADMIN, report.id))
    assert "without human review" in (xml.findtext("additionalInfo") or "")
    assert xml.findtext("personOrUserReported/ipCaptureEvent/port") == "40001"
    # idempotent: the batch command and a second policy run find the same report
    evidence = VaultEvidence(vault, actor=DELIVERY)
    again = service.auto_report(sessions, submission_id, settings=_settings(), evidence=evidence)
    assert again is not None and again.id == report.id
    assert (
        service.auto_report_many(sessions, [submission_id], settings=_settings(), evidence=evidence)
        == []
    )
    assert _reports(sessions) == 1
    # delivered: the receiver is told nobody viewed the file
    with ispws_server() as rx:
        delivery = _settings(
            report_ispws_url=rx.url,
            report_ispws_username=rx.username,
            report_ispws_password=rx.password,
        )
        assert service.deliver(sessions, settings=delivery, evidence=evidence).finished == 1
        [remote] = rx.receiver.reports.values()
    [file] = remote.files.values()
    details = etree.fromstring(file.details)
    assert details.findtext("fileViewedByEsp") == "false"
    assert details.findtext("exifViewedByEsp") == "false"


def test_same_content_again_is_not_reported_twice_and_other_matches_not_at_all(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    first = _match(sessions, vault, [EXACT])
    retried = _match(sessions, vault, [EXACT])  # the platform retried the call
    other_content = _match(sessions, vault, [EXACT], content_id="c-2")
    near = _match(
        sessions, vault, [Match(bank="trusted", entry_id="e1", signal_type="pdq", distance=3)]
    )
    untrusted = _match(
        sessions, vault, [Match(bank="community", entry_id="x", signal_type="md5", distance=0)]
    )
    reports = service.list_reports(sessions, ACME_ADMIN)
    assert sorted(r.source for r in reports) == sorted([f"auto:{first}", f"auto:{other_content}"])
    assert retried not in {near, untrusted, None}
    assert "report.already_reported" in _actions(sessions)
    # no review rule and no report: nothing of these two was kept
    for sid in (near, untrusted):
        assert v.list_items(sessions, actor=ADMIN, submission_id=sid) == []


def test_a_report_that_cannot_be_made_is_audited_and_the_match_still_recorded(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    # no media (hashes only), no reporter configured, no vault key
    no_media = _match(sessions, None, [EXACT], media=None, content_id="c-1")
    unconfigured = _match(
        sessions, vault, [EXACT], content_id="c-2", settings=_settings(report_reporter_email=None)
    )
    keyless = v.Vault(vault.blobs, None)
    no_key = _match(sessions, keyless, [EXACT], content_id="c-3")
    assert _reports(sessions) == 0
    with sessions() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.action == "report.not_queued")
        ).all()
        reasons = {r.target_id: r.details for r in records}
        assert session.get(SubmissionRow, no_media) is not None
    assert set(reasons) == {no_media, unconfigured, no_key}
    assert "no media" in reasons[no_media]
    assert "REPORTER_EMAIL" in reasons[unconfigured]
    assert "vault.not_kept" in _actions(sessions)
    # the media kept for the unconfigured one lets the operator report it later
    assert len(v.list_items(sessions, actor=ADMIN, submission_id=unconfigured)) == 1
    assert unconfigured is not None
    made = service.auto_report(
        sessions, unconfigured, settings=_settings(), evidence=VaultEvidence(vault, actor=DELIVERY)
    )
    assert made is not None and made.kind == "auto"


def test_the_report_commits_with_the_match_or_not_at_all(
    sessions: sessionmaker[Session], vault: v.Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("database went away mid-transaction")

    monkeypatch.setattr(service, "queue_report", broken)
    with pytest.raises(RuntimeError):
        _match(sessions, vault, [EXACT])
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(SubmissionRow)).scalar_one() == 0
    assert _reports(sessions) == 0
    assert v.list_items(sessions, actor=ADMIN, include_purged=True) == []
    assert list(vault.blobs.ids()) == []  # the sealed media file went with the rollback


def test_an_item_without_submission_facts_gets_one_and_review_does_not_report_it_twice(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    with transaction(sessions) as session:
        session.add(BankRow(name="trusted", tenant="acme"))
        session.flush()
        actions.add_rule(session, action="enqueue_review", bank="trusted", tenant="acme")
    submission_id = _match(sessions, vault, [EXACT], content_id=None)
    assert submission_id is not None
    with sessions() as session:
        row = session.get(SubmissionRow, submission_id)
        assert row is not None and row.content_id == "upload"
        queue = actions.review_queue(session, actor=ACME_ADMIN)
    (report,) = service.list_reports(sessions, ACME_ADMIN)
    # one media item, linked to the review item, feeds the report
    (item,) = v.list_items(sessions, actor=ADMIN, submission_id=submission_id)
    assert item.review_item_id == queue[0]["id"]
    with transaction(sessions) as session:
        decision = actions.decide(
            session,
            queue[0]["id"],
            actions.ReviewStatus.CONFIRMED,
            actor=ACME_ADMIN,
            facts={"viewed": True},
        )
    assert decision is not None
    with pytest.raises(ConflictError, match=f"already in report {report.id}"):
        service.create_from_decision(
            sessions,
            ACME_ADMIN,
            decision,
            settings=_settings(),
            evidence=VaultEvidence(vault, actor=DELIVERY),
        )
    assert _reports(sessions) == 1


# -- the doors: a real server and a real scan ----------------------------------------------


def _picture(seed: int) -> bytes:
    """A benign smooth random picture (JPEG); distinct seeds give distinct files."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC).save(buf, "JPEG")
    return buf.getvalue()


def test_api_match_queues_the_auto_report(tmp_path: Path) -> None:
    settings = {
        "vault_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
        "report_auto_banks": ["trusted"],
        "report_reporter_email": "reports@example.org",
        # queued at once with its final document (a held bundle's XML is built at
        # release: test_reports_viral.py)
        "report_viral_hold_seconds": 0,
    }
    known, other = _picture(1), _picture(2)
    with app_server(f"sqlite:///{tmp_path / 'tipline.db'}", tmp_path, **settings) as server:
        curator = server.client("a_curator")
        assert curator.post("/v1/banks", json={"name": "trusted"}).status_code == 201
        added = curator.post("/v1/banks/trusted/media?entry_id=k1", content=known)
        assert added.status_code == 201, added.text
        matcher = server.client("a_matcher")
        sent = matcher.post(
            "/v1/match",
            params={"content_id": "c-1", "uploader_account": "u-1", "upload_ip": "192.0.2.4"},
            content=known,
        )
        assert sent.status_code == 200 and sent.json()["matched"], sent.text
        submission_id = sent.json()["submission_id"]
        miss = matcher.post("/v1/match", params={"content_id": "c-2"}, content=other)
        assert miss.status_code == 200 and not miss.json()["matched"]
        hashes_only = matcher.post(
            "/v1/match/signals",
            json={
                "signals": [
                    {"type": s["type"], "value": s["value"]}
                    for s in sent.json()["signals"]
                    if s["type"] == "md5"
                ],
                "submission": {"content_id": "c-3"},
            },
        )
        assert hashes_only.status_code == 200, hashes_only.text
        reviewer = server.client("a_reviewer")
        listed = reviewer.get("/v1/reports").json()
        assert [(r["kind"], r["status"], r["source"]) for r in listed] == [
            ("auto", "queued", f"auto:{submission_id}")
        ]
        shown = reviewer.get(f"/v1/reports/{listed[0]['id']}").json()
        assert [f["viewed_by_esp"] for f in shown["files"]] == [False]
        xml = reviewer.get(f"/v1/reports/{listed[0]['id']}/xml")
        assert xml.status_code == 200
        assert etree.fromstring(xml.content).findtext("personOrUserReported/espIdentifier") == (
            "u-1"
        )
        items = reviewer.get("/v1/vault/items", params={"submission_id": submission_id}).json()
        assert [i["kind"] for i in items] == ["media"]
        got = reviewer.get(f"/v1/vault/items/{items[0]['id']}/content")
        assert got.content == known
        assert server.client("b_reviewer").get("/v1/reports").json() == []
        engine = make_engine(server.db_url)
        try:
            with session_factory(engine)() as session:
                not_queued = session.scalars(
                    select(AuditRecord.details).where(AuditRecord.action == "report.not_queued")
                ).all()
        finally:
            engine.dispose()
        assert len(not_queued) == 1 and "no media" in not_queued[0]


def test_api_bank_policy_is_set_shown_and_applied_by_v1_match(tmp_path: Path) -> None:
    settings = {
        "vault_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
        "report_reporter_email": "reports@example.org",
    }  # no report_auto_banks: only the bank's own policy can report
    known = _picture(3)
    with app_server(f"sqlite:///{tmp_path / 'tipline.db'}", tmp_path, **settings) as server:
        curator = server.client("a_curator")
        bad = curator.post("/v1/banks", json={"name": "trusted", "auto_report": "always"})
        assert bad.status_code == 422, bad.text
        made = curator.post("/v1/banks", json={"name": "trusted", "auto_report": "off"})
        assert made.status_code == 201 and made.json()["auto_report"] == "off", made.text
        assert curator.post("/v1/banks/trusted/media?entry_id=k1", content=known).is_success
        matcher = server.client("a_matcher")
        reviewer = server.client("a_reviewer")
        first = matcher.post("/v1/match", params={"content_id": "c-1"}, content=known)
        assert first.status_code == 200 and first.json()["matched"], first.text
        assert reviewer.get("/v1/reports").json() == []
        patched = curator.patch("/v1/banks/trusted", json={"auto_report": "exact"})
        assert patched.status_code == 200 and patched.json()["auto_report"] == "exact"
        assert curator.get("/v1/banks/trusted").json()["auto_report"] == "exact"
        second = matcher.post("/v1/match", params={"content_id": "c-2"}, content=known)
        assert second.status_code == 200, second.text
        listed = reviewer.get("/v1/reports").json()
        assert [(r["kind"], r["source"]) for r in listed] == [
            ("auto", f"auto:{second.json()['submission_id']}")
        ]


def test_scan_queues_one_auto_report_per_file(db_url: str, tmp_path: Path) -> None:
    """``tipline scan`` as a command (its workers read the policy from the environment)."""
    from tipline.services.banks import add_entry, create_bank
    from tipline.services.database import open_database
    from tipline.signals.hashing import HashOptions, hash_path

    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(4):
        (folder / f"img{i}.jpg").write_bytes(_picture(10 + i))
    key = base64.b64encode(os.urandom(32)).decode()
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_VAULT_MASTER_KEY": key,
        "TIPLINE_REPORT_AUTO_BANKS": '["trusted"]',
        "TIPLINE_REPORT_REPORTER_EMAIL": "reports@example.org",
    }
    db = open_database(db_url)
    create_bank(db, "trusted")
    for i in (0, 2):
        digest = hash_path(str(folder / f"img{i}.jpg"), HashOptions())
        md5 = next(s.value for s in digest.signals if s.type == "md5")
        add_entry(db, "trusted", [f"md5:{md5}"], entry_id=f"k{i}")
    db.close()

    def scan() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "tipline.cli.main", "scan", str(folder), "--jobs", "2",
             "--progress-interval", "0"],
            capture_output=True, text=True, timeout=HANG_SECONDS, check=False, env=env,
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "matched 2" in done.stdout, done.stdout

    scan()
    db = open_database(db_url)
    try:
        reports = service.list_reports(db.sessions, ADMIN)
        assert sorted(r.kind for r in reports) == ["auto", "auto"]
        files = [f for r in reports for f in service.get_report(db.sessions, ADMIN, r.id).files]
        assert [f["viewed_by_esp"] for f in files] == [False, False]
        with db.sessions() as session:
            rows = [session.get(SubmissionRow, f["submission_id"]) for f in files]
            assert sorted(r.file_name for r in rows if r is not None) == ["img0.jpg", "img2.jpg"]
        settings = Settings(data_dir=tmp_path / "data", vault_master_key=key)
        the_vault = v.Vault.from_settings(settings)
        media = [i for i in v.list_items(db.sessions, actor=ADMIN) if i.kind == "media"]
        kept = sorted(v.read_bytes(db.sessions, the_vault, i.id, actor=ADMIN) for i in media)
        assert kept == sorted((folder / f"img{i}.jpg").read_bytes() for i in (0, 2))
        # the same folder scanned again: the files are not reported a second time
        scan()
        assert len(service.list_reports(db.sessions, ADMIN)) == 2
    finally:
        db.close()


def test_a_fact_the_schema_refuses_drops_the_report_not_the_match(
    sessions: sessionmaker[Session], vault: v.Vault
) -> None:
    facts = submissions.SubmissionFacts("c-1", upload_ip="198.51.100.9", upload_port=70_000)
    recorded = submissions.match_and_record(
        sessions,
        ACME,
        SIGNALS,
        lambda _session: [EXACT],
        submission=facts,
        media=b"\xff\xd8benign\xff\xd9",
        vault=vault,
        auto_report=AutoReportPolicy.from_settings(_settings()),
    )
    assert recorded.submission_id is not None and recorded.matches == [EXACT]
    assert _reports(sessions) == 0
    with sessions() as session:
        (details,) = session.scalars(
            select(AuditRecord.details).where(AuditRecord.action == "report.not_queued")
        ).all()
        assert session.get(SubmissionRow, recorded.submission_id) is not None
    assert "70000" in details
    # the media stays kept for the operator; no report XML was kept
    kinds = [i.kind for i in v.list_items(sessions, actor=ADMIN)]
    assert kinds == ["media"]
    assert "report.create" not in _actions(sessions)
    with sessions() as session:  # the savepoint's rollback left the chain whole
        assert audit.verify(session).ok
