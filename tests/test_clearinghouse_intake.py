"""The clearinghouse intake driven by a client written from the documented protocol
only (PROTOCOL.md + the XSD): plain HTTP requests and hand-written XML, nothing from
tipline's own ISPWS client. Covers the happy path and every documented refusal."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
from sqlalchemy import func, select

import conftest
from _clock import HANG_SECONDS
from _intake_server import IntakeServer, intake_server
from tipline.services import vault
from tipline.services.audit import verify
from tipline.services.auth import Principal
from tipline.services.clearinghouse import providers
from tipline.store.audit import AuditRecord
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.vault import EvidenceItemRow

PASSWORD_A = "provider-a-password-1"
PASSWORD_B = "provider-b-password-2"
IMAGE = Path(__file__).resolve().parents[1] / "src" / "tipline" / "demo" / "shapes-blue.jpg"
XSD = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "reference"
    / "cybertipline"
    / "cyber_tipline.xsd"
)

REPORT = b"""<?xml version="1.0" encoding="UTF-8"?>
<report>
  <incidentSummary>
    <incidentType>Child Pornography (possession, manufacture, and distribution)</incidentType>
    <incidentDateTime>2026-11-20T09:30:15Z</incidentDateTime>
  </incidentSummary>
  <reporter>
    <reportingPerson>
      <email>reports@example.org</email>
    </reportingPerson>
  </reporter>
</report>
"""

REPORT_MISSING_REPORTER = b"""<report>
  <incidentSummary>
    <incidentType>Child Pornography (possession, manufacture, and distribution)</incidentType>
    <incidentDateTime>2026-11-20T09:30:15Z</incidentDateTime>
  </incidentSummary>
</report>"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE report [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<report><incidentSummary><incidentType>&c;</incidentType></incidentSummary></report>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE report [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<report><additionalInfo>&x;</additionalInfo></report>"""


def file_details(report_id: int, file_id: str) -> bytes:
    return (
        f"<fileDetails><reportId>{report_id}</reportId><fileId>{file_id}</fileId>"
        "<originalFileName>shapes.jpg</originalFileName>"
        "<fileViewedByEsp>true</fileViewedByEsp></fileDetails>"
    ).encode()


def answer(response: httpx.Response) -> dict[str, object]:
    """The answer document as a dict: responseCode, reportId, fileId, hash, files."""
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.content)
    assert root.tag in ("reportResponse", "reportDoneResponse")
    out: dict[str, object] = {"tag": root.tag, "code": int(root.findtext("responseCode") or "")}
    for name in ("responseDescription", "reportId", "fileId", "hash"):
        if root.find(name) is not None:
            out[name] = root.findtext(name)
    files = root.find("files")
    if files is not None:
        out["files"] = [f.text for f in files]
    return out


@pytest.fixture
def srv(db_url: str, tmp_path: Path) -> Iterator[IntakeServer]:
    with intake_server(db_url, tmp_path / "ch") as running:
        running.add_provider("esp-a", PASSWORD_A)
        running.add_provider("esp-b", PASSWORD_B)
        yield running


def client(srv: IntakeServer, user: str = "esp-a", password: str = PASSWORD_A) -> httpx.Client:
    return httpx.Client(
        base_url=srv.url, auth=(user, password), timeout=HANG_SECONDS, trust_env=False
    )


def submit(http: httpx.Client, body: bytes = REPORT) -> dict[str, object]:
    return answer(
        http.post("/submit", content=body, headers={"Content-Type": "text/xml; charset=utf-8"})
    )


def upload(
    http: httpx.Client, report_id: object, data: bytes, name: str = "a.jpg"
) -> dict[str, object]:
    return answer(
        http.post(
            "/upload",
            data={"id": str(report_id)},
            files={"file": (name, data, "application/octet-stream")},
        )
    )


def counts(srv: IntakeServer) -> tuple[int, int, int]:
    with srv.sessions() as s:
        return (
            int(s.scalar(select(func.count()).select_from(IntakeReportRow)) or 0),
            int(s.scalar(select(func.count()).select_from(IntakeFileRow)) or 0),
            int(s.scalar(select(func.count()).select_from(EvidenceItemRow)) or 0),
        )


def actions(srv: IntakeServer) -> list[str]:
    with srv.sessions() as s:
        return list(s.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))


