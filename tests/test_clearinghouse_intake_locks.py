"""The intake's one-statement calls still hold the report they act on (PostgreSQL): a
upload or fileinfo keeps its open report locked against a finish or retract until it
commits, as the separate locking read it replaced did. Probed from a second connection at the
moment the call's statement has run (``NOWAIT``: no waiting, no clock)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from _report_fixtures import open_db
from tipline.config import Settings
from tipline.services import clearinghouse, vault
from tipline.services.clearinghouse import Code
from tipline.services.vault import MasterKey

REPORT = (Path(__file__).parent / "golden" / "reports" / "minimal.report.xml").read_bytes()
AUTH = "Basic " + base64.b64encode(b"esp-lock:lock-test-password").decode()


def _details(report_id: int, file_id: str) -> bytes:
    return (
        f"<fileDetails><reportId>{report_id}</reportId><fileId>{file_id}</fileId>"
        "<originalFileName>a.bin</originalFileName></fileDetails>"
    ).encode()


@pytest.mark.postgres
def test_upload_and_fileinfo_hold_the_report(postgres_url: str, tmp_path: Path) -> None:
    engine, sessions = open_db(postgres_url)
    clearinghouse.add_provider(sessions, "esp-lock", "lock-test-password")
    key = SecretStr(MasterKey.generate().to_base64())
    the_vault = vault.Vault.from_settings(Settings(data_dir=tmp_path, vault_master_key=key))
    intake = clearinghouse.Intake(sessions=sessions, vault=the_vault)
    rid = clearinghouse.submit(intake, AUTH, REPORT).report_id
    assert rid is not None
    probes: list[str] = []

    def probe(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the upload's statement inserts the file row (with its vault item), the
        # fileinfo's updates it (with its audit record)
        if "INSERT INTO intake_files" not in statement and "UPDATE intake_files" not in statement:
            return
        with engine.connect() as other:
            try:
                other.execute(
                    text("SELECT id FROM intake_reports WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": rid},
                )
                probes.append("free")
            except OperationalError:
                probes.append("locked")
            other.rollback()

    event.listen(engine, "after_cursor_execute", probe)
    try:
        up = clearinghouse.upload(intake, AUTH, str(rid), "a.bin", io.BytesIO(b"z" * 3000))
        assert up.ok and up.file_id is not None
        assert clearinghouse.fileinfo(intake, AUTH, _details(rid, up.file_id)).ok
        # a file that is not the report's changes nothing and locks nothing for long
        missing = clearinghouse.fileinfo(intake, AUTH, _details(rid, "0" * 32))
        assert missing.code is Code.FILE_NOT_FOUND
    finally:
        event.remove(engine, "after_cursor_execute", probe)
    assert probes == ["locked", "locked", "locked"]
    # and once committed, the finish goes through and lists the described file
    done = clearinghouse.finish(intake, AUTH, str(rid))
    assert done.ok and done.files == (up.file_id,)
    again = clearinghouse.fileinfo(intake, AUTH, _details(rid, up.file_id))
    assert again.code is Code.REPORT_FINISHED
    engine.dispose()
