"""HMA 1.1 compatibility of the /h, /m, /c and /status routes, against a real
``tipline serve`` over HTTP.

Written from OpenMediaMatch's public API blueprints and its own API tests
(hasher-matcher-actioner/src/OpenMediaMatch/tests: test_api.py, test_api_banks.py,
test_match_api.py): the same requests, the same response keys, types and status codes.
Hashes are compared with python-threatexchange (what HMA itself uses) when installed.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from starlette.requests import Request

from _app_server import AppServer as Server
from _app_server import app_server, app_server_on
from _drift_image import drift_jpeg
from tipline.config import Settings
from tipline.demo import sample_images
from tipline.signals.hashing import HashOptions, hash_bytes

#: HMA's test_compare_hashes specimens (9 bits apart)
SPECIMEN1 = "facd8bcb2a49bcebdec1985298d5fe84bcd006c187c598c720c3c087b3fdb318"
SPECIMEN2 = "facd8bcb2a49bcebdec1985228d5ae84bcd006c187c598c720c2b087b3fdb318"


def _checkerboard(cell: int) -> bytes:
    """HMA's test images: 128x128 black and white checkerboards."""
    img = Image.new("RGB", (128, 128))
    px = img.load()
    assert px is not None
    for x in range(128):
        for y in range(128):
            px[x, y] = (255, 255, 255) if (x // cell + y // cell) % 2 else (0, 0, 0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _flat() -> bytes:
    """A flat grey picture: PDQ quality 0."""
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (128, 128, 128)).save(buf, format="JPEG")
    return buf.getvalue()


#: HMA's checkerboards, and two natural pictures (tipline's fast PDQ kernel can differ
#: from pdqhash on checkerboards, whose DCT is full of exact ties; see docs/hma.md)
IMAGES: dict[str, bytes] = {
    "image1.jpg": _checkerboard(8),
    "image2.jpg": _checkerboard(16),
    "photo1.jpg": sample_images()[0].read_bytes(),
    "photo2.jpg": sample_images()[1].read_bytes(),
    "flat.jpg": _flat(),
    "note.txt": b"not media",
}


def _pdq(data: bytes, decode: str = "fast") -> str:
    from tipline.signals.decode import DecodeMode

    mode = DecodeMode.FAST if decode == "fast" else DecodeMode.EXACT
    result = hash_bytes(data, "x.jpg", HashOptions(signals=("pdq",), decode=mode))
    return next(s.value for s in result.signals if s.type == "pdq")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API in this process (tests/_app_server.py), on SQLite or a fresh PostgreSQL
    schema: what is tested is the routes, not the ``tipline serve`` process."""
    with app_server_on(request.param, request, tmp_path_factory.mktemp("hma")) as srv:
        yield srv


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """HMA's image_server fixture: the test pictures over HTTP on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            data = IMAGES.get(name)
            if data is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header(
                "Content-Type", "text/plain" if name.endswith(".txt") else "image/jpeg"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _bank(c: object, name: str) -> None:
    resp = c.post("/c/banks", json={"name": name})  # type: ignore[attr-defined]
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"matching_enabled_ratio": 1.0, "name": name}


# -- core -------------------------------------------------------------------------------------


def test_status_live_openapi_and_site_map(server: Server) -> None:
    anon = server.client(None)
    for path in ("/status", "/status/live"):
        resp = anon.get(path)
        assert resp.status_code == 200 and resp.text == "I-AM-ALIVE"
    doc = anon.get("/openapi/openapi.json")
    assert doc.status_code == 200 and doc.headers["content-type"].startswith("application/json")
    assert "/m/compare" in doc.json()["paths"]
    routes = anon.get("/site-map").json()
    assert routes == sorted(routes)
    for path in ("/m/lookup", "/m/compare", "/c/bank/<bank_name>/content/<content_id>"):
        assert path in routes


# -- banks (test_api_banks.py) -----------------------------------------------------------------


