"""The native /v1 API against a real ``tipline serve`` process (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from _app_server import AppServer as Server
from _app_server import app_server_on
from _drift_image import drift_jpeg
from tipline.demo import sample_images
from tipline.services import audit
from tipline.signals.hashing import HashOptions, hash_path
from tipline.store.db import make_engine, session_factory

PDQ_A = "f" * 64
PROBLEM = "application/problem+json"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with app_server_on(request.param, request, tmp_path_factory.mktemp("api")) as srv:
        yield srv


def _problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert str(body["type"]).startswith("/problems/")
    return dict(body)


def _audit_actions(server: Server) -> list[str]:
    engine = make_engine(server.db_url)
    try:
        with session_factory(engine)() as session:
            return [r.action for r in audit.recent(session, limit=500)]
    finally:
        engine.dispose()


# -- system --------------------------------------------------------------------------------


def test_health_ready_metrics_need_no_key(server: Server) -> None:
    anon = server.client(None)
    assert anon.get("/v1/health").json()["status"] == "ok"
    assert anon.get("/v1/ready").json() == {"status": "ready", "database": "ok"}
    metrics = anon.get("/metrics")
    assert metrics.status_code == 200
    assert "tipline_http_requests_total" in metrics.text
    assert 'route="/v1/health"' in metrics.text


def test_openapi_document(server: Server) -> None:
    spec = server.client(None).get("/openapi.json").json()
    for path in ("/v1/hash", "/v1/banks", "/v1/submissions", "/v1/webhooks", "/v1/health"):
        assert path in spec["paths"]


# -- auth ----------------------------------------------------------------------------------


def test_missing_and_bad_keys_are_401(server: Server) -> None:
    anon = server.client(None)
    body = _problem(anon.get("/v1/banks"), 401)
    assert "API key" in str(body["detail"])
    assert anon.get("/v1/banks").headers["www-authenticate"].startswith("Bearer")
    _problem(anon.get("/v1/banks", headers={"Authorization": "Bearer tpl_nope"}), 401)
    _problem(anon.get("/v1/banks", headers={"X-API-Key": "tpl_000000000000_x"}), 401)
    ok = anon.get("/v1/banks", headers={"X-API-Key": server.keys["admin"]})
    assert ok.status_code == 200


def test_roles_are_enforced(server: Server) -> None:
    _problem(server.client("hasher").get("/v1/banks"), 403)
    _problem(server.client("reviewer").post("/v1/banks", json={"name": "nope"}), 403)
    _problem(server.client("matcher").get("/v1/webhooks"), 403)
    assert server.client("reviewer").get("/v1/banks").status_code == 200


# -- hashing -------------------------------------------------------------------------------


def test_hash_upload_matches_local_hashing(server: Server) -> None:
    path = sample_images()[0]
    resp = server.client("hasher").post("/v1/hash", content=path.read_bytes())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    local = hash_path(str(path), HashOptions())
    assert body["media"] == "photo"
    assert body["size"] == path.stat().st_size
    assert {(s["type"], s["value"]) for s in body["signals"]} == {
        (s.type, s.value) for s in local.signals
    }
    assert "hash.upload" in _audit_actions(server)


def test_hash_bad_media(server: Server) -> None:
    c = server.client("hasher")
    _problem(c.post("/v1/hash", content=b"not an image at all" * 10), 415)
    _problem(c.post("/v1/hash", content=b""), 422)
    _problem(c.post("/v1/hash?signals=nope", content=b"x"), 400)
    truncated = sample_images()[0].read_bytes()[:300]
    assert c.post("/v1/hash", content=truncated).status_code in (415, 422)


def test_oversize_body_refused_while_streaming(server: Server) -> None:
    c = server.client("hasher")
    big = b"\xff" * (9 * 1024 * 1024)
    body = _problem(c.post("/v1/hash", content=big), 413)
    assert "limit" in str(body["detail"])

    def chunks() -> Iterator[bytes]:
        for _ in range(9 * 16):
            yield b"\xff" * 65536

    _problem(c.post("/v1/hash", content=chunks()), 413)


class _ImageHandler(BaseHTTPRequestHandler):
    data = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    handler = type("H", (_ImageHandler,), {"data": sample_images()[0].read_bytes()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/image.jpg"
    srv.shutdown()
    srv.server_close()


def test_hash_by_url(server: Server, media_server: str) -> None:
    c = server.client("hasher")
    resp = c.get("/v1/hash", params={"url": media_server})
    assert resp.status_code == 200, resp.text
    local = hash_path(str(sample_images()[0]), HashOptions())
    assert {s["value"] for s in resp.json()["signals"]} == {s.value for s in local.signals}
    # Metadata addresses are refused whatever the allow-list says.
    body = _problem(c.get("/v1/hash", params={"url": "http://169.254.169.254/latest"}), 400)
    assert "non-public" in str(body["detail"])
    _problem(c.get("/v1/hash", params={"url": "file:///etc/passwd"}), 400)


# -- bad input -----------------------------------------------------------------------------


def test_malformed_json_and_wrong_types(server: Server) -> None:
    c = server.client("curator")
    _problem(
        c.post("/v1/banks", content=b"{not json", headers={"Content-Type": "application/json"}),
        422,
    )
    _problem(c.post("/v1/banks", json={"name": 12}), 422)
    _problem(c.post("/v1/banks", json={"name": "x", "thresholds": {"pdq": "many"}}), 422)
    _problem(c.post("/v1/banks", json={"name": "x", "unknown": 1}), 422)
    _problem(c.post("/v1/banks", json={"name": "x", "thresholds": {"nope": 3}}), 400)
    _problem(c.get("/v1/nowhere"), 404)
    _problem(c.delete("/v1/health"), 405)


# -- banks ---------------------------------------------------------------------------------


def test_bank_crud(server: Server) -> None:
    c = server.client("curator")
    resp = c.post("/v1/banks", json={"name": "crud", "thresholds": {"pdq": 20}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["thresholds"] == {"pdq": 20}
    _problem(c.post("/v1/banks", json={"name": "crud"}), 409)
    assert "crud" in [b["name"] for b in c.get("/v1/banks").json()]
    entry = c.post(
        "/v1/banks/crud/entries",
        json={"signals": [f"pdq:{PDQ_A}"], "entry_id": "e1", "labels": ["A1"]},
    )
    assert entry.status_code == 201, entry.text
    assert entry.json()["signals"] == [{"type": "pdq", "value": PDQ_A}]
    _problem(c.post("/v1/banks/crud/entries", json={"signals": ["pdq:zz"]}), 400)
    _problem(
        c.post("/v1/banks/crud/entries", json={"signals": [f"pdq:{PDQ_A}"], "entry_id": "e1"}), 409
    )
    assert c.get("/v1/banks/crud/entries/e1").json()["labels"] == ["A1"]
    disabled = c.patch(
        "/v1/banks/crud/entries/e1", json={"disabled": True, "reason": "false positive"}
    )
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    _problem(c.patch("/v1/banks/crud/entries/e1", json={"disabled": True}), 400)
    media = c.post("/v1/banks/crud/media?entry_id=m1", content=sample_images()[1].read_bytes())
    assert media.status_code == 201, media.text
    assert {s["type"] for s in media.json()["signals"]} >= {"pdq", "md5"}
    listed = c.get("/v1/banks/crud/entries").json()
    assert [e["entry_id"] for e in listed] == ["e1", "m1"]
    bank = c.get("/v1/banks/crud").json()
    assert bank["entries"] == 2 and bank["disabled_entries"] == 1
    patched = c.patch("/v1/banks/crud", json={"enabled": False})
    assert patched.json()["enabled"] is False
    _problem(c.get("/v1/banks/unknown-bank"), 404)
    _problem(c.post("/v1/banks/unknown-bank/entries", json={"signals": [f"pdq:{PDQ_A}"]}), 404)
    actions = _audit_actions(server)
    assert {"bank.create", "entry.add", "entry.disable", "bank.media.upload"} <= set(actions)


def test_bank_media_stores_the_reference_pdq(server: Server) -> None:
    # Hashes going INTO a bank use the reference decode, whatever queries use.
    data, reference, fast = drift_jpeg()
    c = server.client("curator")
    assert c.post("/v1/banks", json={"name": "reference-pdq"}).status_code == 201
    added = c.post("/v1/banks/reference-pdq/media?entry_id=r1", content=data)
    assert added.status_code == 201, added.text
    stored = {s["type"]: s["value"] for s in added.json()["signals"]}
    assert stored["pdq"] == reference != fast
    entry = c.get("/v1/banks/reference-pdq/entries/r1").json()
    assert {"type": "pdq", "value": reference} in entry["signals"]


def test_tenants_do_not_see_each_other(server: Server) -> None:
    a, b = server.client("a_curator"), server.client("b_curator")
    assert a.post("/v1/banks", json={"name": "a-only"}).status_code == 201
    assert a.get("/v1/banks/a-only").json()["tenant"] == "tenant-a"
    assert "a-only" not in [x["name"] for x in b.get("/v1/banks").json()]
    _problem(b.get("/v1/banks/a-only"), 404)
    _problem(b.post("/v1/banks/a-only/entries", json={"signals": [f"pdq:{PDQ_A}"]}), 404)
    _problem(b.patch("/v1/banks/a-only", json={"enabled": False}), 404)
    # Shared banks (no tenant) are readable, not writable, by tenants.
    assert server.client("curator").post("/v1/banks", json={"name": "shared"}).status_code == 201
    assert b.get("/v1/banks/shared").status_code == 200
    _problem(b.post("/v1/banks/shared/entries", json={"signals": [f"pdq:{PDQ_A}"]}), 404)

    sub = server.client("a_matcher").post("/v1/submissions", json={"content_id": "c-a"})
    assert sub.status_code == 201, sub.text
    sid = sub.json()["id"]
    assert sub.json()["tenant"] == "tenant-a"
    assert server.client("a_reviewer").get(f"/v1/submissions/{sid}").status_code == 200
    _problem(server.client("b_reviewer").get(f"/v1/submissions/{sid}"), 404)
    assert sid not in [s["id"] for s in server.client("b_reviewer").get("/v1/submissions").json()]
    _problem(
        server.client("b_reviewer").post(
            f"/v1/submissions/{sid}/decisions", json={"decision": "confirmed"}
        ),
        404,
    )


# -- submissions ---------------------------------------------------------------------------


def test_submissions_and_decisions(server: Server) -> None:
    m = server.client("matcher")
    resp = m.post(
        "/v1/submissions",
        json={
            "content_id": "post-1",
            "uploader_account": "user-9",
            "upload_ip": "2001:db8::1",
            "uploaded_at": "2026-01-02T03:04:05Z",
            "metadata": {"caption": "hello"},
            "signals": [{"type": "PDQ", "value": PDQ_A.upper()}],
        },
    )
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert sub["signals"] == [{"type": "pdq", "value": PDQ_A}]
    assert sub["upload_ip"] == "2001:db8::1"
    _problem(m.post("/v1/submissions", json={"content_id": "x", "upload_ip": "999.1.1.1"}), 422)
    _problem(
        m.post("/v1/submissions", json={"content_id": "x", "uploaded_at": "2026-01-02T03:04:05"}),
        422,
    )
    r = server.client("reviewer")
    got = r.get(f"/v1/submissions/{sub['id']}").json()
    assert got["uploader_account"] == "user-9"
    assert got["uploaded_at"].startswith("2026-01-02T03:04:05")
    found = r.get("/v1/submissions", params={"content_id": "post-1"}).json()
    assert [s["id"] for s in found] == [sub["id"]]
    d = r.post(f"/v1/submissions/{sub['id']}/decisions", json={"decision": "false_positive"})
    assert d.status_code == 201, d.text
    assert [x["decision"] for x in r.get(f"/v1/submissions/{sub['id']}/decisions").json()] == [
        "false_positive"
    ]
    _problem(r.post(f"/v1/submissions/{sub['id']}/decisions", json={"decision": "maybe"}), 422)
    _problem(r.get("/v1/submissions/01NOSUCHSUBMISSION0000000"), 404)
    assert {"submission.create", "submission.decide"} <= set(_audit_actions(server))


# -- webhooks ------------------------------------------------------------------------------


def test_webhooks_config(server: Server) -> None:
    c = server.client("admin")
    # the SSRF guard: private and metadata addresses refused (the test server allows 127/8)
    for url in ("http://10.0.0.7/hook", "http://169.254.169.254/", "http://[::1]/hook"):
        _problem(c.post("/v1/webhooks", json={"url": url}), 400)
    resp = c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "banks": ["crud"]})
    assert resp.status_code == 201, resp.text
    hook = resp.json()
    assert len(hook["secret"]) >= 16
    listed = c.get("/v1/webhooks").json()
    assert hook["id"] in [h["id"] for h in listed]
    assert all("secret" not in h for h in listed)
    assert c.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False}).json()["enabled"] is False
    rule = c.post("/v1/rules", json={"action": "webhook", "webhook_id": hook["id"], "bank": "crud"})
    assert rule.status_code == 201, rule.text
    _problem(server.client("b_admin").get(f"/v1/webhooks/{hook['id']}"), 404)
    assert c.delete(f"/v1/rules/{rule.json()['id']}").status_code == 204
    assert c.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    _problem(c.get(f"/v1/webhooks/{hook['id']}"), 404)
    _problem(c.post("/v1/webhooks", json={"url": "ftp://x"}), 400)


def test_data_dir_layout(server: Server) -> None:
    assert Path(server.data_dir).is_dir()


def test_revoked_key_stops_working_within_the_cache_time(server: Server) -> None:
    import time

    from tipline.api.deps import AUTH_CACHE_SECONDS
    from tipline.services.auth import create_key, revoke_key
    from tipline.store.db import transaction

    engine = make_engine(server.db_url)
    try:
        with transaction(session_factory(engine)) as session:
            key = create_key(session, name="short-lived", role="hasher")
        headers = {"X-API-Key": key.secret}
        anon = server.client(None)
        assert anon.post("/v1/hash", content=b"x" * 10, headers=headers).status_code == 415
        with transaction(session_factory(engine)) as session:
            revoke_key(session, key.key_id)
        time.sleep(AUTH_CACHE_SECONDS + 0.2)
        _problem(anon.post("/v1/hash", content=b"x" * 10, headers=headers), 401)
    finally:
        engine.dispose()
