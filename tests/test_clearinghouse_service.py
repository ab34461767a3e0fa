"""The intake's service functions on hostile documents (hypothesis), and which routes
each service role mounts."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import func, select

from _report_fixtures import open_db
from tipline.api.app import create_app
from tipline.config import Settings
from tipline.services import clearinghouse, vault
from tipline.services.clearinghouse import Code
from tipline.services.vault import MasterKey
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow

REPORT = (Path(__file__).parent / "golden" / "reports" / "minimal.report.xml").read_bytes()
AUTH = "Basic " + base64.b64encode(b"esp-h:hypothesis-password").decode()


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> clearinghouse.Intake:
    folder = tmp_path_factory.mktemp("intake")
    _engine, sessions = open_db(f"sqlite:///{folder / 'db.sqlite'}")
    clearinghouse.add_provider(sessions, "esp-h", "hypothesis-password")
    key = SecretStr(MasterKey.generate().to_base64())
    the_vault = vault.Vault.from_settings(Settings(data_dir=folder, vault_master_key=key))
    return clearinghouse.Intake(sessions=sessions, vault=the_vault, max_xml_bytes=8192)


def _reports(intake: clearinghouse.Intake) -> int:
    with intake.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(IntakeReportRow)) or 0)


def _mutations() -> st.SearchStrategy[bytes]:
    """Bytes near a valid report: cut, spliced, with DTDs, or random."""
    cut = st.integers(0, len(REPORT)).map(lambda n: REPORT[:n])
    splice = st.tuples(st.integers(0, len(REPORT)), st.binary(max_size=64)).map(
        lambda t: REPORT[: t[0]] + t[1] + REPORT[t[0] :]
    )
    doctype = st.sampled_from(
        [b'<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]>', b"<!DOCTYPE report>"]
    ).map(lambda d: REPORT.replace(b"<report>", d + b"<report>"))
    return st.one_of(cut, splice, doctype, st.binary(max_size=512))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_mutations())
def test_submit_never_stores_what_it_refuses(intake: clearinghouse.Intake, body: bytes) -> None:
    before = _reports(intake)
    answer = clearinghouse.submit(intake, AUTH, body)
    assert answer.code in (
        Code.SUCCESS,
        Code.INVALID_REQUEST,
        Code.VALIDATION_FAILED,
        Code.MALFORMED_XML,
    )
    assert _reports(intake) == before + (1 if answer.ok else 0)
    if b"<!DOCTYPE" in body:
        assert not answer.ok
    assert b"<reportResponse>" in answer.render()


def test_the_valid_report_is_accepted(intake: clearinghouse.Intake) -> None:
    answer = clearinghouse.submit(intake, AUTH, REPORT)
    assert answer.ok and answer.report_id is not None


@pytest.mark.parametrize(
    ("role", "ispws", "provider"),
    [("provider", False, True), ("clearinghouse", True, False), ("both", True, True)],
)
def test_roles_mount_their_routes(tmp_path: Path, role: str, ispws: bool, provider: bool) -> None:
    app = create_app(
        Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db'}", role=role)  # type: ignore[arg-type]
    )
    paths = set(app.openapi()["paths"])
    assert ("/ispws/submit" in paths) is ispws
    assert ("/v1/banks" in paths) is provider
    assert "/v1/health" in paths
    if ispws:
        for path in ("status", "xsd", "submit", "upload", "fileinfo", "finish", "retract"):
            assert f"/ispws/{path}" in paths
        assert "requestBody" in app.openapi()["paths"]["/ispws/upload"]["post"]


def test_upload_to_a_vault_without_key_saves_nothing(intake: clearinghouse.Intake) -> None:
    opened = clearinghouse.submit(intake, AUTH, REPORT)
    keyless = dataclasses.replace(intake, vault=dataclasses.replace(intake.vault, keyring=None))
    answer = clearinghouse.upload(keyless, AUTH, str(opened.report_id), "a.bin", io.BytesIO(b"x"))
    assert answer.code is Code.SAVE_FAILED and "master key" in answer.description
    done = clearinghouse.finish(intake, AUTH, str(opened.report_id))
    assert done.ok and done.files == ()


def test_finish_syncs_the_reports_files_and_refuses_a_lost_one(
    intake: clearinghouse.Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads write their vault files without waiting for the disk; ``/finish`` syncs
    every file of the report before it commits, and a file lost before that (missing
    or cut short, as after a power cut) leaves the report open with 1100."""
    import os

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    blobs = intake.vault.blobs
    opened = clearinghouse.submit(intake, AUTH, REPORT)
    rid = str(opened.report_id)
    for name in ("a.bin", "b.bin"):
        assert clearinghouse.upload(intake, AUTH, rid, name, io.BytesIO(b"x" * 5000)).ok
    assert synced == []  # nothing waited for the disk yet
    done = clearinghouse.finish(intake, AUTH, rid)
    assert done.ok and len(done.files) == 2
    assert len(synced) >= 2  # each file (and its folders)

    for damage in ("missing", "short"):
        opened = clearinghouse.submit(intake, AUTH, REPORT)
        rid = str(opened.report_id)
        up = clearinghouse.upload(intake, AUTH, rid, "c.bin", io.BytesIO(b"y" * 5000))
        with intake.sessions() as session:
            item = session.scalar(
                select(IntakeFileRow.vault_id).where(IntakeFileRow.id == up.file_id)
            )
        path = blobs.path(str(item))
        if damage == "missing":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[:100])
        refused = clearinghouse.finish(intake, AUTH, rid)
        assert refused.code is Code.SAVE_FAILED
        assert ("missing" if damage == "missing" else "incomplete") in refused.description
        with intake.sessions() as session:
            report = session.get(IntakeReportRow, int(rid))
            assert report is not None and report.status == "open"