def test_banks_create_update_delete(server: Server) -> None:
    c = server.client("curator")
    assert c.post("/c/banks", json={"name": "01_TEST_BANK"}).status_code == 400
    assert c.post("/c/banks", json={"name": "my_test_bank"}).status_code == 400
    assert c.post("/c/banks", json={}).status_code == 422
    _bank(c, "MY_TEST_BANK_01")
    assert {"name": "MY_TEST_BANK_01", "matching_enabled_ratio": 1.0} in c.get("/c/banks").json()
    again = c.post("/c/banks", json={"name": "MY_TEST_BANK_01"})
    assert again.status_code == 403 and again.json()["message"] == "Bank already exists"
    assert c.get("/c/bank/MY_TEST_BANK_01").json() == {
        "name": "MY_TEST_BANK_01",
        "matching_enabled_ratio": 1.0,
    }
    missing = c.get("/c/bank/NO_SUCH_BANK")
    assert (
        missing.status_code == 404 and missing.json()["message"] == "bank 'NO_SUCH_BANK' not found"
    )

    assert c.put("/c/bank/MY_TEST_BANK_01", json={"name": "1_invalid_name"}).status_code == 400
    off = c.put("/c/bank/MY_TEST_BANK_01", json={"enabled": False})
    assert off.status_code == 200 and off.json()["matching_enabled_ratio"] == 0
    on = c.put("/c/bank/MY_TEST_BANK_01", json={"enabled_ratio": 1.0})
    assert on.json()["matching_enabled_ratio"] == 1.0
    assert c.put("/c/bank/NO_SUCH_BANK", json={"enabled": True}).status_code == 404

    assert c.delete("/c/bank/MY_TEST_BANK_01").json() == {"message": "Done"}
    gone = c.delete("/c/bank/MY_TEST_BANK_01")
    assert gone.status_code == 200 and gone.json() == {"message": "Done"}


# -- content (test_api_banks.py) --------------------------------------------------------------


def test_bank_content_lifecycle(server: Server, image_server: str) -> None:
    c = server.client("curator")
    bank = "TEST_BANK_CONTENT"
    _bank(c, bank)
    url = f"{image_server}/image1.jpg"
    expected = _pdq(IMAGES["image1.jpg"], "exact")

    first = c.post(f"/c/bank/{bank}/content?url={url}&content_type=photo")
    assert first.status_code == 200, first.text
    assert set(first.json()) == {"id", "signals"}
    assert first.json()["signals"] == {"pdq": expected}
    second = c.post(f"/c/bank/{bank}/content?url={url}&content_type=photo")
    assert second.status_code == 200, second.text
    content_id, other_id = first.json()["id"], second.json()["id"]
    assert isinstance(content_id, int) and other_id != content_id  # a new id, as in HMA

    got = c.get(f"/c/bank/{bank}/content/{content_id}")
    assert got.status_code == 200, got.text
    assert got.json() == {
        "id": content_id,
        "disable_until_ts": 1,
        "original_media_uri": None,
        "bank": {"name": bank, "matching_enabled_ratio": 1.0},
    }
    with_signals = c.get(f"/c/bank/{bank}/content/{content_id}?include_signals=true").json()
    assert with_signals["signals"] == {"pdq": expected}
    assert c.get(f"/c/bank/NO_SUCH_BANK/content/{content_id}").status_code == 404
    assert c.get(f"/c/bank/{bank}/content/999999999").status_code == 404

    m = server.client("matcher")
    lookup = {"signal_type": "pdq", "signal": expected, "banks": bank}
    assert m.get("/m/raw_lookup", params=lookup).json() == {"matches": [content_id, other_id]}

    until = int(time.time()) + 365 * 24 * 3600
    upd = c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": until})
    assert upd.status_code == 200, upd.text
    assert upd.json()["disable_until_ts"] == until
    assert m.get("/m/raw_lookup", params=lookup).json() == {"matches": [other_id]}
    too_far = c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": 9999999999})
    assert too_far.status_code == 400
    negative = c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": -5})
    assert negative.status_code == 400
    # A disable whose end has passed lapses; 1 means enabled.
    past = c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": 1000})
    assert past.json()["disable_until_ts"] == 1
    assert m.get("/m/raw_lookup", params=lookup).json() == {"matches": [content_id, other_id]}
    off = c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": 0})
    assert off.json()["disable_until_ts"] == 0
    assert m.get("/m/raw_lookup", params=lookup).json() == {"matches": [other_id]}
    assert (
        c.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": "1"}).json()[
            "disable_until_ts"
        ]
        == 1
    )
    assert c.put(f"/c/bank/{bank}/content/999999999", json={"note": "x"}).status_code == 404

    deleted = c.delete(f"/c/bank/{bank}/content/{other_id}")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": 1}
    assert c.delete(f"/c/bank/{bank}/content/{other_id}").json() == {"deleted": 0}
    assert c.delete(f"/c/bank/NO_SUCH_BANK/content/{other_id}").status_code == 404
    assert m.get("/m/raw_lookup", params=lookup).json() == {"matches": [content_id]}


