"""Reports queued by decisions are delivered by ``tipline worker`` (``report.deliver``
jobs of the database-leased job runner), with no delivery command: two worker
processes share the work against a real receiver on 127.0.0.1 that fails some calls,
and each report is finished exactly once as the receiver sees it.

The verdict depends only on the final database and receiver state; the wait for it is
a poll with a generous deadline that never decides pass or fail by timing.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from _clock import HANG_SECONDS
from _ispws_server import Faults, ispws_server
from tipline.config import Settings
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.reports import delivery_job, service
from tipline.services.reports.facts import ReviewFacts
from tipline.services.reports.outbox import outbox_size
from tipline.store import submissions as sub
from tipline.store.db import make_engine, session_factory, transaction, upgrade
from tipline.store.jobs import Job
from tipline.store.models import import_all_models
from tipline.store.reports import ReportFileRow, ReportRow

REPORTS = 24
DEADLINE = HANG_SECONDS  # a failure bound only (300 s ran out at load ~5 with a bench beside)
TIPLINE = [sys.executable, "-m", "tipline.cli.main"]
ADMIN = Principal("admin0000001", Role.ADMIN)


def _settings(db_url: str, tmp_path: Path, key: str, rx: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        vault_master_key=SecretStr(key),
        report_reporter_email="reports@example.org",
        report_platform="Example Photos",
        report_ispws_url=rx.url,  # type: ignore[attr-defined]
        report_ispws_username=rx.username,  # type: ignore[attr-defined]
        report_ispws_password=SecretStr(rx.password),  # type: ignore[attr-defined]
        report_timeout_seconds=0.5,
        report_retry_base_seconds=0.05,
        report_retry_max_seconds=0.2,
        report_max_attempts=1000,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    assert settings.vault_master_key is not None and settings.report_ispws_password is not None
    env |= {
        "TIPLINE_DATA_DIR": str(settings.data_dir),
        "TIPLINE_DATABASE_URL": str(settings.database_url),
        "TIPLINE_VAULT_MASTER_KEY": settings.vault_master_key.get_secret_value(),
        "TIPLINE_REPORT_REPORTER_EMAIL": "reports@example.org",
        "TIPLINE_REPORT_ISPWS_URL": str(settings.report_ispws_url),
        "TIPLINE_REPORT_ISPWS_USERNAME": str(settings.report_ispws_username),
        "TIPLINE_REPORT_ISPWS_PASSWORD": settings.report_ispws_password.get_secret_value(),
        "TIPLINE_REPORT_TIMEOUT_SECONDS": str(settings.report_timeout_seconds),
        "TIPLINE_REPORT_RETRY_BASE_SECONDS": str(settings.report_retry_base_seconds),
        "TIPLINE_REPORT_RETRY_MAX_SECONDS": str(settings.report_retry_max_seconds),
        "TIPLINE_REPORT_MAX_ATTEMPTS": str(settings.report_max_attempts),
    }
    return env


def _queue_decided_reports(settings: Settings, count: int) -> list[str]:
    """``count`` confirmed decisions on submissions with media in the vault, each
    turned into a report (which queues its delivery job)."""
    engine = make_engine(settings.resolved_database_url())
    sessions = session_factory(engine)
    vault = v.Vault.from_settings(settings)
    evidence = service.evidence_from_settings(sessions, settings)
    ids = []
    try:
        for i in range(count):
            with transaction(sessions) as session:
                row = sub.create_submission(
                    session,
                    tenant=None,
                    content_id=f"c-{i}",
                    created_by="test",
                    uploader_account=f"user-{i}",
                    upload_ip="198.51.100.23",
                    upload_port=50000 + i,
                    file_name=f"photo-{i}.jpg",
                )
                v.store(
                    session,
                    vault,
                    b"\xff\xd8benign-test-bytes-" + str(i).encode() + b"\xff\xd9",
                    kind=v.EvidenceKind.MEDIA,
                    actor="test",
                    filename=f"photo-{i}.jpg",
                    submission_id=row.id,
                )
                decision = sub.add_decision(
                    session,
                    None,
                    row.id,
                    sub.DecisionKind.CONFIRMED,
                    decided_by="rev",
                    facts=ReviewFacts(viewed=i % 2 == 0).as_json(),
                ).id
            summary = service.create_from_decision(
                sessions, ADMIN, decision, settings=settings, evidence=evidence
            )
            ids.append(summary.id)
    finally:
        engine.dispose()
    return ids


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*TIPLINE, "worker", "--poll-interval", "0.1", "--report-in-flight", "4"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_two_workers_deliver_each_queued_report_once(db_url: str, tmp_path: Path) -> None:
    import_all_models()
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = session_factory(engine)
    key = base64.b64encode(os.urandom(32)).decode()
    faults = Faults(rate=0.2, seed=17, hold_seconds=1.0)
    with ispws_server(faults=faults) as rx:
        settings = _settings(db_url, tmp_path, key, rx)
        ids = _queue_decided_reports(settings, REPORTS)
        with sessions() as session:
            jobs = session.execute(
                select(func.count()).where(Job.kind == delivery_job.DELIVERY_JOB_KIND)
            ).scalar_one()
        assert jobs == REPORTS  # one per report, queued with it
        env = _env(settings)
        workers = [_start_worker(env, tmp_path / f"worker-{n}.log") for n in range(2)]
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                with sessions() as session:
                    left = outbox_size(session)
                finished = rx.receiver.finished_by_ref()
                if left == 0 and len(finished) == REPORTS:
                    break
                assert all(w.poll() is None for w in workers), "a worker exited"
                assert time.monotonic() < deadline, f"{left} reports still in the outbox"
                time.sleep(0.2)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
        logs = [(tmp_path / f"worker-{n}.log").read_text() for n in range(2)]
        assert all(w.returncode == 0 for w in workers), logs
        finished = rx.receiver.finished_by_ref()
        open_reports = rx.receiver.open_reports()

    assert sum(faults.counts.values()) > 0
    assert not any(rx.password in text for text in logs)
    with sessions() as session:
        assert outbox_size(session) == 0
        orphans = 0
        for report_id in ids:
            report = session.get(ReportRow, report_id)
            assert report is not None and report.status == "finished", report_id
            orphans += report.orphans
            remote = finished.get(report_id, [])
            assert len(remote) == 1, f"{report_id} finished {len(remote)} times"
            assert remote[0].finished == 1 and remote[0].id == report.remote_id
            files = session.scalars(
                select(ReportFileRow).where(ReportFileRow.report_id == report_id)
            ).all()
            assert sorted(f.md5 for f in remote[0].files.values()) == sorted(f.md5 for f in files)
    assert sum(len(r) for r in finished.values()) == REPORTS
    assert len(open_reports) <= orphans
    engine.dispose()
