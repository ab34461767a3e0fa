"""``/v1/reports`` against a real ``tipline serve`` process: build from a decision, list
with delivery state, show, download the XML, retract, retry; tenant isolation and
problem documents."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree
from pydantic import SecretStr

from _app_server import AppServer as Server
from _app_server import app_server
from _ispws_server import ispws_server
from tipline.config import Settings
from tipline.demo import sample_images
from tipline.services import vault as v
from tipline.services.reports import builder, service
from tipline.services.reports.facts import ReviewFacts
from tipline.store import submissions as sub
from tipline.store.db import make_engine, session_factory, transaction


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'tipline.db'}",
        vault_master_key=base64.b64encode(os.urandom(32)).decode(),
        report_reporter_email="reports@example.org",
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    """The API in this process (tests/_app_server.py): what is tested is the routes, not
    the ``tipline serve`` process (a process start costs seconds of CPU per test)."""
    assert settings.vault_master_key is not None and settings.database_url
    with app_server(
        settings.database_url,
        settings.data_dir,
        vault_master_key=settings.vault_master_key.get_secret_value(),
        report_reporter_email="reports@example.org",
    ) as srv:
        yield srv


def _decision(
    settings: Settings,
    tenant: str,
    viewed: bool,
    kind: sub.DecisionKind = sub.DecisionKind.CONFIRMED,
) -> str:
    engine = make_engine(settings=settings)
    try:
        with transaction(session_factory(engine)) as session:
            row = sub.create_submission(
                session,
                tenant=tenant,
                content_id="c-9",
                created_by="test",
                uploader_account="user-9",
                upload_ip="192.0.2.44",
                upload_port=61000,
                uploaded_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
            v.store(
                session,
                v.Vault.from_settings(settings),
                b"benign bytes",
                kind=v.EvidenceKind.MEDIA,
                actor="test",
                tenant=tenant,
                filename="f.jpg",
                submission_id=row.id,
            )
            return sub.add_decision(
                session,
                tenant,
                row.id,
                kind,
                decided_by="rev",
                facts=ReviewFacts(viewed=viewed).as_json(),
            ).id
    finally:
        engine.dispose()


def test_report_routes(server: Server, settings: Settings) -> None:
    client = server.client("a_reviewer")
    globex = {"Authorization": f"Bearer {server.keys['b_admin']}"}
    matcher = {"Authorization": f"Bearer {server.keys['a_matcher']}"}
    acme: dict[str, str] = {}
    decision = _decision(settings, "tenant-a", viewed=True)

    assert client.post(f"/v1/decisions/{decision}/report", headers=matcher).status_code == 403
    assert client.post(f"/v1/decisions/{decision}/report", headers=globex).status_code == 404
    made = client.post(f"/v1/decisions/{decision}/report", headers=acme)
    assert made.status_code == 201, made.text
    report = made.json()
    assert report["status"] == "queued" and report["step"] == "submit"
    assert (
        client.post(f"/v1/decisions/{decision}/report", headers=acme).json()["id"] == report["id"]
    )

    listed = client.get("/v1/reports", headers=acme).json()
    assert [r["id"] for r in listed] == [report["id"]]
    assert client.get("/v1/reports", headers=globex).json() == []
    assert client.get("/v1/reports?status=finished", headers=acme).json() == []
    assert client.get(f"/v1/reports/{report['id']}", headers=globex).status_code == 404

    xml = client.get(f"/v1/reports/{report['id']}/xml", headers=acme)
    assert xml.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(xml.content)
    assert root.findtext("personOrUserReported/ipCaptureEvent/port") == "61000"

    with ispws_server() as rx:
        delivery = settings.model_copy(
            update={
                "report_ispws_url": rx.url,
                "report_ispws_username": rx.username,
                "report_ispws_password": SecretStr(rx.password),
            }
        )
        with service.reports_database(delivery) as sessions:
            assert service.deliver(sessions, settings=delivery).finished == 1
    shown = client.get(f"/v1/reports/{report['id']}", headers=acme).json()
    assert shown["report"]["status"] == "finished" and shown["report"]["step"] is None
    assert shown["files"][0]["viewed_by_esp"] is True
    assert [e["step"] for e in shown["events"] if e["phase"] == "ok"] == [
        "submit",
        "upload",
        "fileinfo",
        "finish",
    ]
    refused = client.post(f"/v1/reports/{report['id']}/retract", headers=acme)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.post(f"/v1/reports/{report['id']}/retry", headers=acme).status_code == 409
    assert client.get("/v1/reports/operator-queue", headers=acme).json() == []

    other = client.post(
        f"/v1/decisions/{_decision(settings, 'tenant-a', viewed=False)}/report", headers=acme
    ).json()
    retracted = client.post(f"/v1/reports/{other['id']}/retract", headers=acme).json()
    assert retracted["status"] == "retracted"


def test_submission_and_decision_carry_report_facts(server: Server) -> None:
    matcher = server.client("a_matcher")
    reviewer = server.client("a_reviewer")
    body = {
        "content_id": "c-77",
        "uploader_account": "user-77",
        "upload_ip": "2001:db8::1",
        "upload_port": 51515,
        "uploaded_at": "2026-11-01T10:00:00Z",
        "file_name": "beach.jpg",
        "uploader_screen_name": "sunny",
        "uploader_profile_url": "https://example.org/u/77",
        "account": {
            "ip_events": [{"ip": "192.0.2.5", "event": "Login", "at": "2026-10-31T09:00:00Z"}],
            "devices": [{"id_type": "IDFA", "value": "X-1"}],
            "location": {"city": "Lyon", "country": "FR"},
        },
    }
    made = matcher.post("/v1/submissions", json=body)
    assert made.status_code == 201, made.text
    out = made.json()
    assert out["upload_port"] == 51515 and out["file_name"] == "beach.jpg"
    assert out["account"]["location"]["country"] == "FR"
    bad = matcher.post(
        "/v1/submissions", json={**body, "account": {"location": {"country": "France"}}}
    )
    assert bad.status_code in (400, 422) and "ISO 3166" in bad.text
    assert matcher.post("/v1/submissions", json={**body, "upload_port": 70000}).status_code in (
        400,
        422,
    )
    decided = reviewer.post(
        f"/v1/submissions/{out['id']}/decisions",
        json={
            "decision": "confirmed",
            "facts": {"viewed": True, "classification": "A1", "file_annotations": ["infant"]},
        },
    )
    assert decided.status_code == 201, decided.text
    facts = decided.json()["facts"]
    assert facts["viewed"] is True and facts["classification"] == "A1"
    assert facts["exif_viewed"] is False
    # no media was kept for this submission: a clear refusal, nothing stored
    refused = reviewer.post(f"/v1/decisions/{decided.json()['id']}/report")
    assert refused.status_code == 400 and "no stored media" in refused.text
    assert reviewer.get("/v1/reports").json() == []
    # /v1/match carries the same upload facts as query parameters
    image = sample_images()[0].read_bytes()
    matched = matcher.post(
        "/v1/match",
        params={
            "content_id": "c-78",
            "upload_ip": "192.0.2.9",
            "upload_port": 40404,
            "file_name": "x.jpg",
            "uploader_screen_name": "moon",
        },
        content=image,
    )
    assert matched.status_code == 200, matched.text
    stored = reviewer.get(f"/v1/submissions/{matched.json()['submission_id']}").json()
    assert (stored["upload_port"], stored["file_name"], stored["uploader_screen_name"]) == (
        40404,
        "x.jpg",
        "moon",
    )
    orphan_facts = matcher.post("/v1/match", params={"upload_port": 1}, content=image)
    assert orphan_facts.status_code == 400 and "content_id" in orphan_facts.text


def test_failed_report_listed_queued_and_retried_over_http(
    server: Server, settings: Settings
) -> None:
    reviewer = server.client("a_reviewer")
    made = reviewer.post(f"/v1/decisions/{_decision(settings, 'tenant-a', viewed=False)}/report")
    assert made.status_code == 201, made.text
    report_id = made.json()["id"]
    with ispws_server() as rx:
        wrong = settings.model_copy(
            update={
                "report_ispws_url": rx.url,
                "report_ispws_username": rx.username,
                "report_ispws_password": SecretStr("not-the-password"),
            }
        )
        with service.reports_database(wrong) as sessions:
            assert service.deliver(sessions, settings=wrong).failed == 1
        failed = reviewer.get("/v1/reports", params={"status": "failed"}).json()
        assert [(r["id"], r["step"]) for r in failed] == [(report_id, None)]
        assert failed[0]["last_error"]
        (item,) = reviewer.get("/v1/reports/operator-queue").json()
        assert item["report_id"] == report_id and item["step"] == "submit"
        assert server.client("b_reviewer").get("/v1/reports/operator-queue").json() == []
        assert server.client("b_admin").post(f"/v1/reports/{report_id}/retry").status_code == 404
        retried = reviewer.post(f"/v1/reports/{report_id}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued" and retried.json()["step"] == "submit"
        assert reviewer.get("/v1/reports/operator-queue").json() == []
        right = wrong.model_copy(update={"report_ispws_password": SecretStr(rx.password)})
        with service.reports_database(right) as sessions:
            assert service.deliver(sessions, settings=right).finished == 1
        assert len(rx.receiver.finished_by_ref()) == 1
    shown = reviewer.get(f"/v1/reports/{report_id}").json()
    assert shown["report"]["status"] == "finished"


def test_review_decision_on_another_tenants_item_is_not_found(server: Server) -> None:
    known = sample_images()[0]
    curator = server.client("a_curator")
    assert curator.post("/v1/banks", json={"name": "kept"}).status_code == 201
    added = curator.post("/v1/banks/kept/media?entry_id=k1", content=known.read_bytes())
    assert added.status_code == 201, added.text
    rule = server.client("a_admin").post(
        "/v1/rules", json={"action": "enqueue_review", "bank": "kept"}
    )
    assert rule.status_code == 201, rule.text
    sent = server.client("a_matcher").post(
        "/v1/match", params={"content_id": "c-1"}, content=known.read_bytes()
    )
    assert sent.status_code == 200 and sent.json()["matched"], sent.text
    submission_id = sent.json()["submission_id"]
    (item,) = server.client("a_reviewer").get("/v1/review").json()
    other = server.client("b_admin")
    refused = other.post(f"/v1/review/{item['id']}/decision", json={"decision": "rejected"})
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    direct = other.post(
        f"/v1/submissions/{submission_id}/decisions", json={"decision": "false_positive"}
    )
    assert direct.status_code == 404
    # nothing was decided and the kept media is still there
    reviewer = server.client("a_reviewer")
    assert [q["id"] for q in reviewer.get("/v1/review").json()] == [item["id"]]
    assert reviewer.get(f"/v1/submissions/{submission_id}/decisions").json() == []
    (kept,) = reviewer.get("/v1/vault/items", params={"submission_id": submission_id}).json()
    assert kept["purged_at"] is None
    # the owner's rejection erases the media kept only for review
    rejected = reviewer.post(f"/v1/review/{item['id']}/decision", json={"decision": "rejected"})
    assert rejected.status_code == 204, rejected.text
    assert reviewer.get("/v1/vault/items", params={"submission_id": submission_id}).json() == []


def test_batch_report_route(server: Server, settings: Settings) -> None:
    client = server.client("a_reviewer")
    a1 = _decision(settings, "tenant-a", viewed=True)
    a2 = _decision(settings, "tenant-a", viewed=False)
    dismissed = _decision(settings, "tenant-a", viewed=False, kind=sub.DecisionKind.DISMISSED)
    b1 = _decision(settings, "tenant-b", viewed=False)
    body = {"decisions": [a1, b1, a2, "01NOSUCHDECISION000000000", dismissed, a1]}

    matcher = {"Authorization": f"Bearer {server.keys['a_matcher']}"}
    assert client.post("/v1/reports/batch", json=body, headers=matcher).status_code == 403
    anonymous = server.client(None)
    assert anonymous.post("/v1/reports/batch", json=body).status_code == 401
    for bad in (
        {"decisions": []},
        {"decisions": ["x"] * 1001},
        {"decisions": ["x" * 27]},
        {"decisions": ["01NUL\u0000"]},
        {"decisions": [a1], "extra": 1},
    ):
        refused = client.post("/v1/reports/batch", json=bad)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")

    answer = client.post("/v1/reports/batch", json=body)
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["reported"] == 3 and made["failed"] == 3
    outcomes = made["outcomes"]
    assert [o["decision_id"] for o in outcomes] == body["decisions"]
    first, other_tenant, second, unknown, not_confirmed, again = outcomes
    assert first["report"]["status"] == "queued" and first["report"]["step"] == "submit"
    assert second["report"]["id"] != first["report"]["id"] and second["error"] is None
    assert again["report"]["id"] == first["report"]["id"]
    assert other_tenant["report"] is None and "no decision" in other_tenant["error"]
    assert unknown["report"] is None and "no decision" in unknown["error"]
    assert not_confirmed["report"] is None and "confirmed" in not_confirmed["error"]

    schema = etree.XMLSchema(etree.fromstring(builder.schema_bytes()))
    viewed = {}
    for outcome in (first, second):
        report_id = outcome["report"]["id"]
        schema.assertValid(etree.fromstring(client.get(f"/v1/reports/{report_id}/xml").content))
        shown = client.get(f"/v1/reports/{report_id}").json()
        viewed[outcome["decision_id"]] = shown["files"][0]["viewed_by_esp"]
    assert viewed == {a1: True, a2: False}

    # asking again answers the reports already made; tenant-b reports its own
    assert [
        o["report"]["id"] if o["report"] else None
        for o in client.post("/v1/reports/batch", json=body).json()["outcomes"]
    ] == [o["report"]["id"] if o["report"] else None for o in outcomes]
    globex = server.client("b_admin")
    theirs = globex.post("/v1/reports/batch", json={"decisions": [b1, a1]}).json()
    assert theirs["reported"] == 1 and theirs["outcomes"][0]["report"]["tenant"] == "tenant-b"
    assert "no decision" in theirs["outcomes"][1]["error"]
    assert [r["id"] for r in globex.get("/v1/reports").json()] == [
        theirs["outcomes"][0]["report"]["id"]
    ]