def test_bank_content_note_and_metadata(server: Server, image_server: str) -> None:
    c = server.client("curator")
    bank = "TEST_BANK_NOTE"
    _bank(c, bank)
    add = f"/c/bank/{bank}/content?url={image_server}/image1.jpg&content_type=photo"

    assert c.post(add, json={"metadata": {"invalid_metadata": 5}}).status_code == 400
    assert c.post(add, json={"metadata": "not an object"}).status_code == 400
    assert c.post(add, json={"note": "x" * 256}).status_code == 400
    assert c.post(add, json={"note": 5}).status_code == 400
    metadata = {
        "content_id": "ext-id-123",
        "content_uri": "https://example.com/item/123",
        "json": {"source": "test", "nested": {"key": "value"}},
    }
    added = c.post(add, json={"metadata": metadata, "note": "Reported by user X"})
    assert added.status_code == 200, added.text
    content_id = added.json()["id"]
    got = c.get(f"/c/bank/{bank}/content/{content_id}").json()
    assert got["note"] == "Reported by user X"
    assert got["metadata"] == {**metadata, "collab": None}
    no_meta = c.get(f"/c/bank/{bank}/content/{content_id}?include_metadata=false").json()
    assert "metadata" not in no_meta

    plain = c.post(add).json()["id"]
    assert {"note", "metadata"}.isdisjoint(c.get(f"/c/bank/{bank}/content/{plain}").json())
    assert c.put(f"/c/bank/{bank}/content/{plain}", json={"note": "Initial"}).status_code == 200
    assert c.get(f"/c/bank/{bank}/content/{plain}").json()["note"] == "Initial"
    assert c.put(f"/c/bank/{bank}/content/{plain}", json={"note": ""}).status_code == 200
    assert "note" not in c.get(f"/c/bank/{bank}/content/{plain}").json()

    # Multipart: the file in "photo", metadata and note as form fields.
    files = {"photo": ("a.jpg", IMAGES["image2.jpg"], "image/jpeg")}
    form = {"metadata": '{"content_id": "m1"}', "note": "from a form"}
    up = c.post(f"/c/bank/{bank}/content", files=files, data=form)
    assert up.status_code == 200, up.text
    got = c.get(f"/c/bank/{bank}/content/{up.json()['id']}").json()
    assert got["note"] == "from a form" and got["metadata"]["content_id"] == "m1"
    bad_form = {"metadata": "{not json"}
    assert c.post(f"/c/bank/{bank}/content", files=files, data=bad_form).status_code == 400
    assert c.post(f"/c/bank/{bank}/content").status_code == 400
    assert c.post("/c/bank/NO_SUCH_BANK/content", files=files).status_code == 404

    hashed = c.post(f"/c/bank/{bank}/signal", json={"pdq": "0" * 64, "note": "Hash from ABC"})
    assert hashed.status_code == 200, hashed.text
    assert hashed.json()["signals"] == {"pdq": "0" * 64}
    assert c.get(f"/c/bank/{bank}/content/{hashed.json()['id']}").json()["note"] == "Hash from ABC"
    assert c.post(f"/c/bank/{bank}/signal", json={"pdq": "nothex"}).status_code == 400
    assert c.post(f"/c/bank/{bank}/signal", json={"nope": "ab"}).status_code == 400
    assert c.post(f"/c/bank/{bank}/signal", json={}).status_code == 400
    assert c.post("/c/bank/NO_SUCH_BANK/signal", json={"pdq": "0" * 64}).status_code == 404


# -- matching (test_match_api.py) -------------------------------------------------------------


