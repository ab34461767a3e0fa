"""An in-process clearinghouse intake and a helper that files a whole report through
its service functions (submit, upload, fileinfo, finish), as a provider would."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from _report_fixtures import open_db
from tipline.config import Settings
from tipline.services import clearinghouse, vault
from tipline.services.reports.builder import build_file_details, build_report
from tipline.services.reports.model import (
    IncidentType,
    IpCapture,
    IpEvent,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
)
from tipline.services.vault import MasterKey

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PROVIDER, PASSWORD = "esp-route", "route-test-password"
AUTH = "Basic " + base64.b64encode(f"{PROVIDER}:{PASSWORD}".encode()).decode()


@contextmanager
def make_intake(folder: Path, db_url: str | None = None) -> Iterator[clearinghouse.Intake]:
    """An intake on ``db_url`` (SQLite in ``folder`` by default) with one provider."""
    folder.mkdir(parents=True, exist_ok=True)
    engine, sessions = open_db(db_url or f"sqlite:///{folder / 'db.sqlite'}")
    try:
        clearinghouse.add_provider(sessions, PROVIDER, PASSWORD)
        key = SecretStr(MasterKey.generate().to_base64())
        settings = Settings(data_dir=folder, vault_master_key=key, vault_chunk_bytes=4096)
        yield clearinghouse.Intake(sessions=sessions, vault=vault.Vault.from_settings(settings))
    finally:
        engine.dispose()


def ip_event(ip: str, *, hours: int = 0, proxy: bool | None = None) -> IpCapture:
    """A login event ``hours`` after T0."""
    from datetime import timedelta

    return IpCapture(
        ip=ip, event=IpEvent.LOGIN, at=T0 + timedelta(hours=hours), possible_proxy=proxy
    )


def file_report(
    intake: clearinghouse.Intake,
    *,
    person_ips: tuple[IpCapture, ...] = (),
    files: tuple[tuple[str, bytes, IpCapture | None], ...] = (("a.bin", b"not media", None),),
    finish: bool = True,
) -> tuple[int, list[str]]:
    """File one report; returns its intake id and file ids."""
    reported = [
        ReportedFile(
            file_name=name,
            md5=hashlib.md5(data).hexdigest(),
            sha1=hashlib.sha1(data).hexdigest(),
            size=len(data),
            viewed_by_esp=True,
            exif_viewed_by_esp=False,
            uploaded_at=T0,
            upload_ip=ip,
        )
        for name, data, ip in files
    ]
    content = ReportContent(
        report_id="01JDROUTE000000000000000000"[:26],
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=T0,
        reporter=Reporter(email="reports@example.org"),
        files=tuple(reported),
        users=(ReportedUser(esp_identifier="user-1", screen_name="someone", ip_events=person_ips),),
    )
    opened = clearinghouse.submit(intake, AUTH, build_report(content))
    assert opened.ok, opened.description
    report_id = opened.report_id
    assert report_id is not None
    ids = []
    for (name, data, _ip), meta in zip(files, reported, strict=True):
        up = clearinghouse.upload(intake, AUTH, str(report_id), name, io.BytesIO(data))
        assert up.ok and up.file_id, up.description
        ids.append(up.file_id)
        details = build_file_details(meta, report_id=report_id, file_id=up.file_id)
        assert clearinghouse.fileinfo(intake, AUTH, details).ok
    if finish:
        assert clearinghouse.finish(intake, AUTH, str(report_id)).ok
    return report_id, ids