def test_protocol_happy_path(srv: IntakeServer) -> None:
    image = IMAGE.read_bytes()
    with client(srv) as http:
        status = answer(http.get("/status"))
        assert status["code"] == 0 and "reportId" not in status
        assert http.get("/xsd").content == XSD.read_bytes()

        opened = submit(http)
        assert opened["code"] == 0
        report_id = int(str(opened["reportId"]))

        first = upload(http, report_id, image, "shapes.jpg")
        assert first["code"] == 0
        assert first["hash"] == hashlib.md5(image).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{32}", str(first["fileId"]))
        second = upload(http, report_id, b"not media at all", "notes.bin")
        assert second["code"] == 0 and second["fileId"] != first["fileId"]

        described = answer(
            http.post("/fileinfo", content=file_details(report_id, str(first["fileId"])))
        )
        assert described["code"] == 0 and described["reportId"] == str(report_id)

        done = answer(http.post("/finish", data={"id": str(report_id)}))
        assert done["tag"] == "reportDoneResponse" and done["code"] == 0
        assert done["reportId"] == str(report_id)
        assert sorted(done["files"]) == sorted([first["fileId"], second["fileId"]])  # type: ignore[type-var]

    with srv.sessions() as s:
        report = s.get(IntakeReportRow, report_id)
        assert report is not None and report.status == "finished"
        assert report.xml.encode() == REPORT
        photo = s.get(IntakeFileRow, str(first["fileId"]))
        other = s.get(IntakeFileRow, str(second["fileId"]))
        assert photo is not None and other is not None
        assert photo.details_xml is not None
        assert (photo.md5, photo.sha1, photo.sha256) == (
            hashlib.md5(image).hexdigest(),
            hashlib.sha1(image).hexdigest(),
            hashlib.sha256(image).hexdigest(),
        )
        types = {sig["type"] for sig in photo.signals}
        assert {"pdq", "md5", "sha1", "sha256"} <= types
        pdq = next(sig["value"] for sig in photo.signals if sig["type"] == "pdq")
        assert re.fullmatch(r"[0-9a-f]{64}", pdq)
        # not media: digests kept, no perceptual signal, the reason recorded
        assert other.signals == [] and other.hash_error and other.media is None
        assert other.md5 == hashlib.md5(b"not media at all").hexdigest()
        vault_ids = (photo.vault_id, other.vault_id)
        assert s.scalar(select(func.count()).select_from(AuditRecord)) is not None
    # the vault holds the exact bytes, encrypted
    the_vault = vault.Vault.from_settings(srv.settings)
    assert vault.read_bytes(srv.sessions, the_vault, vault_ids[0], actor=Principal.cli()) == image
    for blob in srv.settings.resolved_vault_dir().rglob("*.tpv"):
        assert image[100:164] not in blob.read_bytes()
    recorded = actions(srv)
    for action in ("intake.submit", "intake.upload", "intake.fileinfo", "intake.finish"):
        assert action in recorded
    with srv.sessions() as s:
        assert verify(s).ok


def test_authentication(srv: IntakeServer) -> None:
    for auth in ((("esp-a", "wrong-password-xx"),), (None,), (("nobody", PASSWORD_A),)):
        with httpx.Client(
            base_url=srv.url, auth=auth[0], timeout=HANG_SECONDS, trust_env=False
        ) as http:
            for method, path in (("GET", "/status"), ("GET", "/xsd"), ("POST", "/submit")):
                response = http.request(method, path, content=REPORT if method == "POST" else None)
                assert response.status_code == 401 and response.content == b""
    assert counts(srv)[0] == 0
    assert "intake.login_failed" in actions(srv)
    from tipline.services import clearinghouse

    with client(srv, "esp-b", PASSWORD_B) as http:  # verified once: remembered
        assert answer(http.get("/status"))["code"] == 0
        assert answer(http.get("/status"))["code"] == 0
    clearinghouse.disable_provider(srv.sessions, "esp-b")
    with client(srv, "esp-b", PASSWORD_B) as http:
        assert http.get("/status").status_code == 401
    with client(srv) as http:
        assert answer(http.get("/status"))["code"] == 0


def test_disabled_provider_is_refused_at_once(srv: IntakeServer) -> None:
    """Remembered credentials do not outlive a disable: the very next call of every
    kind is 401, audited, and changes nothing (the disable comes from another session,
    as `tipline provider disable` in another process would do it)."""
    from tipline.services import clearinghouse

    image = IMAGE.read_bytes()
    with client(srv, "esp-b", PASSWORD_B) as http:
        open_id = int(str(submit(http)["reportId"]))
        file_id = str(upload(http, open_id, image)["fileId"])
        assert answer(http.post("/fileinfo", content=file_details(open_id, file_id)))["code"] == 0
        before = counts(srv)
        failed = actions(srv).count("intake.login_failed")
        clearinghouse.disable_provider(srv.sessions, "esp-b")
        calls = [
            lambda: http.post("/upload", data={"id": str(open_id)}, files={"file": ("b", image)}),
            lambda: http.post("/fileinfo", content=file_details(open_id, file_id)),
            lambda: http.post("/finish", data={"id": str(open_id)}),
            lambda: http.post("/retract", data={"id": str(open_id)}),
            lambda: http.post("/finish", data={"id": "99999999"}),
            lambda: http.post("/submit", content=REPORT),
            lambda: http.get("/status"),
        ]
        for call in calls:
            response = call()
            assert response.status_code == 401 and response.content == b""
    assert counts(srv) == before
    assert actions(srv).count("intake.login_failed") == failed + len(calls)
    with srv.sessions() as s:
        report = s.get(IntakeReportRow, open_id)
        assert report is not None and report.status == "open"
    assert len(list(srv.settings.resolved_vault_dir().rglob("*.tpv"))) == before[2]
    with client(srv) as http:  # the other provider is untouched
        assert answer(http.get("/status"))["code"] == 0