def test_raw_lookup_and_lookup_with_bank_filter(server: Server) -> None:
    c, m = server.client("curator"), server.client("matcher")
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"  # pytx example
    ids = {}
    for name in ("F_BANK_A", "F_BANK_B", "F_BANK_C"):
        _bank(c, name)
        ids[name] = c.post(f"/c/bank/{name}/signal", json={"pdq": pdq}).json()["id"]
    query = {"signal": pdq, "signal_type": "pdq"}

    assert sorted(m.get("/m/raw_lookup", params=query).json()["matches"]) == sorted(ids.values())
    one = m.get("/m/raw_lookup", params={**query, "banks": "F_BANK_A"}).json()
    assert one == {"matches": [ids["F_BANK_A"]]}
    two = m.get("/m/raw_lookup", params={**query, "banks": "F_BANK_A,F_BANK_B"}).json()
    assert sorted(two["matches"]) == sorted([ids["F_BANK_A"], ids["F_BANK_B"]])
    none = m.get("/m/raw_lookup", params={**query, "banks": "NON_EXISTENT_BANK"})
    assert none.status_code == 200 and none.json() == {"matches": []}
    for truthy in ("true", "True", "1", "on", "yes"):
        resp = m.get(
            "/m/raw_lookup", params={**query, "banks": "F_BANK_A", "include_distance": truthy}
        )
        assert resp.json() == {"matches": [{"bank_content_id": ids["F_BANK_A"], "distance": "0"}]}
    falsy = m.get("/m/raw_lookup", params={**query, "banks": "F_BANK_A", "include_distance": "0"})
    assert falsy.json() == {"matches": [ids["F_BANK_A"]]}
    assert m.get("/m/raw_lookup", params={**query, "include_distance": "maybe"}).status_code == 422
    assert m.get("/m/raw_lookup", params={"signal_type": "pdq"}).status_code == 422
    assert m.get("/m/raw_lookup", params={"signal": pdq}).status_code == 422
    bad_type = m.get("/m/raw_lookup", params={"signal_type": "nah", "signal": "00"})
    assert bad_type.status_code == 400 and bad_type.json()["message"] == "No such SignalType 'nah'"
    bad_hash = m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": "zz"})
    assert bad_hash.status_code == 400 and bad_hash.json()["message"].startswith("invalid signal: ")

    every = m.get("/m/lookup", params=query).json()
    assert {"F_BANK_A", "F_BANK_B", "F_BANK_C"} <= set(every)
    assert every["F_BANK_A"] == [{"bank_content_id": ids["F_BANK_A"], "distance": "0"}]
    only_a = m.get("/m/lookup", params={**query, "banks": "F_BANK_A"}).json()
    assert only_a == {"F_BANK_A": [{"bank_content_id": ids["F_BANK_A"], "distance": "0"}]}
    a_c = m.get("/m/lookup", params={**query, "banks": "F_BANK_A,F_BANK_C"}).json()
    assert set(a_c) == {"F_BANK_A", "F_BANK_C"}
    assert m.get("/m/lookup", params={**query, "banks": "NON_EXISTENT_BANK"}).json() == {}
    missing = m.get("/m/lookup", params={"signal_type": "pdq"})
    assert missing.status_code == 400
    assert missing.json()["message"] == "Either url or both signal and signal_type are required"

    # A nearby hash: the distance is the bit count, as a string.
    near = "f8f8f0cee0f4a84f06370a2a038f63f0b36e26d596621e1d33e6b39c4e9c9b22"
    near_resp = m.get(
        "/m/lookup", params={"signal": near, "signal_type": "pdq", "banks": "F_BANK_B"}
    )
    assert near_resp.json() == {"F_BANK_B": [{"bank_content_id": ids["F_BANK_B"], "distance": "2"}]}

    # A disabled bank is not matched by /m/lookup.
    c.put("/c/bank/F_BANK_C", json={"enabled": False})
    assert "F_BANK_C" not in m.get("/m/lookup", params=query).json()


def test_lookup_by_url_and_upload(server: Server, image_server: str) -> None:
    c, m = server.client("curator"), server.client("matcher")
    bank = "URL_LOOKUP_BANK"
    _bank(c, bank)
    url = f"{image_server}/photo2.jpg"
    content_id = c.post(f"/c/bank/{bank}/content?url={url}").json()["id"]

    by_url = m.get("/m/lookup", params={"url": url, "banks": bank})
    assert by_url.status_code == 200, by_url.text
    assert list(by_url.json()) == ["pdq"]
    assert by_url.json()["pdq"][bank][0]["bank_content_id"] == content_id
    inner = m.get("/m/lookup", params={"url": url, "signal_type": "pdq", "banks": bank}).json()
    assert inner == by_url.json()["pdq"]
    files = {"photo": ("b.jpg", IMAGES["photo2.jpg"], "image/jpeg")}
    posted = m.post("/m/lookup", params={"banks": bank}, files=files)
    assert posted.status_code == 200, posted.text
    assert posted.json()["pdq"][bank][0]["bank_content_id"] == content_id
    assert m.post("/m/lookup", params={"banks": "OTHER"}, files=files).json() == {"pdq": {}}
    assert server.client("hasher").get("/m/lookup", params={"url": url}).status_code == 403


