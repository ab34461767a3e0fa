"""Native matching through a real server: upload, URL, hashes; submissions, history,
actions; tenant isolation of matches. Checked against brute-force Hamming distances."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from _app_server import AppServer as Server
from _app_server import app_server_on
from tipline.demo import sample_images
from tipline.signals.hashing import HashOptions, hash_bytes, hash_path
from tipline.signals.hexbits import hamming_hex


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with app_server_on(request.param, request, tmp_path_factory.mktemp("match")) as srv:
        yield srv


def _pdq(path: str) -> str:
    result = hash_path(path, HashOptions(signals=("pdq",)))
    return result.signals[0].value


def _reencoded(path: str) -> bytes:
    """The same picture resized and saved as a JPEG again: a near-duplicate."""
    with Image.open(path) as im:
        small = im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=70)
    return out.getvalue()


@pytest.fixture(scope="module")
def seeded(server: Server) -> dict[str, str]:
    """A bank ``known`` with three sample pictures (by media upload); entry -> pdq."""
    c = server.client("curator")
    assert c.post("/v1/banks", json={"name": "known"}).status_code == 201
    out = {}
    for path in sample_images()[:3]:
        resp = c.post(f"/v1/banks/known/media?entry_id={path.stem}", content=path.read_bytes())
        assert resp.status_code == 201, resp.text
        out[path.stem] = _pdq(str(path))
    return out


def test_upload_match_near_duplicate(server: Server, seeded: dict[str, str]) -> None:
    path = sample_images()[0]
    data = _reencoded(str(path))
    resp = server.client("matcher").post("/v1/match", content=data)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["matched"] is True
    pdq_matches = [m for m in body["matches"] if m["signal_type"] == "pdq"]
    assert [m["entry_id"] for m in pdq_matches] == [path.stem]
    # Brute-force twin: the distance is the Hamming distance of the two hashes.
    query = hash_bytes(data, "q", HashOptions(signals=("pdq",))).signals[0].value
    assert pdq_matches[0]["distance"] == hamming_hex(query, seeded[path.stem])
    assert isinstance(pdq_matches[0]["distance"], int)
    # Exact bytes also match by MD5, at distance 0.
    exact = server.client("matcher").post("/v1/match", content=path.read_bytes()).json()
    assert {(m["signal_type"], m["distance"]) for m in exact["matches"]} >= {("md5", 0), ("pdq", 0)}


def test_no_match_for_unrelated_picture(server: Server, seeded: dict[str, str]) -> None:
    other = sample_images()[-1]
    body = server.client("matcher").post("/v1/match", content=other.read_bytes()).json()
    assert body["matched"] is False and body["matches"] == []


def test_match_by_hash_and_lookup(server: Server, seeded: dict[str, str]) -> None:
    c = server.client("matcher")
    stem, pdq = next(iter(seeded.items()))
    flipped = pdq[:-1] + ("0" if pdq[-1] != "0" else "1")
    dist = hamming_hex(pdq, flipped)
    got = c.get("/v1/lookup", params={"signal_type": "pdq", "signal": flipped}).json()
    assert [(m["entry_id"], m["distance"]) for m in got] == [(stem, dist)]
    resp = c.post("/v1/match/signals", json={"signals": [{"type": "pdq", "value": flipped}]})
    assert resp.json()["matches"][0]["entry_id"] == stem
    r = c.get("/v1/lookup", params={"signal_type": "pdq", "signal": "xyz"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem")
    assert c.get("/v1/lookup", params={"signal_type": "nope", "signal": "ab"}).status_code == 400


def test_submission_with_match_records_history_and_actions(
    server: Server, seeded: dict[str, str]
) -> None:
    admin = server.client("admin")
    assert (
        admin.post("/v1/rules", json={"action": "enqueue_review", "bank": "known"}).status_code
        == 201
    )
    path = sample_images()[1]
    resp = server.client("matcher").post(
        "/v1/match",
        params={
            "content_id": "upload-77",
            "uploader_account": "acct-5",
            "upload_ip": "198.51.100.7",
            "uploaded_at": "2026-03-01T10:00:00+00:00",
        },
        content=path.read_bytes(),
    )
    assert resp.status_code == 200, resp.text
    sid = resp.json()["submission_id"]
    assert sid
    r = server.client("reviewer")
    sub = r.get(f"/v1/submissions/{sid}").json()
    assert sub["uploader_account"] == "acct-5" and sub["upload_ip"] == "198.51.100.7"
    assert {s["type"] for s in sub["signals"]} >= {"pdq", "md5"}
    history = r.get("/v1/matches", params={"submission_id": sid}).json()
    assert {h["entry_id"] for h in history} == {path.stem}
    queue = r.get("/v1/review").json()
    assert any(item["content_id"] == "upload-77" and item["bank"] == "known" for item in queue)
    item = next(i for i in queue if i["content_id"] == "upload-77")
    assert (
        r.post(f"/v1/review/{item['id']}/decision", json={"decision": "confirmed"}).status_code
        == 204
    )
    again = r.post(f"/v1/review/{item['id']}/decision", json={"decision": "confirmed"})
    assert again.status_code == 409


def test_tenant_matches_are_isolated(server: Server, seeded: dict[str, str]) -> None:
    a = server.client("a_curator")
    assert a.post("/v1/banks", json={"name": "a-private"}).status_code == 201
    path = sample_images()[4]
    assert (
        a.post("/v1/banks/a-private/media?entry_id=p", content=path.read_bytes()).status_code == 201
    )
    data = path.read_bytes()
    seen_a = server.client("a_matcher").post("/v1/match", content=data).json()
    assert {m["bank"] for m in seen_a["matches"]} == {"a-private"}
    seen_b = server.client("b_matcher").post("/v1/match", content=data).json()
    assert seen_b["matches"] == []
    # Tenant b's allow bank must not suppress tenant a's matches.
    b = server.client("b_curator")
    assert b.post("/v1/banks", json={"name": "b-allow", "allow": True}).status_code == 201
    assert b.post("/v1/banks/b-allow/media?entry_id=x", content=data).status_code == 201
    again = server.client("a_matcher").post("/v1/match", content=data).json()
    assert again["matched"] is True
    assert all(m["suppressed_by"] is None for m in again["matches"])
    # ...nor a key without a tenant's (an allow bank only suppresses its own tenant's
    # matches: tenant a's bank's match is not tenant b's)...
    own = server.client("admin").post("/v1/match", content=data).json()
    assert own["matched"] is True
    # ...while tenant b's own view of a match in its own bank is suppressed.
    assert b.post("/v1/banks", json={"name": "b-private"}).status_code == 201
    assert b.post("/v1/banks/b-private/media?entry_id=p", content=data).status_code == 201
    seen = server.client("b_matcher").post("/v1/match", content=data).json()
    assert seen["matched"] is False
    assert {m["bank"] for m in seen["matches"]} == {"b-private"}
    for admin_view in (server.client("admin").post("/v1/match", content=data).json(),):
        by_bank = {m["bank"]: m["suppressed_by"] for m in admin_view["matches"]}
        assert by_bank == {"a-private": None, "b-private": "b-allow/x"}
    history_b = server.client("b_reviewer").get("/v1/matches").json()
    assert all(h["bank"] != "a-private" for h in history_b)


@pytest.fixture(scope="module")
def media_url() -> Iterator[str]:
    data = sample_images()[2].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/x.jpg"
    srv.shutdown()
    srv.server_close()


def test_match_by_url(server: Server, seeded: dict[str, str], media_url: str) -> None:
    body = server.client("matcher").get("/v1/match", params={"url": media_url}).json()
    assert sample_images()[2].stem in {m["entry_id"] for m in body["matches"]}


def test_disable_and_delete_take_effect(server: Server, seeded: dict[str, str]) -> None:
    c = server.client("curator")
    assert c.post("/v1/banks", json={"name": "temp"}).status_code == 201
    pdq = "a" * 64
    assert (
        c.post(
            "/v1/banks/temp/entries", json={"signals": [f"pdq:{pdq}"], "entry_id": "t"}
        ).status_code
        == 201
    )
    m = server.client("matcher")

    def banks_for() -> set[str]:
        got = m.get("/v1/lookup", params={"signal_type": "pdq", "signal": pdq}).json()
        return {x["bank"] for x in got}

    assert banks_for() == {"temp"}
    c.patch("/v1/banks/temp/entries/t", json={"disabled": True, "reason": "test"})
    assert banks_for() == set()
    c.patch("/v1/banks/temp/entries/t", json={"disabled": False})
    assert banks_for() == {"temp"}
    assert c.delete("/v1/banks/temp").status_code == 204
    assert banks_for() == set()
    assert c.get("/v1/banks/temp").status_code == 404


def test_match_needs_match_role(server: Server) -> None:
    r = server.client("hasher").post("/v1/match", content=sample_images()[0].read_bytes())
    assert r.status_code == 403
    assert isinstance(httpx.codes(r.status_code), int)


def _padded(path: str) -> bytes:
    """The picture with a 12% white border all round: plain PDQ misses it."""
    from PIL import ImageOps

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    ImageOps.expand(rgb, border=max(rgb.size) * 12 // 100, fill=(255, 255, 255)).save(
        out, format="PNG"
    )
    return out.getvalue()


def test_normalised_match_by_default_with_switches_and_history(
    server: Server, seeded: dict[str, str]
) -> None:
    path = sample_images()[2]
    data = _padded(str(path))
    m = server.client("matcher")
    plain = m.post("/v1/match", params={"normalize": "false"}, content=data).json()
    assert [x for x in plain["matches"] if x["signal_type"] == "pdq"] == []
    assert all(s.get("variant") is None for s in plain["signals"])

    resp = m.post("/v1/match", params={"content_id": "padded-1"}, content=data)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    pdq = [x for x in body["matches"] if x["signal_type"] == "pdq"]
    assert [(x["entry_id"], x["variant"]) for x in pdq] == [(path.stem, "trim")]
    trim = next(s["value"] for s in body["signals"] if s.get("variant") == "trim")
    assert pdq[0]["query_value"] == trim
    assert pdq[0]["distance"] == hamming_hex(trim, seeded[path.stem]) <= 31
    history = server.client("reviewer").get(
        "/v1/matches", params={"submission_id": body["submission_id"]}
    )
    assert [(h["entry_id"], h["variant"]) for h in history.json()] == [(path.stem, "trim")]

    curator = server.client("curator")
    off = curator.patch("/v1/banks/known", json={"normalize": False})
    assert off.status_code == 200 and off.json()["normalize"] is False, off.text
    try:
        assert m.post("/v1/match", content=data).json()["matches"] == []
        # the picture as given still matches a bank with the switch off
        exact = m.post("/v1/match", content=path.read_bytes()).json()
        assert {x["signal_type"] for x in exact["matches"]} >= {"pdq", "md5"}
    finally:
        on = curator.patch("/v1/banks/known", json={"normalize": True})
        assert on.status_code == 200 and on.json()["normalize"] is True
    again = m.post("/v1/match", content=data).json()
    assert [x["variant"] for x in again["matches"]] == ["trim"]


def test_upload_match_crop_through_the_bank_side_region_tier(
    server: Server, seeded: dict[str, str]
) -> None:
    """Entries added by media upload keep region descriptors: a 10% corner crop matches
    with tier "region", the region named, the distance the brute-force one to the
    region's hash."""
    path = sample_images()[0]
    with Image.open(path) as im:
        img = im.convert("RGB")
    w, h = img.size
    out = io.BytesIO()
    img.crop((w // 10, h // 10, w, h)).save(out, format="JPEG", quality=85)
    query = hash_bytes(out.getvalue(), "q", HashOptions(signals=("pdq",))).signals[0].value
    assert hamming_hex(query, seeded[path.stem]) > 31  # plain PDQ misses it
    resp = server.client("matcher").post("/v1/match", content=out.getvalue())
    assert resp.status_code == 200, resp.text
    pdq = [m for m in resp.json()["matches"] if m["signal_type"] == "pdq"]
    assert [(m["entry_id"], m["tier"]) for m in pdq] == [(path.stem, "region")]
    assert pdq[0]["region"].startswith("crop:")
    assert pdq[0]["distance"] == hamming_hex(pdq[0]["query_value"], pdq[0]["matched_value"])
    assert pdq[0]["distance"] <= 31


def test_region_matching_is_switched_per_bank_through_the_api(
    server: Server, seeded: dict[str, str]
) -> None:
    path = sample_images()[0]
    with Image.open(path) as im:
        img = im.convert("RGB")
    w, h = img.size
    out = io.BytesIO()
    img.crop((0, 0, w - w // 10, h - h // 10)).save(out, format="JPEG", quality=85)
    curator, matcher = server.client("curator"), server.client("matcher")
    assert curator.get("/v1/banks/known").json()["region_matching"] is True
    try:
        off = curator.patch("/v1/banks/known", json={"region_matching": False})
        assert off.status_code == 200 and off.json()["region_matching"] is False
        body = matcher.post("/v1/match", content=out.getvalue()).json()
        assert [m for m in body["matches"] if m["signal_type"] == "pdq"] == []
    finally:
        on = curator.patch("/v1/banks/known", json={"region_matching": True})
        assert on.json()["region_matching"] is True
    body = matcher.post("/v1/match", content=out.getvalue()).json()
    assert [(m["entry_id"], m["tier"]) for m in body["matches"] if m["signal_type"] == "pdq"] == [
        (path.stem, "region")
    ]
