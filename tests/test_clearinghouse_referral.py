"""Referral packages: the zip's members and their checksums, report.json's facts and
hashes, the VICS 2.0 export, a PDF that opens, the chain of custody from the audit log,
media only where the routing rule allows it, every step audited; the CLI and the
role-protected HTTP route on a real clearinghouse server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pypdf
import pytest
from PIL import Image
from sqlalchemy import select

from _clearinghouse_fixtures import (
    file_report,
    file_report_over_http,
    ip_event,
    make_intake,
)
from _cli import run_tipline
from _clock import HANG_SECONDS
from _geo import city_record, write_geo_db
from _intake_server import intake_server
from tipline.config import RoutingAgency, RoutingTable
from tipline.errors import ConflictError, InputError, NotFoundError, PermissionDeniedError
from tipline.services import clearinghouse
from tipline.services.auth import Principal, Role, create_key
from tipline.services.clearinghouse import referral, routing
from tipline.services.clearinghouse.geoip import GeoDatabase
from tipline.services.reports.client import IspwsClient
from tipline.store.audit import AuditRecord
from tipline.store.clearinghouse import IntakeFileRow
from tipline.store.db import transaction
from tipline.store.referrals import ReferralPackageRow

TABLE = RoutingTable(
    agencies={
        "icac-ca": RoutingAgency(name="California ICAC Task Force", media=True),
        "nca": RoutingAgency(name="UK National Crime Agency", media=False),
    },
    countries={"GB": "nca"},
    subdivisions={"US-CA": "icac-ca"},
)
NETWORKS = {"8.0.0.0/8": city_record("US", "CA"), "81.2.0.0/16": city_record("GB", "ENG")}
REPO = Path(__file__).resolve().parent.parent


def _jpeg(seed: int) -> bytes:
    img = Image.new("RGB", (64, 48), (seed * 40 % 256, 90, 200 - seed))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


PHOTO, OTHER = _jpeg(1), b"%PDF-1.4 not really a pdf, just bytes"


@pytest.fixture
def geo_path(tmp_path: Path) -> Path:
    return write_geo_db(tmp_path / "geo.mmdb", NETWORKS)


@pytest.fixture
def intake(tmp_path: Path, db_url: str) -> Iterator[clearinghouse.Intake]:
    with make_intake(tmp_path / "ch", db_url) as found:
        yield found


def _routed(intake: clearinghouse.Intake, geo_path: Path, ip: str) -> tuple[int, list[str]]:
    report_id, files = file_report(
        intake,
        person_ips=(ip_event(ip), ip_event("10.1.1.1", hours=1)),
        files=(
            ("holiday photo.jpg", PHOTO, ip_event(ip, hours=2)),
            ("notes.pdf", OTHER, None),
            ("copy.jpg", PHOTO, None),
        ),
    )
    router = routing.Router(intake.sessions, GeoDatabase(geo_path), routing.check_table(TABLE))
    routing.route_report(router, report_id, actor="cli")
    return report_id, files


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        return {name: z.read(name) for name in z.namelist()}


def test_a_package_for_an_agency_that_takes_media(
    intake: clearinghouse.Intake, geo_path: Path, tmp_path: Path
) -> None:
    report_id, (photo, other, copy) = _routed(intake, geo_path, "8.8.8.8")
    out = tmp_path / "ref.zip"
    info = referral.build_referral(
        intake.sessions, intake.vault, report_id, out, actor=Principal.cli()
    )
    members = _members(out)
    assert set(members) == {
        "report.json", "summary.pdf", "custody.json", "vics.json", "SHA256SUMS",
        "xml/report.xml", f"xml/{photo}.fileDetails.xml", f"xml/{other}.fileDetails.xml",
        f"xml/{copy}.fileDetails.xml", f"media/{photo}.jpg", f"media/{other}.pdf",
        f"media/{copy}.jpg",
    }  # fmt: skip
    assert set(info.members) == set(members)
    # every member is listed with its SHA-256; the package digest is the one recorded
    sums = dict(
        reversed(line.split("  ", 1)) for line in members["SHA256SUMS"].decode().splitlines()
    )
    assert set(sums) == set(members) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(members[name]).hexdigest() == digest
    assert info.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert members[f"media/{photo}.jpg"] == PHOTO and members[f"media/{other}.pdf"] == OTHER

    doc = json.loads(members["report.json"])
    assert doc["routing"]["agency"] == "icac-ca" and doc["media_included"] is True
    assert doc["report"]["id"] == report_id and doc["report"]["provider"] == "esp-route"
    with intake.sessions() as s:
        rows = {r.id: r for r in s.scalars(select(IntakeFileRow))}
    for f in doc["files"]:
        row = rows[f["file_id"]]
        assert (f["md5"], f["sha1"], f["sha256"], f["size"]) == (
            row.md5,
            row.sha1,
            row.sha256,
            row.size,
        )
        assert f["details"]["industry_classification"] == "B2"
    assert doc["report"]["facts"]["persons_reported"][0]["esp_identifier"] == "user-1"
    assert members["xml/report.xml"].decode() == intake_xml(intake, report_id)

    vics = json.loads(members["vics.json"])
    assert "VICSDATAMODEL/ProjectVic/DataModels/2.0.xml" in vics["@odata.context"]
    case = vics["value"][0]
    assert case["CaseNumber"] == f"tipline-intake-{report_id}"
    assert case["SourceApplicationName"] == "tipline"
    media = {m["MD5"]: m for m in case["Media"]}
    assert set(media) == {
        hashlib.md5(PHOTO).hexdigest().upper(),
        hashlib.md5(OTHER).hexdigest().upper(),
    }
    pic = media[hashlib.md5(PHOTO).hexdigest().upper()]
    assert pic["SHA1"] == hashlib.sha1(PHOTO).hexdigest().upper()
    assert pic["MediaSize"] == len(PHOTO) and pic["MimeType"] == "image/jpeg"
    assert pic["RelativeFilePath"] == f"media/{photo}.jpg"
    assert [f["FileName"] for f in pic["MediaFiles"]] == ["holiday photo.jpg", "copy.jpg"]
    hashes = {h["HashName"]: h["HashValue"] for h in pic["AlternativeHashes"]}
    assert hashes["SHA256"] == hashlib.sha256(PHOTO).hexdigest().upper() and "PDQ" in hashes
    assert "Category" not in pic and sorted(m["MediaID"] for m in case["Media"]) == [1, 2]

    pdf = pypdf.PdfReader(io.BytesIO(members["summary.pdf"]))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "California ICAC Task Force" in text and "holiday photo.jpg" in text
    assert f"Intake report: {report_id}" in text

    custody = json.loads(members["custody.json"])["records"]
    actions = [r["action"] for r in custody]
    for wanted in (
        "intake.submit",
        "intake.upload",
        "vault.store",
        "intake.fileinfo",
        "intake.finish",
        "routing.decide",
        "vault.read",
    ):
        assert wanted in actions, wanted
    assert actions.count("vault.read") == 3  # each media file read for this package
    assert all(r["hash_ok"] for r in custody)
    seqs = [r["seq"] for r in custody]
    assert seqs == sorted(seqs)

    with intake.sessions() as s:
        row = s.get(ReferralPackageRow, info.id)
        assert row is not None and row.sha256 == info.sha256 and row.media_files == 3
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).one()
    assert last.action == "referral.package" and last.target_id == str(report_id)
    assert json.loads(last.details)["sha256"] == info.sha256
    assert referral.list_referrals(intake.sessions, report_id)[0]["id"] == info.id

    with pytest.raises(InputError, match="already exists"):
        referral.build_referral(
            intake.sessions, intake.vault, report_id, out, actor=Principal.cli()
        )


def intake_xml(intake: clearinghouse.Intake, report_id: int) -> str:
    from tipline.store.clearinghouse import IntakeReportRow

    with intake.sessions() as s:
        row = s.get(IntakeReportRow, report_id)
        assert row is not None
        return row.xml


def test_media_stays_out_where_the_rule_does_not_allow_it(
    intake: clearinghouse.Intake, geo_path: Path, tmp_path: Path
) -> None:
    report_id, _ = _routed(intake, geo_path, "81.2.1.1")
    info = referral.build_referral(
        intake.sessions, intake.vault, report_id, tmp_path / "gb.zip", actor=Principal.cli()
    )
    members = _members(tmp_path / "gb.zip")
    assert not [m for m in members if m.startswith("media/")] and info.media_files == 0
    doc = json.loads(members["report.json"])
    assert doc["routing"]["agency"] == "nca" and doc["media_included"] is False
    assert all(f["member"] is None for f in doc["files"])
    vics = json.loads(members["vics.json"])["value"][0]["Media"]
    assert all("RelativeFilePath" not in m for m in vics)
    assert "vault.read" not in [r["action"] for r in json.loads(members["custody.json"])["records"]]
    with pytest.raises(PermissionDeniedError, match="does not allow media"):
        referral.build_referral(
            intake.sessions,
            intake.vault,
            report_id,
            tmp_path / "x.zip",
            actor=Principal.cli(),
            media=True,
        )
    assert not (tmp_path / "x.zip").exists()


def test_packages_need_the_route_permission_no_tenant_and_a_routed_report(
    intake: clearinghouse.Intake, geo_path: Path, tmp_path: Path
) -> None:
    report_id, _ = _routed(intake, geo_path, "8.1.2.3")
    for outsider in (Principal("k-m", Role.MATCHER), Principal("k-t", Role.ANALYST, "acme")):
        with pytest.raises(PermissionDeniedError):
            referral.build_referral(
                intake.sessions, intake.vault, report_id, tmp_path / "a.zip", actor=outsider,
                media=False,
            )  # fmt: skip
    analyst = Principal("k-analyst", Role.ANALYST)
    info = referral.build_referral(
        intake.sessions, intake.vault, report_id, tmp_path / "b.zip", actor=analyst
    )
    assert info.media_files == 3 and info.created_by == "k-analyst"
    assert not list(tmp_path.glob(".*.part")) and not (tmp_path / "a.zip").exists()

    never, _ = file_report(intake, person_ips=(ip_event("8.1.1.1"),))
    with pytest.raises(NotFoundError, match="not been routed"):
        referral.build_referral(
            intake.sessions, intake.vault, never, tmp_path / "c.zip", actor=Principal.cli()
        )
    nowhere, _ = file_report(intake, person_ips=(ip_event("10.0.0.1"),))
    router = routing.Router(intake.sessions, GeoDatabase(geo_path), routing.check_table(TABLE))
    assert routing.route_report(router, nowhere, actor="cli").rule == "unrouted"
    with pytest.raises(ConflictError, match="unrouted"):
        referral.build_referral(
            intake.sessions, intake.vault, nowhere, tmp_path / "d.zip", actor=Principal.cli()
        )


def test_route_and_package_over_http_and_the_cli(tmp_path: Path, geo_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'ch' / 'tipline.db'}"
    with intake_server(
        db_url, tmp_path / "ch", geoip_database=geo_path, routing_table=TABLE
    ) as server:
        server.add_provider("esp-http", "http-provider-password")
        client = IspwsClient(server.url, "esp-http", "http-provider-password")
        try:
            report_id, _ = file_report_over_http(
                client, person_ips=(ip_event("8.8.4.4"),), files=(("p.jpg", PHOTO, None),)
            )
        finally:
            client.close()
        with transaction(server.sessions) as s:
            reviewer = create_key(s, name="analyst", role=Role.ANALYST).secret
            matcher = create_key(s, name="m", role=Role.MATCHER).secret
        base = server.url.removesuffix("/ispws")
        with httpx.Client(base_url=base, timeout=HANG_SECONDS) as http:
            path = f"/v1/clearinghouse/reports/{report_id}"
            bearer = {"Authorization": f"Bearer {reviewer}"}
            # the server routes the report as it triages it (a geolocation database is set)
            deadline = time.monotonic() + HANG_SECONDS  # bounds a failure only
            while (auto := http.get(f"{path}/routing", headers=bearer)).status_code == 404:
                assert time.monotonic() < deadline, "the report was not routed after triage"
                time.sleep(0.05)
            assert (
                auto.json()["agency"] == "icac-ca" and auto.json()["decided_by"] == "clearinghouse"
            )
            denied = http.post(f"{path}/route", headers={"Authorization": f"Bearer {matcher}"})
            assert denied.status_code == 403
            # an analyst overrides the table, then routes by the table again
            moved = http.post(
                f"{path}/route", json={"agency": "nca", "note": "liaison asked"}, headers=bearer
            )
            assert moved.status_code == 200, moved.text
            assert (moved.json()["agency"], moved.json()["rule"]) == ("nca", "analyst")
            assert moved.json()["explanation"]["override"]["replaces"] == auto.json()["id"]
            unknown = http.post(f"{path}/route", json={"agency": "nobody"}, headers=bearer)
            assert unknown.status_code == 400 and "unknown agency" in unknown.text
            routed = http.post(f"{path}/route", headers=bearer)
            assert routed.status_code == 200, routed.text
            assert routed.json()["agency"] == "icac-ca" and routed.json()["rule_key"] == "US-CA"
            assert http.get(f"{path}/routing", headers=bearer).json()["id"] == routed.json()["id"]
            got = http.post(f"{path}/referral", headers=bearer)
            assert got.status_code == 200, got.text
            assert got.headers["content-type"] == "application/zip"
            assert got.headers["x-content-sha256"] == hashlib.sha256(got.content).hexdigest()
            with zipfile.ZipFile(io.BytesIO(got.content)) as z:
                assert any(n.startswith("media/") for n in z.namelist())
            bare = http.post(f"{path}/referral", params={"media": "exclude"}, headers=bearer)
            with zipfile.ZipFile(io.BytesIO(bare.content)) as z:
                assert not any(n.startswith("media/") for n in z.namelist())
            missing = http.post("/v1/clearinghouse/reports/999999/route", headers=bearer)
            assert missing.status_code == 404
            spec = http.get("/openapi.json").json()["paths"]
            assert "/v1/clearinghouse/reports/{report_id}/referral" in spec

        # the same through the command line
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "TIPLINE_DATABASE_URL": db_url,
            "TIPLINE_DATA_DIR": str(tmp_path / "ch"),
            "TIPLINE_VAULT_MASTER_KEY_FILE": str(tmp_path / "ch" / "master.key"),
            "TIPLINE_GEOIP_DATABASE": str(geo_path),
            "TIPLINE_ROUTING_TABLE": TABLE.model_dump_json(),
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_tipline(args, env=env)  # in this process: see tests/_cli.py

        shown = cli("referral", "show", str(report_id), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["decision"]["agency"] == "icac-ca"
        again = cli("referral", "route", str(report_id))
        assert again.returncode == 0 and "icac-ca" in again.stdout
        out = tmp_path / "cli.zip"
        made = cli("referral", "package", str(report_id), "--out", str(out), "--no-media")
        assert made.returncode == 0, made.stderr
        assert "media/" not in "".join(zipfile.ZipFile(out).namelist())
        failed = cli("referral", "package", str(report_id), "--out", str(out))
        assert failed.returncode == 2 and "already exists" in failed.stderr
        assert failed.stderr.count("\n") == 1
        unknown = cli("referral", "show", "424242")
        assert unknown.returncode == 2 and "not been routed" in unknown.stderr


def test_routing_without_a_geolocation_database_is_a_503_and_one_cli_line(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'ch' / 'tipline.db'}"
    with intake_server(db_url, tmp_path / "ch") as server:
        server.add_provider("esp-nogeo", "no-geo-provider-password")
        client = IspwsClient(server.url, "esp-nogeo", "no-geo-provider-password")
        try:
            report_id, _ = file_report_over_http(client, person_ips=(ip_event("8.8.4.4"),))
        finally:
            client.close()
        with transaction(server.sessions) as s:
            analyst = create_key(s, name="analyst", role=Role.ANALYST).secret
        base = server.url.removesuffix("/ispws")
        with httpx.Client(base_url=base, timeout=HANG_SECONDS) as http:
            got = http.post(
                f"/v1/clearinghouse/reports/{report_id}/route",
                headers={"Authorization": f"Bearer {analyst}"},
            )
        assert got.status_code == 503
        assert got.json()["type"].endswith("geoip-database")  # the detail stays in the logs
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "TIPLINE_DATABASE_URL": db_url,
            "TIPLINE_DATA_DIR": str(tmp_path / "ch"),
        }
        env.pop("TIPLINE_GEOIP_DATABASE", None)
        done = run_tipline(["referral", "route"], env=env)
        assert done.returncode == 2 and done.stderr.count("\n") == 1
        assert "TIPLINE_GEOIP_DATABASE" in done.stderr
