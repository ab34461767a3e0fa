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
from tipline.services.reports.client import IspwsClient
from tipline.services.reports.model import (
    Classification,
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


def documents(
    person_ips: tuple[IpCapture, ...],
    files: tuple[tuple[str, bytes, IpCapture | None], ...],
) -> tuple[bytes, list[ReportedFile]]:
    """The ``<report>`` document and the files' descriptions."""
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
            classification=Classification.B2,
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
    return build_report(content), reported


def file_report(
    intake: clearinghouse.Intake,
    *,
    person_ips: tuple[IpCapture, ...] = (),
    files: tuple[tuple[str, bytes, IpCapture | None], ...] = (("a.bin", b"not media", None),),
    finish: bool = True,
) -> tuple[int, list[str]]:
    """File one report through the intake's service functions; its id and file ids."""
    xml, reported = documents(person_ips, files)
    opened = clearinghouse.submit(intake, AUTH, xml)
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


def file_report_over_http(
    client: IspwsClient,
    *,
    person_ips: tuple[IpCapture, ...] = (),
    files: tuple[tuple[str, bytes, IpCapture | None], ...] = (("a.bin", b"not media", None),),
) -> tuple[int, list[str]]:
    """File one report with tipline's ISPWS client; its id and file ids."""
    xml, reported = documents(person_ips, files)
    report_id = client.submit(xml)
    ids = []
    for (name, data, _ip), meta in zip(files, reported, strict=True):
        answer = client.upload(report_id, name, data)
        assert answer.file_id is not None
        ids.append(answer.file_id)
        client.fileinfo(build_file_details(meta, report_id=report_id, file_id=answer.file_id))
    client.finish(report_id)
    return report_id, ids