def _corner_crop(data: bytes, share: float = 0.08) -> bytes:
    """A JPEG of the picture with ``share`` of its width and height cut off (right,
    bottom): far from the original's PDQ."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    buf = io.BytesIO()
    image.crop((0, 0, w - round(w * share), h - round(h * share))).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def test_content_added_from_a_photo_matches_its_crops(server: Server, image_server: str) -> None:
    """Content added from a photo (upload or URL) keeps the bank-side region descriptors
    (issue #15): an 8% corner crop looks it up; the same hash added as a bare signal has
    no pixels, so the crop does not match it."""
    c, m = server.client("curator"), server.client("matcher")
    original = IMAGES["photo1.jpg"]
    crop = _corner_crop(original)
    plain = _pdq(original, "exact")
    assert bin(int(plain, 16) ^ int(_pdq(crop, "exact"), 16)).count("1") > 31
    bank = "REGION_CONTENT"
    _bank(c, bank)
    uploaded = c.post(f"/c/bank/{bank}/content", files={"photo": ("o.jpg", original)})
    assert uploaded.status_code == 200, uploaded.text
    by_url = c.post(f"/c/bank/{bank}/content?url={image_server}/photo1.jpg")
    assert by_url.status_code == 200, by_url.text
    bare = "REGION_SIGNAL_ONLY"
    _bank(c, bare)
    assert c.post(f"/c/bank/{bare}/signal", json={"pdq": plain}).status_code == 200

    found = m.post("/m/lookup", files={"photo": ("crop.jpg", crop, "image/jpeg")}).json()
    hits = found["pdq"]
    assert sorted(h["bank_content_id"] for h in hits[bank]) == sorted(
        (uploaded.json()["id"], by_url.json()["id"])
    )
    assert all(int(h["distance"]) <= 31 for h in hits[bank])
    assert bare not in hits
    # the original itself still matches all three exactly
    exact = m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": plain}).json()
    assert len(exact["matches"]) >= 3


def test_compare(server: Server) -> None:
    m = server.client("matcher")
    resp = m.post("/m/compare", json={"pdq": [SPECIMEN1, SPECIMEN2]})
    assert resp.status_code == 200 and resp.json() == {"pdq": [True, {"distance": 9}]}
    far = m.post("/m/compare", json={"pdq": [SPECIMEN1, "0" * 64]}).json()
    assert far["pdq"][0] is False and far["pdq"][1]["distance"] > 31
    md5 = m.post("/m/compare", json={"md5": ["a" * 32, "a" * 32]}).json()
    assert md5 == {"md5": [True, {}]}
    for bad in (
        ["banana"],
        {"pdq": "banana"},
        {"pdq": []},
        {"pdq": ["banana", "banana"]},
        {"pdq": [SPECIMEN1, SPECIMEN2, SPECIMEN1]},
        {"not_a_type": [SPECIMEN1, SPECIMEN2]},
    ):
        assert m.post("/m/compare", json=bad).status_code == 400, bad


def test_index_status_is_truthful(server: Server) -> None:
    c, m = server.client("curator"), server.client("matcher")
    before = m.get("/m/index/status").json()
    assert set(before["pdq"]) == {"present", "built_to", "size"}
    assert before["vpdq"] == {"present": False, "built_to": -1, "size": 0}
    _bank(c, "STATUS_BANK")
    for i in range(3):
        resp = c.post("/c/bank/STATUS_BANK/signal", json={"pdq": f"{i:064x}"})
        assert resp.status_code == 200
    t0 = int(time.time())
    after = m.get("/m/index/status", params={"signal_type": "pdq"}).json()
    assert list(after) == ["pdq"]
    assert after["pdq"]["present"] is True
    assert after["pdq"]["size"] == before["pdq"]["size"] + 3  # each hash counted once
    assert after["pdq"]["built_to"] >= t0  # the time the index caught up, not a constant
    assert m.get("/m/index/status", params={"signal_type": "nah"}).status_code == 400


# -- hashing ----------------------------------------------------------------------------------


def test_hashing(server: Server, image_server: str) -> None:
    h = server.client("hasher")
    photo = {"photo": ("a.jpg", IMAGES["image1.jpg"], "image/jpeg")}
    resp = h.post("/h/hash", files=photo)
    assert resp.status_code == 200, resp.text
    # no md5 unless asked; the reference PDQ (pytx's), also for HMA's checkerboards
    assert resp.json() == {"pdq": _pdq(IMAGES["image1.jpg"], "exact")}
    both = h.post("/h/hash?types=pdq,md5", files=photo).json()
    assert set(both) == {"pdq", "md5"}
    assert h.post("/h/hash?types=nah", files=photo).status_code == 400
    assert h.post("/h/hash", files={"audio": ("a", b"x", "audio/mp3")}).status_code == 400
    assert h.post("/h/hash", data={"x": "1"}).status_code == 400
    two = h.post(
        "/h/hash",
        files=[("photo", ("a.jpg", b"1", "image/jpeg")), ("photo", ("b.jpg", b"2", "image/jpeg"))],
    )
    assert two.status_code == 400 and two.json()["message"] == "Only one file allowed per request"

    by_url = h.get("/h/hash", params={"url": f"{image_server}/image1.jpg"})
    assert by_url.status_code == 200
    assert by_url.json() == {"pdq": _pdq(IMAGES["image1.jpg"], "exact")}
    assert h.get("/h/hash").status_code == 422
    text = h.get("/h/hash", params={"url": f"{image_server}/note.txt"})
    assert text.status_code == 400 and "content_type" in text.json()["message"]
    forced = h.get("/h/hash", params={"url": f"{image_server}/image1.jpg", "content_type": "photo"})
    assert forced.status_code == 200


def test_low_quality_pdq_gives_no_hash(server: Server, image_server: str) -> None:
    """HMA (python-threatexchange's PdqSignal) gives no PDQ below quality 50: ``""``,
    which lookups and bank adds then refuse as an invalid signal (400)."""
    flat = {"photo": ("flat.jpg", IMAGES["flat.jpg"], "image/jpeg")}
    assert server.client("hasher").post("/h/hash", files=flat).json() == {"pdq": ""}
    assert server.client("matcher").post("/m/lookup", files=flat).status_code == 400
    c = server.client("curator")
    _bank(c, "LOW_QUALITY_BANK")
    assert c.post("/c/bank/LOW_QUALITY_BANK/content", files=flat).status_code == 400


def test_pdq_agrees_with_threatexchange(server: Server) -> None:
    signal = pytest.importorskip("threatexchange.signal_type.pdq.signal")
    for data in IMAGES.values():
        if not data.startswith(b"\xff\xd8"):
            continue
        resp = server.client("hasher").post(
            "/h/hash", files={"photo": ("x.jpg", data, "image/jpeg")}
        )
        assert resp.json()["pdq"] == signal.PdqSignal.hash_from_bytes(data)


def test_bank_content_stores_the_reference_pdq(server: Server) -> None:
    data, reference, fast = drift_jpeg()
    c = server.client("curator")
    _bank(c, "HMA_REFERENCE_PDQ")
    files = {"photo": ("drift.jpg", data, "image/jpeg")}
    added = c.post("/c/bank/HMA_REFERENCE_PDQ/content", files=files)
    assert added.status_code == 200, added.text
    assert added.json()["signals"]["pdq"] == reference != fast
    # /h/hash hands out the reference hash too (what pytx computes); lookups decode fast.
    assert server.client("hasher").post("/h/hash", files=files).json()["pdq"] == reference
    found = server.client("matcher").post(
        "/m/lookup", params={"banks": "HMA_REFERENCE_PDQ"}, files=files
    )
    assert found.json()["pdq"]["HMA_REFERENCE_PDQ"][0]["bank_content_id"] == added.json()["id"]


# -- vPDQ in python-threatexchange's form -------------------------------------------------------


def test_vpdq_uses_the_pytx_json_form(server: Server) -> None:
    frames = [f"{i:064x},100,{float(i)}" for i in (1, 2)]
    value = '["' + '", "'.join(frames) + '"]'
    c, m = server.client("curator"), server.client("matcher")
    _bank(c, "VPDQ_BANK")
    added = c.post("/c/bank/VPDQ_BANK/signal", json={"vpdq": value})
    assert added.status_code == 200, added.text
    echoed = added.json()["signals"]["vpdq"]
    assert echoed == value
    vpdq = pytest.importorskip("threatexchange.extensions.vpdq.vpdq")
    assert vpdq.VPDQSignal.validate_signal_str(echoed) == echoed
    found = m.get(
        "/m/lookup", params={"signal_type": "vpdq", "signal": value, "banks": "VPDQ_BANK"}
    ).json()
    assert found == {
        "VPDQ_BANK": [{"bank_content_id": added.json()["id"], "distance": "100%[100%]"}]
    }
    compared = m.post("/m/compare", json={"vpdq": [value, value]}).json()
    assert compared == {
        "vpdq": [True, {"query_match_percent": 100.0, "compared_match_percent": 100.0}]
    }


# -- keys, the compatibility setting, tenants -------------------------------------------------


def test_hma_routes_need_a_key_by_default(server: Server) -> None:
    anon = server.client(None)
    resp = anon.get("/c/banks")
    assert resp.status_code == 401 and resp.json()["message"]
    assert anon.get("/m/raw_lookup?signal_type=pdq&signal=00").status_code == 401
    assert server.client("hasher").get("/m/raw_lookup?signal_type=pdq&signal=00").status_code == 403


def test_keyless_hma_client_with_the_compatibility_setting(
    tmp_path: Path, image_server: str
) -> None:
    """An unmodified HMA client (no key) works against a server started with
    ``TIPLINE_HMA_COMPAT_ROLE``; the native API still needs a key."""
    settings = {
        "hma_compat_role": "curator",
        "hma_compat_tenant": "hma-team",
        "hma_plain_errors": True,
    }
    with app_server(f"sqlite:///{tmp_path / 'c.db'}", tmp_path, **settings) as srv:
        anon = srv.client(None)
        _bank(anon, "KEYLESS_BANK")
        added = anon.post(f"/c/bank/KEYLESS_BANK/content?url={image_server}/image1.jpg")
        assert added.status_code == 200, added.text
        pdq = added.json()["signals"]["pdq"]
        found = anon.get("/m/lookup", params={"signal_type": "pdq", "signal": pdq}).json()
        assert found["KEYLESS_BANK"][0]["bank_content_id"] == added.json()["id"]
        native = anon.get("/v1/banks")
        assert native.status_code == 401  # problem documents stay on the native API
        assert native.headers["content-type"].startswith("application/problem+json")
        # HMA's plain errors on the HMA routes (TIPLINE_HMA_PLAIN_ERRORS)
        missing = anon.get("/c/bank/NO_SUCH_BANK")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/json")
        assert missing.json() == {"message": "bank 'NO_SUCH_BANK' not found"}
        assert anon.get("/m/raw_lookup").json().keys() == {"message"}
        # The configured tenant owns what keyless clients create.
        assert srv.client("b_curator").get("/c/bank/KEYLESS_BANK").status_code == 404
        assert srv.client("admin").get("/c/bank/KEYLESS_BANK").status_code == 200


def _request(host: str) -> Request:
    return Request({"type": "http", "client": (host, 1234), "headers": [], "method": "GET"})


def test_compatibility_setting_only_admits_listed_networks() -> None:
    from types import SimpleNamespace

    from tipline.api.deps import hma_compat_principal

    on = SimpleNamespace(settings=Settings(hma_compat_role="matcher"))
    off = SimpleNamespace(settings=Settings())
    wide = SimpleNamespace(
        settings=Settings(hma_compat_role="matcher", hma_compat_networks=["10.0.0.0/8"])
    )
    who = hma_compat_principal(_request("127.0.0.1"), on)  # type: ignore[arg-type]
    assert who is not None and who.role.value == "matcher" and who.tenant is None
    assert hma_compat_principal(_request("::1"), on) is not None  # type: ignore[arg-type]
    assert hma_compat_principal(_request("192.0.2.7"), on) is None  # type: ignore[arg-type]
    assert hma_compat_principal(_request("127.0.0.1"), off) is None  # type: ignore[arg-type]
    assert hma_compat_principal(_request("10.1.2.3"), wide) is not None  # type: ignore[arg-type]
    assert hma_compat_principal(_request("127.0.0.1"), wide) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settings(hma_compat_networks=["not a network"])


def test_hma_tenants_are_isolated(server: Server) -> None:
    a, b = server.client("a_curator"), server.client("b_curator")
    _bank(a, "A_ONLY")
    pdq = "c" * 64
    added = a.post("/c/bank/A_ONLY/signal", json={"pdq": pdq})
    assert added.status_code == 200
    content_id = added.json()["id"]
    assert "A_ONLY" not in [x["name"] for x in b.get("/c/banks").json()]
    assert b.get("/c/bank/A_ONLY").status_code == 404
    assert b.post("/c/bank/A_ONLY/signal", json={"pdq": pdq}).status_code == 404
    assert b.get(f"/c/bank/A_ONLY/content/{content_id}").status_code == 404
    assert b.delete(f"/c/bank/A_ONLY/content/{content_id}").status_code == 404
    params = {"signal_type": "pdq", "signal": pdq}
    assert server.client("b_matcher").get("/m/lookup", params=params).json() == {}
    assert server.client("b_matcher").get("/m/raw_lookup", params=params).json() == {"matches": []}
    assert list(server.client("a_matcher").get("/m/lookup", params=params).json()) == ["A_ONLY"]


# -- EXIF orientation ---------------------------------------------------------------------------


def _oriented_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.open(io.BytesIO(IMAGES["photo1.jpg"])).convert("RGB").save(
        buf, format="JPEG", exif=exif.tobytes()
    )
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [6, 3])
def test_exif_orientation_matches_both_ways(server: Server, orientation: int) -> None:
    """python-threatexchange (and so HMA) hashes the pixels as stored, tipline the photo
    as shown: the HMA routes answer pytx's hash, and match either one."""
    data = _oriented_jpeg(orientation)
    photo = {"photo": ("o.jpg", data, "image/jpeg")}
    c, m = server.client("curator"), server.client("matcher")
    raw = server.client("hasher").post("/h/hash", files=photo).json()["pdq"]
    shown = server.client("hasher").post("/v1/hash", content=data).json()
    oriented = next(s["value"] for s in shown["signals"] if s["type"] == "pdq")
    assert bin(int(raw, 16) ^ int(oriented, 16)).count("1") > 31  # far apart
    signal = pytest.importorskip("threatexchange.signal_type.pdq.signal")
    assert raw == signal.PdqSignal.hash_from_bytes(data)

    # Banked by an HMA client as a bare hash (pytx's): an upload of the photo matches.
    bank = f"EXIF_HMA_{orientation}"
    _bank(c, bank)
    hma_id = c.post(f"/c/bank/{bank}/signal", json={"pdq": raw}).json()["id"]
    found = m.post("/m/lookup", params={"banks": bank}, files=photo).json()
    assert found == {"pdq": {bank: [{"bank_content_id": hma_id, "distance": "0"}]}}

    # Banked through tipline from the photo: pytx's hash and tipline's both match it.
    bank = f"EXIF_TIPLINE_{orientation}"
    _bank(c, bank)
    added = c.post(f"/c/bank/{bank}/content", files=photo).json()
    assert added["signals"] == {"pdq": raw}
    for value in (raw, oriented):
        hit = m.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": value, "banks": bank})
        assert hit.json() == {"matches": [added["id"]]}


def test_video_field_hashes_and_matches_in_pytx_form(server: Server, tmp_path: Path) -> None:
    """A file in the multipart field ``video``: vPDQ in pytx's JSON form and video_md5;
    content added from it matches an upload of the same file. (A generated 3 s clip: the
    server hashes it three times, ~0.9 CPU-s each for a 2 MB reference video.)"""
    import hashlib

    from _web_seed import video as generated_video

    data = generated_video(tmp_path)
    video = {"video": ("pattern.mp4", data, "video/mp4")}
    hashed = server.client("hasher").post("/h/hash", files=video)
    assert hashed.status_code == 200, hashed.text
    assert set(hashed.json()) == {"vpdq", "video_md5"}
    assert hashed.json()["video_md5"] == hashlib.md5(data).hexdigest()
    value = hashed.json()["vpdq"]
    vpdq = pytest.importorskip("threatexchange.extensions.vpdq.vpdq")
    assert vpdq.VPDQSignal.validate_signal_str(value) == value
    only = server.client("hasher").post("/h/hash?types=video_md5", files=video).json()
    assert only == {"video_md5": hashed.json()["video_md5"]}

    c, m = server.client("curator"), server.client("matcher")
    _bank(c, "VIDEO_BANK")
    added = c.post("/c/bank/VIDEO_BANK/content", files=video)
    assert added.status_code == 200, added.text
    found = m.post("/m/lookup", params={"banks": "VIDEO_BANK"}, files=video).json()
    assert found["video_md5"]["VIDEO_BANK"][0]["bank_content_id"] == added.json()["id"]
    assert found["vpdq"]["VIDEO_BANK"][0]["distance"] == "100%[100%]"
