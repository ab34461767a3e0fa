"""The analyst API over HTTP against a real clearinghouse server: reports filed through
the ISPWS intake with plain HTTP, triaged by the serving process, then read, clustered,
confirmed (publishing the new material's hashes) and rejected, with roles, the tenant
rule and the audit log checked — on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
from sqlalchemy import select

from _clock import HANG_SECONDS
from _intake_media import file_details_xml, pdq_of, pictures, report_xml, variant
from _intake_server import IntakeServer, intake_server
from tipline.services import banks
from tipline.services.audit import verify
from tipline.services.auth import create_key
from tipline.services.database import Database
from tipline.store.audit import AuditRecord
from tipline.store.clearinghouse_triage import TriageRow
from tipline.store.db import transaction

PASSWORDS = {"esp-a": "password-of-esp-a", "esp-b": "password-of-esp-b"}


@pytest.fixture
def srv(db_url: str, tmp_path: Path) -> Iterator[tuple[IntakeServer, dict[str, str]]]:
    with intake_server(db_url, tmp_path / "ch", intake_max_file_bytes=1 << 20) as running:
        for name, password in PASSWORDS.items():
            running.add_provider(name, password)
        keys = {}
        with transaction(running.sessions) as s:
            for name, role, tenant in (
                ("analyst", "analyst", None),
                ("reviewer", "reviewer", None),
                ("tenant-analyst", "analyst", "acme"),
            ):
                keys[name] = create_key(s, name=name, role=role, tenant=tenant).secret
        yield running, keys


def _ispws(srv: IntakeServer, provider: str) -> httpx.Client:
    return httpx.Client(
        base_url=srv.url,
        auth=(provider, PASSWORDS[provider]),
        timeout=HANG_SECONDS,
        trust_env=False,
    )


def _api(srv: IntakeServer, key: str | None) -> httpx.Client:
    base = srv.url.removesuffix("/ispws")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=HANG_SECONDS, trust_env=False)


def _code(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return ET.fromstring(response.content).findtext("responseCode") or ""


def file_report(
    srv: IntakeServer,
    provider: str,
    files: list[bytes],
    *,
    xml: bytes,
    details: dict[int, dict[str, object]] | None = None,
    finish: bool = True,
) -> tuple[int, list[str]]:
    with _ispws(srv, provider) as http:
        opened = http.post("/submit", content=xml, headers={"Content-Type": "text/xml"})
        assert _code(opened) == "0"
        rid = int(ET.fromstring(opened.content).findtext("reportId") or "")
        ids = []
        for n, data in enumerate(files):
            up = http.post("/upload", data={"id": str(rid)}, files={"file": (f"{n}.jpg", data)})
            assert _code(up) == "0"
            fid = ET.fromstring(up.content).findtext("fileId") or ""
            ids.append(fid)
            if details and n in details:
                doc = file_details_xml(rid, fid, **details[n])  # type: ignore[arg-type]
                assert _code(http.post("/fileinfo", content=doc)) == "0"
        if finish:
            assert _code(http.post("/finish", data={"id": str(rid)})) == "0"
    return rid, ids


def wait_triaged(srv: IntakeServer, *report_ids: int) -> None:
    deadline = time.monotonic() + HANG_SECONDS  # bounds a failure only
    while True:
        with srv.sessions() as s:
            if all(s.get(TriageRow, r) is not None for r in report_ids):
                return
        assert time.monotonic() < deadline, "reports were not triaged"
        time.sleep(0.05)


def test_analyst_flow(srv: tuple[IntakeServer, dict[str, str]]) -> None:
    server, keys = srv
    a, b, c = pictures(3)
    person = {"emails": ("reported@example.org",), "esp_id": "acct-1"}
    r1, (f1a, _f1b) = file_report(
        server,
        "esp-a",
        [variant(a, "base"), variant(b, "base")],
        xml=report_xml(**person),  # type: ignore[arg-type]
        details={0: {"classification": "A1", "annotations": ("infant",)}},
    )
    r2, (f2,) = file_report(
        server,
        "esp-b",
        [variant(a, "small")],
        xml=report_xml(escalate="ongoing abuse", emails=("Reported@Example.org",)),
    )
    open_report, _ = file_report(
        server, "esp-b", [variant(c, "base")], xml=report_xml(), finish=False
    )
    wait_triaged(server, r1, r2)
    with _api(server, keys["analyst"]) as api:
        items = api.get("/v1/clearinghouse/queue").json()
        assert [i["report_id"] for i in items] == sorted(
            (r1, r2), key=lambda r: -next(i["score"] for i in items if i["report_id"] == r)
        )
        first = next(i for i in items if i["report_id"] == r1)
        by_name = {f["name"]: f for f in first["factors"]}
        assert by_name["new_material"]["weight"] == 100.0
        assert by_name["classification.A1"]["points"] == 40.0
        assert "file.infant" in by_name
        assert first["score"] == pytest.approx(sum(f["points"] for f in first["factors"]))

        listed = api.get("/v1/clearinghouse/reports").json()
        assert [r["report_id"] for r in listed] == [open_report, r2, r1]
        assert listed[0]["status"] == "open" and listed[0]["score"] is None
        only_a = api.get("/v1/clearinghouse/reports", params={"provider": "esp-a"}).json()
        assert [r["report_id"] for r in only_a] == [r1]

        view = api.get(f"/v1/clearinghouse/reports/{r2}").json()
        assert view["incident"]["escalation"] == "ongoing abuse"
        (file2,) = view["files"]
        assert file2["md5"] == hashlib.md5(variant(a, "small")).hexdigest()
        assert file2["pdq"]["value"] == pdq_of(variant(a, "small"))
        assert file2["state"] == "seen"
        (link,) = file2["links"]
        assert (link["other_file_id"], link["other_report_id"], link["signal"]) == (f1a, r1, "pdq")
        (linked,) = view["linked_reports"]
        assert linked["report_id"] == r1
        assert linked["shared"] == [{"kind": "email", "value": "reported@example.org"}]

        cluster = api.get(f"/v1/clearinghouse/clusters/{file2['cluster_id']}").json()
        assert [f["file_id"] for f in cluster["files"]] == [f1a, f2]
        assert cluster["reports"] == 2 and cluster["providers"] == 2
        assert cluster["files"][1]["links"][0]["distance"] == link["distance"]

        confirmed = api.post(
            f"/v1/clearinghouse/reports/{r1}/confirm", json={"classification": "A1"}
        )
        assert confirmed.status_code == 200, confirmed.text
        sha = {hashlib.sha256(variant(p, "base")).hexdigest() for p in (a, b)}
        assert set(confirmed.json()["published"]) == sha
        again = api.post(f"/v1/clearinghouse/reports/{r1}/confirm", json={})
        assert again.status_code == 409
        rejected = api.post(f"/v1/clearinghouse/reports/{r2}/reject", json={"note": "dup"})
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        assert api.get("/v1/clearinghouse/queue").json() == []
        done = api.get("/v1/clearinghouse/queue", params={"status": "confirmed"}).json()
        assert [i["report_id"] for i in done] == [r1]
        assert api.get("/v1/clearinghouse/reports/999999").status_code == 404
        assert api.get("/v1/clearinghouse/clusters/999999").status_code == 404

    db = Database(server.sessions.kw["bind"], server.sessions, server.settings.database_url or "")
    entries = list(banks.iter_bank_entries(db, "clearinghouse-confirmed"))
    assert {e.entry_id for e in entries} == sha
    assert all(e.labels == ("A1",) for e in entries)
    # confirmed material is known from now on: a later copy is not new
    r3, _ = file_report(server, "esp-b", [variant(a, "recoded")], xml=report_xml())
    wait_triaged(server, r3)
    with _api(server, keys["analyst"]) as api:
        view = api.get(f"/v1/clearinghouse/reports/{r3}").json()
    (file3,) = view["files"]
    assert file3["state"] == "known"
    assert file3["known"][0]["bank"] == "clearinghouse-confirmed"
    with server.sessions() as s:
        actions = list(s.scalars(select(AuditRecord.action)))
        assert verify(s).ok
    for action in (
        "clearinghouse.triage",
        "clearinghouse.report.view",
        "clearinghouse.cluster.view",
        "clearinghouse.confirm",
        "clearinghouse.reject",
        "bank.create",
    ):
        assert action in actions


def test_roles_and_the_tenant_rule(srv: tuple[IntakeServer, dict[str, str]]) -> None:
    server, keys = srv
    with _api(server, None) as api:
        assert api.get("/v1/clearinghouse/queue").status_code == 401
    for name in ("reviewer", "tenant-analyst"):
        with _api(server, keys[name]) as api:
            assert api.get("/v1/clearinghouse/queue").status_code == 403
            assert api.post("/v1/clearinghouse/reports/1/reject", json={}).status_code == 403
    with _api(server, keys["analyst"]) as api:
        paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/clearinghouse/queue",
        "/v1/clearinghouse/reports",
        "/v1/clearinghouse/reports/{report_id}",
        "/v1/clearinghouse/clusters/{cluster_id}",
        "/v1/clearinghouse/reports/{report_id}/confirm",
        "/v1/clearinghouse/reports/{report_id}/reject",
    ):
        assert path in paths
