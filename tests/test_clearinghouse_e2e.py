"""tipline's provider side (report outbox + ISPWS client) delivering to tipline's
clearinghouse side, a real ``tipline serve --role clearinghouse`` on 127.0.0.1; and the
``tipline provider`` commands that manage the accounts it accepts."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from _api_server import Server, running_server
from _cli import run_tipline
from _report_fixtures import deliverer, open_db, queue_reports, run
from tipline.services import clearinghouse as clearinghouse_service
from tipline.services.reports.evidence import DirectoryEvidence
from tipline.services.vault import MasterKey
from tipline.services.vault.keys import write_key_file
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.reports import ReportFileRow, ReportRow

PASSWORD = "provider-e2e-password"


@pytest.fixture(scope="module")
def clearinghouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clearinghouse]:
    """One real ``tipline serve --role clearinghouse`` (SQLite) for the module: each
    test delivers as its own provider account and looks only at that account's
    reports."""
    ch_dir = tmp_path_factory.mktemp("ch")
    key_file = ch_dir / "master.key"
    write_key_file(key_file, MasterKey.generate())
    ch_url = f"sqlite:///{ch_dir / 'tipline.db'}"
    env = {"TIPLINE_VAULT_MASTER_KEY_FILE": str(key_file)}
    with running_server(ch_url, ch_dir, env=env, args=("--role", "clearinghouse")) as srv:
        ch_engine, ch_sessions = open_db(ch_url)
        try:
            yield Clearinghouse(srv, ch_sessions)
        finally:
            ch_engine.dispose()


@dataclass
class Clearinghouse:
    server: Server
    sessions: sessionmaker[Session]


def test_provider_client_delivers_to_the_clearinghouse(
    db_url: str, tmp_path: Path, clearinghouse: Clearinghouse
) -> None:
    engine, sessions = open_db(db_url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    ids = queue_reports(sessions, evidence, 3, max_files=3)
    srv, ch_sessions = clearinghouse.server, clearinghouse.sessions
    try:
        name = f"esp-e2e-{uuid.uuid4().hex[:8]}"
        provider = clearinghouse_service.add_provider(ch_sessions, name, PASSWORD)
        # the provider role's routes are not mounted in this role
        assert srv.client(None).get("/v1/banks").status_code == 404
        d = deliverer(sessions, tmp_path / "ev", f"{srv.base_url}/ispws", name, PASSWORD)
        stats = run(d)
        assert stats.finished == 3
        with sessions() as s, ch_sessions() as c:
            for report_id in ids:
                sent = s.get(ReportRow, report_id)
                assert sent is not None and sent.status == "finished", sent
                received = c.get(IntakeReportRow, sent.remote_id)
                assert received is not None and received.status == "finished"
                assert received.provider_id == provider.id
                assert received.xml_sha256 == sent.xml_sha256
                sent_files = s.scalars(
                    select(ReportFileRow).where(ReportFileRow.report_id == report_id)
                ).all()
                got = c.scalars(
                    select(IntakeFileRow).where(IntakeFileRow.report_id == received.id)
                ).all()
                assert sorted(f.md5 for f in got) == sorted(f.md5 for f in sent_files)
                assert sorted(f.sha1 for f in got) == sorted(f.sha1 for f in sent_files)
                assert all(f.details_xml and f.vault_id for f in got)
                assert {f.remote_file_id for f in sent_files} == {f.id for f in got}
            mine = select(IntakeReportRow).where(IntakeReportRow.provider_id == provider.id)
            assert len(c.scalars(mine).all()) == 3
    finally:
        engine.dispose()


def _tipline(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIPLINE_DATA_DIR": str(data_dir)}
    env.pop("TIPLINE_DATABASE_URL", None)
    return run_tipline(args, env=env, stdin=stdin)


def test_provider_commands(tmp_path: Path) -> None:
    added = _tipline(tmp_path, "provider", "add", "esp-one")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    assert len(password) >= 24
    piped = _tipline(tmp_path, "provider", "add", "esp-two", "--password-stdin", stdin="x" * 20)
    assert piped.returncode == 0 and piped.stdout == ""
    short = _tipline(tmp_path, "provider", "add", "esp-three", "--password-stdin", stdin="short")
    assert short.returncode == 2 and short.stderr.startswith("error: ")
    again = _tipline(tmp_path, "provider", "add", "esp-one")
    assert again.returncode == 2 and "exists" in again.stderr
    assert _tipline(tmp_path, "provider", "disable", "esp-two").returncode == 0
    missing = _tipline(tmp_path, "provider", "disable", "nobody")
    assert missing.returncode == 2
    listed = _tipline(tmp_path, "provider", "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [
        ["esp-one", "enabled"],
        ["esp-two", "disabled"],
    ]
    database = (tmp_path / "tipline.db").read_bytes()
    assert password.encode() not in database and b"x" * 20 not in database
