"""Security and fault review (issue #9 section 3) against a real ``tipline serve``
process on SQLite and PostgreSQL: tenant scoping of allow banks, bank names and audit
records, limits on submission metadata and request bodies, input validation."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from _app_server import AppServer as Server
from _app_server import app_server_on
from tipline.store.audit import AuditRecord
from tipline.store.db import make_engine, session_factory

PROBLEM = "application/problem+json"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with app_server_on(request.param, request, tmp_path_factory.mktemp("sec")) as srv:
        yield srv


def _problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    return dict(resp.json())


def _audit_rows(server: Server, target_id: str) -> list[AuditRecord]:
    engine = make_engine(server.db_url)
    try:
        with session_factory(engine)() as session:
            query = select(AuditRecord).where(AuditRecord.target_id == target_id)
            return list(session.execute(query.order_by(AuditRecord.seq)).scalars())
    finally:
        engine.dispose()


# -- audit records carry the tenant ---------------------------------------------------------


def test_bank_writes_by_tenant_keys_are_audited_with_the_tenant(server: Server) -> None:
    c = server.client("a_curator")
    assert c.post("/v1/banks", json={"name": "sec-audit-a"}).status_code == 201
    entry = c.post("/v1/banks/sec-audit-a/entries", json={"signals": ["pdq:" + "e" * 64]})
    assert entry.status_code == 201, entry.text
    eid = entry.json()["entry_id"]
    patched = c.patch(
        f"/v1/banks/sec-audit-a/entries/{eid}", json={"disabled": True, "reason": "test"}
    )
    assert patched.status_code == 200, patched.text
    assert c.patch("/v1/banks/sec-audit-a", json={"enabled": False}).status_code == 200
    hma = server.client("a_curator").post("/c/bank/sec-audit-a/signal", json={"md5": "1" * 32})
    assert hma.status_code == 200, hma.text
    bank_rows = _audit_rows(server, "sec-audit-a")
    entry_rows = _audit_rows(server, f"sec-audit-a/{eid}")
    actions = {(r.action, r.tenant) for r in bank_rows + entry_rows}
    assert ("bank.create", "tenant-a") in actions
    assert ("bank.disable", "tenant-a") in actions
    assert ("entry.add", "tenant-a") in actions
    assert ("entry.disable", "tenant-a") in actions
    assert all(r.tenant == "tenant-a" for r in bank_rows + entry_rows), actions
    # an admin without a tenant writing into the tenant's bank: the record is the tenant's
    admin = server.client("admin")
    added = admin.post("/v1/banks/sec-audit-a/entries", json={"signals": ["pdq:" + "d" * 64]})
    assert added.status_code == 201
    rows = _audit_rows(server, f"sec-audit-a/{added.json()['entry_id']}")
    assert [(r.action, r.tenant) for r in rows] == [("entry.add", "tenant-a")]


# -- input validation: bank names, thresholds, rules ----------------------------------------


@pytest.mark.parametrize("name", [".", "..", " .. "])
def test_dot_bank_names_are_refused(server: Server, name: str) -> None:
    """``.`` and ``..`` cannot be addressed in a URL path (clients normalise them away)."""
    _problem(server.client("curator").post("/v1/banks", json={"name": name}), 400)
    _problem(server.client("curator").post("/c/banks", json={"name": name}), 400)
    names = [b["name"] for b in server.client("admin").get("/v1/banks").json()]
    assert name.strip() not in names


@pytest.mark.parametrize("value", [True, False, 1.5, "3"])
def test_thresholds_must_be_integers(server: Server, value: object) -> None:
    c = server.client("curator")
    body = {"name": "sec-thr", "thresholds": {"pdq": value}}
    assert c.post("/v1/banks", json=body).status_code in (400, 422)
    assert c.get("/v1/banks/sec-thr").status_code == 404
    assert c.post("/v1/banks", json={"name": "sec-thr2"}).status_code in (201, 409)
    patched = c.patch("/v1/banks/sec-thr2", json={"thresholds": {"pdq": value}})
    assert patched.status_code in (400, 422), patched.text
    assert c.get("/v1/banks/sec-thr2").json()["thresholds"] == {}


def test_rules_may_only_name_banks_the_key_can_see(server: Server) -> None:
    assert (
        server.client("b_curator").post("/v1/banks", json={"name": "sec-rule-b"}).status_code == 201
    )
    assert (
        server.client("curator").post("/v1/banks", json={"name": "sec-rule-shared"}).status_code
        == 201
    )
    a = server.client("a_admin")
    for bank in ("sec-rule-b", "sec-rule-missing"):
        body = _problem(a.post("/v1/rules", json={"action": "enqueue_review", "bank": bank}), 404)
        assert "tenant-b" not in json.dumps(body)
    assert all(r["bank"] != "sec-rule-b" for r in a.get("/v1/rules").json())
    ok = a.post("/v1/rules", json={"action": "enqueue_review", "bank": "sec-rule-shared"})
    assert ok.status_code == 201, ok.text
    own = server.client("b_admin").post(
        "/v1/rules", json={"action": "enqueue_review", "bank": "sec-rule-b"}
    )
    assert own.status_code == 201, own.text


# -- limits on stored free-form input -------------------------------------------------------


def _nested(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        doc = {"k": doc}
    return doc


def _submission_count(server: Server, key: str) -> int:
    resp = server.client(key).get("/v1/submissions", params={"limit": 1000})
    assert resp.status_code == 200, resp.text
    return len(resp.json())


@pytest.mark.parametrize(
    "metadata",
    [_nested(256), _nested(40), {"blob": "x" * (1024 * 1024)}, {"many": list(range(200_000))}],
    ids=["depth256", "depth40", "1MB", "long-list"],
)
def test_oversized_metadata_is_refused_before_storing(server: Server, metadata: object) -> None:
    """Deep or huge metadata: 4xx and nothing stored (256 levels used to commit the row
    and then break ``GET /v1/submissions`` for the tenant on every call)."""
    before = _submission_count(server, "a_reviewer")
    sent = server.client("a_matcher").post(
        "/v1/submissions", json={"content_id": "sec-deep", "metadata": metadata}
    )
    assert 400 <= sent.status_code < 500, sent.text[:500]
    matched = server.client("a_matcher").post(
        "/v1/match/signals",
        json={
            "signals": [{"type": "pdq", "value": "0" * 64}],
            "submission": {"content_id": "sec-deep", "metadata": metadata},
        },
    )
    assert 400 <= matched.status_code < 500, matched.text[:500]
    assert _submission_count(server, "a_reviewer") == before


def test_reasonable_metadata_round_trips(server: Server) -> None:
    metadata = {"nested": _nested(10), "text": "ü" * 1000, "list": list(range(100))}
    sent = server.client("a_matcher").post(
        "/v1/submissions", json={"content_id": "sec-ok", "metadata": metadata}
    )
    assert sent.status_code == 201, sent.text
    got = server.client("a_reviewer").get(f"/v1/submissions/{sent.json()['id']}")
    assert got.status_code == 200 and got.json()["metadata"] == metadata


def test_entry_labels_are_bounded(server: Server) -> None:
    c = server.client("curator")
    assert c.post("/v1/banks", json={"name": "sec-labels"}).status_code == 201
    for labels in (["x" * 100_000], [f"l{i}" for i in range(65)], ["bad\nlabel"]):
        resp = c.post(
            "/v1/banks/sec-labels/entries", json={"signals": ["pdq:" + "c" * 64], "labels": labels}
        )
        assert resp.status_code in (400, 422), resp.text[:300]
    media = c.post(
        "/v1/banks/sec-labels/media",
        params={"labels": ",".join(["y" * 201])},
        content=b"x",
    )
    assert media.status_code in (400, 415, 422)
    assert c.get("/v1/banks/sec-labels").json()["entries"] == 0


# -- request body limit on JSON routes -----------------------------------------------------

#: the body limit the test servers run with (tests/_api_server.py)
BODY_LIMIT = 8 * 1024 * 1024


def _send_chunked(server: Server, path: str, total: int) -> tuple[int, bytes]:
    """POST a chunked JSON body of up to ``total`` bytes on a raw socket; stop sending
    when the server answers or stops reading. Returns (bytes sent, response bytes)."""
    host_port = urlsplit(server.base_url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host_port.netloc}\r\n"
        f"Authorization: Bearer {server.keys['admin']}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b'{"name": "' + b"x" * (64 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with socket.create_connection((host_port.hostname, host_port.port), timeout=60) as sock:
        sock.sendall(head)
        # A blocked send (the server stopped reading) times out after 5 s; that only
        # ends the sending, the answer is then read with the full 60 s bound.
        sock.settimeout(5)
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(piece)
        except (TimeoutError, ConnectionError):
            pass
        sock.settimeout(60)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionError:
            pass
    return sent, received


@pytest.mark.parametrize("path", ["/v1/banks", "/v1/match/signals", "/c/banks"])
def test_oversize_chunked_json_body_is_413_and_not_read_to_the_end(
    server: Server, path: str
) -> None:
    total = 256 * 1024 * 1024
    sent, received = _send_chunked(server, path, total)
    status_line = received.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, received[:300]
    # the server stopped reading at the limit: far less than the whole body went out
    # (what went beyond the limit sits in the two sockets' kernel buffers)
    assert sent < total // 2, sent


# -- allow banks suppress only their own tenant's matches -----------------------------------

H_ALLOW = "5a" * 32
H_ALLOW_NEAR = "5a" * 31 + "5b"  # 1 bit away
H_BOTH = "a5" * 32
H_BOTH_NEAR = "a5" * 31 + "a7"  # 1 bit away


def _bank(server: Server, key: str, name: str, *, allow: bool = False) -> None:
    made = server.client(key).post("/v1/banks", json={"name": name, "allow": allow})
    assert made.status_code == 201, made.text


def _entry(server: Server, key: str, bank: str, value: str, entry_id: str) -> None:
    added = server.client(key).post(
        f"/v1/banks/{bank}/entries", json={"signals": [f"pdq:{value}"], "entry_id": entry_id}
    )
    assert added.status_code == 201, added.text


def _lookup(server: Server, key: str, value: str) -> dict[str, str | None]:
    resp = server.client(key).get("/v1/lookup", params={"signal_type": "pdq", "signal": value})
    assert resp.status_code == 200, resp.text
    return {m["bank"]: m["suppressed_by"] for m in resp.json()}


def _raw_lookup(server: Server, key: str, value: str) -> list[int]:
    resp = server.client(key).get("/m/raw_lookup", params={"signal_type": "pdq", "signal": value})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["matches"])


def test_tenant_allow_bank_suppresses_only_its_tenants_matches(server: Server) -> None:
    _bank(server, "curator", "sec-shared")
    _entry(server, "curator", "sec-shared", H_ALLOW, "s1")
    _bank(server, "a_curator", "sec-a-own")
    _entry(server, "a_curator", "sec-a-own", H_ALLOW, "a1")
    _bank(server, "a_curator", "sec-a-allow", allow=True)
    _entry(server, "a_curator", "sec-a-allow", H_ALLOW_NEAR, "fp")

    # keys without a tenant: the shared bank's match stands; tenant a's own bank's
    # match is tenant a's, so tenant a's allow list applies to it
    for key in ("admin", "matcher"):
        assert _lookup(server, key, H_ALLOW) == {
            "sec-shared": None,
            "sec-a-own": "sec-a-allow/fp",
        }
    assert len(_raw_lookup(server, "admin", H_ALLOW)) == 1
    # tenant a: everything it is told about is its own business, allow list applies
    assert _lookup(server, "a_matcher", H_ALLOW) == {
        "sec-shared": "sec-a-allow/fp",
        "sec-a-own": "sec-a-allow/fp",
    }
    assert _raw_lookup(server, "a_matcher", H_ALLOW) == []
    # tenant b never sees tenant a's allow list at work
    assert _lookup(server, "b_matcher", H_ALLOW) == {"sec-shared": None}
    assert len(_raw_lookup(server, "b_matcher", H_ALLOW)) == 1
    # the CLI (no tenant) agrees with the admin key
    from tipline.config import Settings
    from tipline.services.matching import Matcher

    settings = Settings(data_dir=server.data_dir / "cli", database_url=server.db_url)
    with Matcher.open(server.db_url, settings=settings, index_dir=server.data_dir / "cli-ix") as m:
        found = {x.bank: x.suppressed_by for x in m.match_hash("pdq", H_ALLOW)}
    assert found == {"sec-shared": None, "sec-a-own": "sec-a-allow/fp"}


def test_shared_allow_bank_applies_even_when_another_allow_hit_is_closer(
    server: Server,
) -> None:
    """A shared allow bank suppresses for everyone; a closer hit in another tenant's
    allow bank must not hide it (only one allow hit per call used to be kept)."""
    _bank(server, "curator", "sec-both-shared")
    _entry(server, "curator", "sec-both-shared", H_BOTH, "s2")
    _bank(server, "curator", "sec-shared-allow", allow=True)
    _entry(server, "curator", "sec-shared-allow", H_BOTH_NEAR, "fp-shared")
    _bank(server, "b_curator", "sec-b-allow", allow=True)
    _entry(server, "b_curator", "sec-b-allow", H_BOTH, "fp-b")  # distance 0: closer
    for key in ("a_matcher", "admin"):
        assert _lookup(server, key, H_BOTH) == {"sec-both-shared": "sec-shared-allow/fp-shared"}
    assert _lookup(server, "b_matcher", H_BOTH) == {"sec-both-shared": "sec-b-allow/fp-b"}


# -- bank names: global, answered without disclosure ---------------------------------------


def test_bank_name_taken_by_another_tenant_is_not_disclosed(server: Server) -> None:
    """A tenant creating a name in use gets one answer whoever holds the name (its own
    tenant, a shared bank, another tenant): nothing says a bank exists or whose. The
    HMA route answers HMA's status for a taken name (403), worded the same way."""
    names = {
        "/v1/banks": ("sec-b-secret", "sec-a-mine", "sec-common"),
        "/c/banks": ("SEC_B_SECRET", "SEC_A_MINE", "SEC_COMMON"),
    }
    for b_name, a_name, common in names.values():
        assert (
            server.client("b_curator").post("/v1/banks", json={"name": b_name}).status_code == 201
        )
        assert (
            server.client("a_curator").post("/v1/banks", json={"name": a_name}).status_code == 201
        )
        assert server.client("curator").post("/v1/banks", json={"name": common}).status_code == 201
    a = server.client("a_curator")

    def answer(name: str, route: str) -> tuple[int, str]:
        resp = a.post(route, json={"name": name})
        body = dict(resp.json())
        text = str(body["detail"]).replace(name, "NAME")
        return resp.status_code, text

    for route, status in (("/v1/banks", 409), ("/c/banks", 403)):
        b_name, a_name, common = names[route]
        other = answer(b_name, route)
        assert other == answer(a_name, route) == answer(common, route)
        assert other[0] == status
        assert "exist" not in other[1] and "tenant" not in other[1]
    # the other tenant's bank stays invisible and untouched
    assert a.get("/v1/banks/sec-b-secret").status_code == 404
    assert server.client("b_curator").get("/v1/banks/sec-b-secret").json()["tenant"] == "tenant-b"