def test_bad_reports_are_refused_and_nothing_is_stored(srv: IntakeServer) -> None:
    with client(srv) as http:
        missing = submit(http, REPORT_MISSING_REPORTER)
        assert missing["code"] == 4100 and "reportId" not in missing
        assert "reporter" in str(missing["responseDescription"])
        assert submit(http, b"<report><unclosed></report>")["code"] == 4110
        assert submit(http, BOMB)["code"] == 4110
        external = submit(http, EXTERNAL)
        assert external["code"] == 4110 and "root:" not in str(external)
        assert submit(http, b"<fileDetails/>")["code"] == 4100
        big = REPORT.replace(b"</report>", b"<!--" + b"x" * 70_000 + b"--></report>")
        assert submit(http, big)["code"] == 4000
    assert counts(srv) == (0, 0, 0)
    assert actions(srv).count("intake.refused") == 6


def test_bad_uploads_and_state_errors(srv: IntakeServer) -> None:
    image = IMAGE.read_bytes()
    with client(srv) as http, client(srv, "esp-b", PASSWORD_B) as other:
        open_id = int(str(submit(http)["reportId"]))
        file_id = str(upload(http, open_id, image)["fileId"])
        baseline = counts(srv)

        # over the size limit (256 KiB in this server), unknown report, another's report
        assert upload(http, open_id, b"x" * (256 * 1024 + 1))["code"] == 4000
        assert upload(http, 99_999_999, image)["code"] == 5001
        assert upload(http, "not-a-number", image)["code"] == 5001
        assert upload(other, open_id, image)["code"] == 5001
        assert answer(other.post("/finish", data={"id": str(open_id)}))["code"] == 5001
        assert answer(other.post("/retract", data={"id": str(open_id)}))["code"] == 5001
        assert (
            answer(other.post("/fileinfo", content=file_details(open_id, file_id)))["code"] == 5001
        )
        no_file = answer(http.post("/upload", data={"id": str(open_id)}))
        assert no_file["code"] == 4000
        # fileinfo for an unknown file, for a file of another report
        unknown = answer(http.post("/fileinfo", content=file_details(open_id, "f" * 32)))
        assert unknown["code"] == 5002
        assert counts(srv) == baseline

        # finished: no upload, no fileinfo, no retract, no second finish
        assert answer(http.post("/finish", data={"id": str(open_id)}))["code"] == 0
        assert upload(http, open_id, image)["code"] == 5102
        assert (
            answer(http.post("/fileinfo", content=file_details(open_id, file_id)))["code"] == 5102
        )
        assert answer(http.post("/retract", data={"id": str(open_id)}))["code"] == 5102
        assert answer(http.post("/finish", data={"id": str(open_id)}))["code"] == 5102

        # retracted: no upload, no finish
        gone = int(str(submit(http)["reportId"]))
        assert answer(http.post("/retract", data={"id": str(gone)}))["code"] == 0
        assert upload(http, gone, image)["code"] == 5101
        assert answer(http.post("/finish", data={"id": str(gone)}))["code"] == 5101
    _, files, items = counts(srv)
    assert (files, items) == baseline[1:]
    with srv.sessions() as s:
        refused = list(
            s.scalars(select(AuditRecord.details).where(AuditRecord.action == "intake.refused"))
        )
    assert len(refused) == 15
    # nothing half-way: every vault file on disk belongs to a registered item
    assert len(list(srv.settings.resolved_vault_dir().rglob("*.tpv"))) == items


def test_provider_passwords_use_the_production_scrypt_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests hash provider passwords cheaply (conftest); production's cost is pinned
    here: N=2**14, r=8, p=1, stated in the stored hash, and a hash of either cost verifies."""
    assert conftest.PRODUCTION_SCRYPT == (2**14, 8, 1)
    cheap = providers.hash_password("a provider's password")
    for name, value in zip(
        ("SCRYPT_N", "SCRYPT_R", "SCRYPT_P"), conftest.PRODUCTION_SCRYPT, strict=True
    ):
        monkeypatch.setattr(providers, name, value)
    stored = providers.hash_password("a provider's password")
    assert stored.startswith("scrypt$16384$8$1$")
    for hashed in (stored, cheap):
        assert providers.check_password("a provider's password", hashed)
        assert not providers.check_password("another password!", hashed)
