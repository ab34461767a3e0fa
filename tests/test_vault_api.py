"""``/v1/vault`` on a real ``tipline serve``: roles, tenants, download, holds and
retention, and damaged items answered with a problem document, never with bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from _app_server import AppServer as Server
from _app_server import app_server
from tipline.config import Settings
from tipline.services import audit
from tipline.services import vault as v
from tipline.services.auth import Principal, Role
from tipline.services.vault.keys import MasterKey, write_key_file
from tipline.store.db import make_engine, session_factory, transaction


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    write_key_file(path, MasterKey.generate())
    return path


@pytest.fixture
def server(tmp_path: Path, key_file: Path) -> Iterator[Server]:
    """The API in this process (tests/_app_server.py): what is tested is the routes, not
    the ``tipline serve`` process (a process start costs seconds of CPU per test)."""
    with app_server(
        f"sqlite:///{tmp_path / 'tipline.db'}",
        tmp_path,
        vault_master_key_file=key_file,
        vault_chunk_bytes=4096,
    ) as srv:
        yield srv


def _store(
    server: Server,
    key_file: Path,
    data: bytes,
    tenant: str | None,
    *,
    stored_at: datetime | None = None,
) -> str:
    settings = Settings(
        data_dir=server.data_dir,
        database_url=server.db_url,
        vault_master_key_file=key_file,
        vault_chunk_bytes=4096,
    )
    engine = make_engine(settings=settings)
    clock = (lambda: stored_at) if stored_at is not None else None
    try:
        with transaction(session_factory(engine)) as session:
            info = v.store(
                session,
                v.Vault.from_settings(settings, clock=clock),
                data,
                kind=v.EvidenceKind.MEDIA,
                actor=Principal("m", Role.MATCHER, tenant),
                submission_id="SUB-1",
            )
            return info.id
    finally:
        engine.dispose()


def test_vault_routes(server: Server, key_file: Path) -> None:
    data = os.urandom(20_000)
    item = _store(server, key_file, data, "tenant-a")
    reviewer = server.client("a_reviewer")
    listed = reviewer.get("/v1/vault/items", params={"submission_id": "SUB-1"})
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()] == [item]
    shown = reviewer.get(f"/v1/vault/items/{item}").json()
    assert shown["sha256"] == hashlib.sha256(data).hexdigest() and shown["held"] is False
    got = reviewer.get(f"/v1/vault/items/{item}/content")
    assert got.status_code == 200 and got.content == data
    assert got.headers["x-content-sha256"] == shown["sha256"]
    assert got.headers["content-type"] == "application/octet-stream"
    # roles and tenants
    assert server.client("a_matcher").get(f"/v1/vault/items/{item}").status_code == 403
    assert server.client("b_reviewer").get(f"/v1/vault/items/{item}/content").status_code == 404
    assert server.client("b_reviewer").get("/v1/vault/items").json() == []
    assert server.client(None).get("/v1/vault/items").status_code == 401
    assert reviewer.post(f"/v1/vault/items/{item}/holds", json={"reason": "x"}).status_code == 403
    # holds and retention
    admin = server.client("a_admin")
    hold = admin.post(f"/v1/vault/items/{item}/holds", json={"reason": "case 7"})
    assert hold.status_code == 201, hold.text
    assert admin.get(f"/v1/vault/items/{item}").json()["held"] is True
    released = admin.post(f"/v1/vault/items/{item}/holds/{hold.json()['id']}/release")
    assert released.status_code == 200 and released.json()[0]["active"] is False
    again = admin.post(f"/v1/vault/items/{item}/holds/{hold.json()['id']}/release")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    later = admin.post(
        f"/v1/vault/items/{item}/retention", json={"retain_until": "2031-01-01T00:00:00Z"}
    )
    assert later.status_code == 200 and later.json()["retain_until"].startswith("2031-01-01")
    earlier = admin.post(
        f"/v1/vault/items/{item}/retention", json={"retain_until": "2030-01-01T00:00:00Z"}
    )
    assert earlier.status_code == 409 and "only be extended" in earlier.json()["detail"]
    naive = admin.post(
        f"/v1/vault/items/{item}/retention", json={"retain_until": "2032-01-01T00:00:00"}
    )
    assert naive.status_code == 422


def test_damaged_item_is_refused_or_aborted(server: Server, key_file: Path) -> None:
    front = _store(server, key_file, os.urandom(3 * 4096), None)
    back = _store(server, key_file, os.urandom(3 * 4096), None)
    admin = server.client("admin")
    vault_dir = server.data_dir / "vault"
    (front_file,) = vault_dir.glob(f"*/{front}.tpv")
    (back_file,) = vault_dir.glob(f"*/{back}.tpv")
    blob = bytearray(front_file.read_bytes())
    blob[70] ^= 1  # first chunk: refused before the response starts
    front_file.write_bytes(bytes(blob))
    refused = admin.get(f"/v1/vault/items/{front}/content")
    assert refused.status_code == 500
    assert refused.json()["type"] == "/problems/evidence-corrupt"
    assert refused.json()["detail"] == "internal error"  # 5xx bodies carry no internals
    blob = bytearray(back_file.read_bytes())
    blob[-3] ^= 1  # last chunk: the response is cut short, never completed
    back_file.write_bytes(bytes(blob))
    try:
        response = admin.get(f"/v1/vault/items/{back}/content")
    except httpx.HTTPError:
        pass  # the connection dropped mid-body: the expected outcome
    else:  # a lenient client still sees fewer bytes than announced
        assert len(response.content) < int(response.headers["content-length"])
    engine = make_engine(server.db_url)
    try:
        with session_factory(engine)() as session:
            failures = [
                r.target_id
                for r in audit.recent(session, limit=50)
                if r.action == "vault.integrity_failure"
            ]
    finally:
        engine.dispose()
    assert failures == [front, back]


def test_match_sent_to_review_keeps_the_upload(server: Server) -> None:
    from tipline.demo import sample_images

    known, other = sample_images()[0], sample_images()[-1]
    curator = server.client("a_curator")
    assert curator.post("/v1/banks", json={"name": "kept"}).status_code == 201
    added = curator.post("/v1/banks/kept/media?entry_id=k1", content=known.read_bytes())
    assert added.status_code == 201, added.text
    rule = server.client("a_admin").post(
        "/v1/rules", json={"action": "enqueue_review", "bank": "kept"}
    )
    assert rule.status_code == 201, rule.text
    matcher = server.client("a_matcher")
    upload = known.read_bytes()
    sent = matcher.post("/v1/match", params={"content_id": "c-1"}, content=upload)
    assert sent.status_code == 200 and sent.json()["matched"], sent.text
    submission = sent.json()["submission_id"]
    unrelated = matcher.post("/v1/match", params={"content_id": "c-2"}, content=other.read_bytes())
    assert unrelated.status_code == 200 and not unrelated.json()["matched"]
    reviewer = server.client("a_reviewer")
    items = reviewer.get("/v1/vault/items").json()
    assert [(i["submission_id"], i["content_id"], i["kind"]) for i in items] == [
        (submission, "c-1", "media")
    ]
    queue = reviewer.get("/v1/review").json()
    assert items[0]["review_item_id"] == next(q["id"] for q in queue if q["content_id"] == "c-1")
    assert items[0]["tenant"] == "tenant-a" and items[0]["size"] == len(upload)
    got = reviewer.get(f"/v1/vault/items/{items[0]['id']}/content")
    assert got.status_code == 200 and got.content == upload
    # another tenant sees none of it
    assert server.client("b_reviewer").get("/v1/vault/items").json() == []


def _audit_actions(server: Server) -> list[str]:
    engine = make_engine(server.db_url)
    try:
        with session_factory(engine)() as session:
            return [r.action for r in audit.recent(session, limit=200)]
    finally:
        engine.dispose()


def test_verify_and_purge_routes(server: Server, key_file: Path) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)  # kept until 2020-12-31: expired
    a_old = _store(server, key_file, os.urandom(9000), "tenant-a", stored_at=long_ago)
    a_held = _store(server, key_file, os.urandom(9000), "tenant-a", stored_at=long_ago)
    a_new = _store(server, key_file, os.urandom(9000), "tenant-a")
    b_old = _store(server, key_file, os.urandom(9000), "tenant-b", stored_at=long_ago)
    a_admin, b_admin = server.client("a_admin"), server.client("b_admin")
    assert server.client("a_reviewer").post("/v1/vault/verify", json={}).status_code == 403
    assert server.client("a_reviewer").post("/v1/vault/purge").status_code == 403
    assert server.client(None).post("/v1/vault/purge").status_code == 401

    # verify: a tenant's key checks its own items, page by page
    first = a_admin.post("/v1/vault/verify", json={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["ok"] is True and page["checked"] == 2 and page["next_after"] is not None
    rest = a_admin.post("/v1/vault/verify", json={"after": page["next_after"]}).json()
    assert rest["checked"] == 1 and rest["next_after"] is None
    assert a_admin.post("/v1/vault/verify", json={"item_ids": [b_old]}).status_code == 400
    assert a_admin.post("/v1/vault/verify", json={"limit": 0}).status_code == 422
    # a flipped byte is found, named, and no content is returned
    (damaged,) = (server.data_dir / "vault").glob(f"*/{a_new}.tpv")
    blob = bytearray(damaged.read_bytes())
    blob[100] ^= 1
    damaged.write_bytes(bytes(blob))
    found = a_admin.post("/v1/vault/verify", json={}).json()
    assert found["ok"] is False and found["checked"] == 3
    assert [f["item_id"] for f in found["failures"]] == [a_new]
    # a key of no tenant checks everything and also looks for stray files
    everything = server.client("admin").post("/v1/vault/verify", json={}).json()
    assert everything["checked"] == 4 and len(everything["failures"]) == 1

    # purge: expired items without a hold, of the key's tenant only
    hold = a_admin.post(f"/v1/vault/items/{a_held}/holds", json={"reason": "case 9"})
    assert hold.status_code == 201
    purged = a_admin.post("/v1/vault/purge")
    assert purged.status_code == 200, purged.text
    assert purged.json() == {"purged": [a_old], "held": 1, "files_removed": 0}
    assert a_admin.get(f"/v1/vault/items/{a_old}/content").status_code == 409
    assert b_admin.get(f"/v1/vault/items/{b_old}").json()["purged_at"] is None
    assert b_admin.post("/v1/vault/purge").json()["purged"] == [b_old]
    assert a_admin.get(f"/v1/vault/items/{a_held}").json()["purged_at"] is None
    actions = _audit_actions(server)
    assert actions.count("vault.purge") == 2 and actions.count("vault.verify") == 4
