"""HMA 2.x-compatible endpoints: same paths, parameters and response shapes as
OpenMediaMatch, against a real server. Hashes are compared with python-threatexchange
(what HMA itself uses) when it is installed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from _api_server import Server, server_on
from _drift_image import drift_jpeg
from tipline.demo import sample_images
from tipline.signals.hashing import HashOptions, hash_path

BANK = "HMA_TEST_BANK"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with server_on(request.param, request, tmp_path_factory.mktemp("hma")) as srv:
        yield srv


@pytest.fixture(scope="module")
def media_url() -> Iterator[str]:
    data = sample_images()[3].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            kind = "text/plain" if self.path.endswith(".txt") else "image/jpeg"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/media.jpg"
    srv.shutdown()
    srv.server_close()


def _expected(index: int) -> dict[str, str]:
    result = hash_path(str(sample_images()[index]), HashOptions(signals=("pdq", "md5")))
    return {s.type: s.value for s in result.signals}


def test_status(server: Server) -> None:
    resp = server.client(None).get("/status")
    assert resp.status_code == 200 and resp.text == "I-AM-ALIVE"


def test_hashing_shapes(server: Server, media_url: str) -> None:
    c = server.client("hasher")
    path = sample_images()[0]
    resp = c.post("/h/hash", files={"photo": (path.name, path.read_bytes(), "image/jpeg")})
    assert resp.status_code == 200, resp.text
    assert resp.json() == _expected(0)
    only = c.post(
        "/h/hash?types=pdq", files={"photo": (path.name, path.read_bytes(), "image/jpeg")}
    )
    assert only.json() == {"pdq": _expected(0)["pdq"]}
    by_url = c.get("/h/hash", params={"url": media_url})
    assert by_url.status_code == 200, by_url.text
    assert by_url.json() == _expected(3)
    assert c.get("/h/hash").status_code == 400
    bad_type = c.get("/h/hash", params={"url": media_url[:-4] + ".txt"})
    assert bad_type.status_code == 400 and "content_type" in bad_type.json()["message"]
    forced = c.get("/h/hash", params={"url": media_url[:-4] + ".txt", "content_type": "photo"})
    assert forced.json() == _expected(3)
    two = c.post(
        "/h/hash",
        files=[("photo", ("a.jpg", b"1", "image/jpeg")), ("photo", ("b.jpg", b"2", "image/jpeg"))],
    )
    assert two.status_code == 400 and two.json()["message"] == "Only one file allowed per request"
    assert c.post("/h/hash", files={"audio": ("a", b"x", "audio/mp3")}).status_code == 400
    assert c.post("/h/hash", data={"x": "1"}).status_code == 400


def test_pdq_agrees_with_threatexchange(server: Server) -> None:
    signal = pytest.importorskip("threatexchange.signal_type.pdq.signal")
    for path in sample_images():
        resp = server.client("hasher").post(
            "/h/hash", files={"photo": (path.name, path.read_bytes(), "image/jpeg")}
        )
        assert resp.json()["pdq"] == signal.PdqSignal.hash_from_file(path)


def test_curation_and_matching_shapes(server: Server, media_url: str) -> None:
    c = server.client("curator")
    created = c.post("/c/banks", json={"name": BANK})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": BANK, "matching_enabled_ratio": 1.0}
    assert {"name": BANK, "matching_enabled_ratio": 1.0} in c.get("/c/banks").json()
    assert c.get(f"/c/bank/{BANK}").json() == {"name": BANK, "matching_enabled_ratio": 1.0}
    assert c.get("/c/bank/NO_SUCH_BANK").status_code == 404

    pdq0 = _expected(0)["pdq"]
    added = c.post(f"/c/bank/{BANK}/signal", json={"pdq": pdq0})
    assert added.status_code == 200, added.text
    body = added.json()
    assert isinstance(body["id"], int) and body["signals"] == {"pdq": pdq0}
    sig_id = body["id"]
    assert c.post(f"/c/bank/{BANK}/signal", json={"pdq": "nothex"}).status_code == 400
    assert c.post(f"/c/bank/{BANK}/signal", json={"nope": "ab"}).status_code == 400
    assert c.post(f"/c/bank/{BANK}/signal", json={}).status_code == 400

    path1 = sample_images()[1]
    upload = c.post(
        f"/c/bank/{BANK}/content", files={"photo": (path1.name, path1.read_bytes(), "image/jpeg")}
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["signals"] == _expected(1)
    content_id = upload.json()["id"]
    by_url = c.post(f"/c/bank/{BANK}/content", params={"url": media_url})
    assert by_url.status_code == 200, by_url.text
    assert c.post(f"/c/bank/{BANK}/content").status_code == 400

    m = server.client("matcher")
    raw = m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": pdq0})
    assert raw.json() == {"matches": [sig_id]}
    with_dist = m.get(
        "/m/raw_lookup",
        params={"signal_type": "pdq", "signal": pdq0, "include_distance": "true"},
    )
    assert with_dist.json() == {"matches": [{"content_id": sig_id, "distance": "0"}]}
    assert m.get("/m/raw_lookup", params={"signal_type": "pdq"}).status_code == 400
    assert m.get("/m/raw_lookup", params={"signal_type": "nah", "signal": "00"}).status_code == 400
    assert m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": "zz"}).status_code == 400
    bad_hash = m.get("/m/lookup", params={"signal_type": "pdq", "signal": "zz"})
    assert bad_hash.status_code == 400
    assert bad_hash.json()["detail"].startswith("invalid signal: ")
    assert "signal type" not in bad_hash.json()["detail"]
    bad_type = m.get("/m/lookup", params={"signal_type": "nah", "signal": "00"})
    assert bad_type.json()["detail"] == "No such SignalType 'nah'"

    assert m.get("/m/lookup", params={"signal_type": "pdq", "signal": pdq0}).json() == [BANK]
    posted = m.post("/m/lookup", files={"photo": (path1.name, path1.read_bytes(), "image/jpeg")})
    assert posted.json() == {"pdq": [BANK], "md5": [BANK]}
    via_url = m.get("/m/lookup", params={"url": media_url})
    assert via_url.json() == {"pdq": [BANK], "md5": [BANK]}
    unknown = m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": "0" * 64})
    assert unknown.json() == {"matches": []}

    status = m.get("/m/index/status").json()
    assert status["pdq"]["present"] is True and status["pdq"]["size"] >= 2
    assert set(status["pdq"]) == {"present", "built_to", "size"}
    assert m.get("/m/index/status", params={"signal_type": "nah"}).status_code == 400

    off = c.put(f"/c/bank/{BANK}", json={"enabled": False})
    assert off.json() == {"name": BANK, "matching_enabled_ratio": 0.0}
    assert m.get("/m/lookup", params={"signal_type": "pdq", "signal": pdq0}).json() == []
    on = c.put(f"/c/bank/{BANK}", json={"enabled_ratio": 1.0})
    assert on.json()["matching_enabled_ratio"] == 1.0
    assert c.put(f"/c/bank/{BANK}", json={"enabled_ratio": 0.5}).status_code == 400

    assert c.delete(f"/c/bank/{BANK}").json() == {"message": "Done"}
    assert c.delete(f"/c/bank/{BANK}").json() == {"message": "Done"}
    assert m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": pdq0}).json() == {
        "matches": []
    }
    assert content_id != sig_id


def test_bank_content_stores_the_reference_pdq(server: Server) -> None:
    data, reference, fast = drift_jpeg()
    c = server.client("curator")
    assert c.post("/c/banks", json={"name": "HMA_REFERENCE_PDQ"}).status_code == 201
    files = {"photo": ("drift.jpg", data, "image/jpeg")}
    added = c.post("/c/bank/HMA_REFERENCE_PDQ/content", files=files)
    assert added.status_code == 200, added.text
    assert added.json()["signals"]["pdq"] == reference != fast
    # Hashing for a query keeps the fast decode.
    assert server.client("hasher").post("/h/hash", files=files).json()["pdq"] == fast


def test_hma_routes_need_a_key(server: Server) -> None:
    anon = server.client(None)
    resp = anon.get("/c/banks")
    assert resp.status_code == 401
    assert resp.json()["message"]
    assert server.client("hasher").get("/m/raw_lookup?signal_type=pdq&signal=00").status_code == 403


def test_hma_tenants_are_isolated(server: Server) -> None:
    a, b = server.client("a_curator"), server.client("b_curator")
    assert a.post("/c/banks", json={"name": "A_ONLY"}).status_code == 201
    pdq = "c" * 64
    assert a.post("/c/bank/A_ONLY/signal", json={"pdq": pdq}).status_code == 200
    assert "A_ONLY" not in [x["name"] for x in b.get("/c/banks").json()]
    assert b.get("/c/bank/A_ONLY").status_code == 404
    assert b.post("/c/bank/A_ONLY/signal", json={"pdq": pdq}).status_code == 404
    params = {"signal_type": "pdq", "signal": pdq}
    assert server.client("b_matcher").get("/m/lookup", params=params).json() == []
    assert server.client("b_matcher").get("/m/raw_lookup", params=params).json() == {"matches": []}
    assert server.client("a_matcher").get("/m/lookup", params=params).json() == ["A_ONLY"]
