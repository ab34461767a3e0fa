"""Report delivery over ISPWS against a real local receiver: the happy path, refusals,
garbage answers, and random faults (no process kills here; see test_reports_crash)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from _ispws_server import Faults, ispws_server
from _report_fixtures import HANG_SECONDS, deliverer, open_db, queue_reports, run
from tipline.services.jobs import Backoff
from tipline.services.reports.evidence import DirectoryEvidence
from tipline.services.reports.outbox import DeliveryPolicy, outbox_size
from tipline.store.reports import OperatorItemRow, ReportFileRow, ReportRow


def _check_receiver(receiver, sessions, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    finished = receiver.finished_by_ref()
    with sessions() as session:
        assert outbox_size(session) == 0
        for report_id in ids:
            report = session.get(ReportRow, report_id)
            assert report.status == "finished", (report_id, report.last_error)
            remote = finished[report_id]
            assert len(remote) == 1 and remote[0].finished == 1
            assert remote[0].id == report.remote_id
            files = session.scalars(
                select(ReportFileRow).where(ReportFileRow.report_id == report_id)
            ).all()
            assert sorted(f.md5 for f in remote[0].files.values()) == sorted(f.md5 for f in files)
            for f in remote[0].files.values():
                assert f.details is not None
                assert etree.fromstring(f.details).findtext("originalFileHash") == f.md5
        orphans = sum(session.get(ReportRow, i).orphans for i in ids)
    assert len(receiver.open_reports()) <= orphans
    assert sum(len(v) for v in finished.values()) == len(ids)


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine, sessions = open_db(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield sessions
    engine.dispose()


def test_happy_path(db_url: str, tmp_path: Path) -> None:
    engine, sessions = open_db(db_url)
    request_dispose = engine.dispose
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, 5, max_files=3)
    with ispws_server() as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password)
        stats = run(d)
        assert stats.finished == 5
        _check_receiver(rx.receiver, sessions, ids)
        assert rx.receiver.rejections == []
        with sessions() as session:
            report = session.get(ReportRow, ids[0])
            sent = rx.receiver.reports[report.remote_id].xml
            assert hashlib.sha256(sent).hexdigest() == report.xml_sha256
    request_dispose()


def test_random_faults_deliver_each_report_once(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, 40, max_files=2, seed=7)
    faults = Faults(rate=0.3, seed=11, hold_seconds=1.0)
    with ispws_server(faults=faults) as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password, timeout=0.25)
        stats = run(d, workers=4)
        _check_receiver(rx.receiver, sessions, ids)
    assert stats.finished == 40
    assert sum(faults.counts.values()) > 10  # the faults did happen


def test_wrong_password_goes_to_operator_queue(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, 2)
    with ispws_server() as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, "wrong")
        stats = run(d)
    assert stats.failed == 2 and stats.finished == 0
    with sessions() as session:
        assert outbox_size(session) == 0
        items = session.scalars(select(OperatorItemRow)).all()
        assert sorted(i.report_id for i in items) == sorted(ids)
        assert all("401" in i.message for i in items)
        assert all(session.get(ReportRow, i).status == "failed" for i in ids)


def test_schema_rejection_keeps_the_receivers_message(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1)
    with sessions() as session, session.begin():
        report = session.get(ReportRow, report_id)
        report.xml = report.xml.replace("<reporter>", "<reporterX>").replace(
            "</reporter>", "</reporterX>"
        )
    with ispws_server() as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password)
        run(d)
        assert rx.receiver.reports == {}
    with sessions() as session:
        [item] = session.scalars(select(OperatorItemRow)).all()
        assert item.response_code == 4100 and "reporterX" in item.message
        assert item.step == "submit"


def test_garbage_answers_are_retried_then_reported(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1)
    faults = Faults(rate=1.0, seed=1, kinds=("garbage_after",))
    policy = DeliveryPolicy(max_attempts=3, lease_seconds=60)
    with ispws_server(faults=faults) as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password, policy=policy)
        d.policy = DeliveryPolicy(
            max_attempts=3, backoff=d.policy.backoff.__class__(base=0.001, maximum=0.001)
        )
        stats = run(d)
        # each lost submit answer may have opened a report: counted, never finished
        assert len(rx.receiver.open_reports()) == 3
        assert rx.receiver.finished_by_ref() == {}
    assert stats.failed == 1 and stats.orphans == 3
    with sessions() as session:
        report = session.get(ReportRow, report_id)
        assert report.status == "failed" and report.orphans == 3
        assert "malformed XML" in (report.last_error or "")
        assert outbox_size(session) == 0


@pytest.mark.parametrize("kind", ["drop_after", "500_after", "timeout_after"])
def test_lost_upload_answer_restarts_with_a_retract(
    kind: str, sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A file attached without us learning its id: the open report is retracted."""
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, 1, max_files=1)

    class OnUpload(Faults):
        def pick(self, path: str = "") -> str | None:
            if path != "/upload":
                return None
            self.n = getattr(self, "n", 0) + 1
            return kind if self.n == 1 else None  # the first upload only

    # only the timeout case needs a short client timeout, and it has 4x slack: the held
    # answer outlasts it whatever the load, and an ordinary answer has 10 s
    timeout = 10.0 if kind == "timeout_after" else HANG_SECONDS
    with ispws_server(faults=OnUpload(hold_seconds=40.0)) as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password, timeout=timeout)
        run(d)
        _check_receiver(rx.receiver, sessions, ids)
        reports = list(rx.receiver.reports.values())
    # the report whose upload answer was lost holds a file nobody described: retracted
    [faulted] = [r for r in reports if r.files and not r.finished]
    assert faulted.retracted and len(faulted.files) == 1
    [finished] = [r for r in reports if r.finished]
    assert finished.finished == 1 and len(finished.files) == 1 and finished.id > faulted.id


def test_receiver_that_mangles_files_goes_to_the_operator(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1, max_files=1)
    with ispws_server() as rx:
        rx.receiver.wrong_md5 = True
        d = deliverer(
            sessions,
            tmp_path / "ev",
            rx.url,
            rx.username,
            rx.password,
            policy=DeliveryPolicy(max_attempts=3, lease_seconds=60),
        )
        stats = run(d)
        reports = list(rx.receiver.reports.values())
    assert stats.failed == 1 and stats.finished == 0
    # two restarts retracted their remote reports; the third stays open for the operator
    assert [r.retracted for r in reports] == [True, True, False]
    assert not any(r.finished for r in reports)
    with sessions() as session:
        [item] = session.scalars(select(OperatorItemRow)).all()
        assert item.report_id == report_id and "MD5" in item.message
        assert str(reports[-1].id) in item.message
        assert outbox_size(session) == 0


def test_no_wait_leaves_backing_off_reports_for_the_next_run(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1)
    faults = Faults(rate=1.0, seed=3, kinds=("500_before",))
    policy = DeliveryPolicy(max_attempts=5, backoff=Backoff(base=3600.0, maximum=3600.0))
    with ispws_server(faults=faults) as rx:
        d = deliverer(sessions, tmp_path / "ev", rx.url, rx.username, rx.password, policy=policy)
        stats = run(d, wait_for_retries=False)
    assert stats.retries == 1 and stats.finished == 0
    with sessions() as session:
        assert outbox_size(session) == 1
        assert session.get(ReportRow, report_id).status == "queued"
