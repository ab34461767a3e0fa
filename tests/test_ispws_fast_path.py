"""The ISPWS fast path (:class:`tipline.api.routes_ispws.IspwsFastPath`) held to its
twin, FastAPI's own ISPWS routes: the same requests, good and bad, get the same status,
headers that matter and body from both, the oversize bodies the same 413."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from _clock import HANG_SECONDS
from _intake_server import IntakeServer, intake_server
from tipline.api.routes_ispws import IspwsFastPath
from tipline.errors import InputError, TiplineError

PASSWORD = "provider-a-password-1"
IMAGE = Path(__file__).resolve().parents[1] / "src" / "tipline" / "demo" / "shapes-blue.jpg"
REPORT = b"""<report>
  <incidentSummary>
    <incidentType>Child Pornography (possession, manufacture, and distribution)</incidentType>
    <incidentDateTime>2026-11-20T09:30:15Z</incidentDateTime>
  </incidentSummary>
  <reporter><reportingPerson><email>reports@example.org</email></reportingPerson></reporter>
</report>"""
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE report [<!ENTITY a "aaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<report><incidentSummary><incidentType>&b;</incidentType></incidentSummary></report>"""
#: the limits of tests/_intake_server.py
MAX_FILE = 256 * 1024
MAX_BODY = 1024 * 1024

Seen = tuple[int, str | None, str | None, bytes]


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[tuple[IntakeServer, IntakeServer]]:
    """The fast path and its twin, on one database."""
    with (
        intake_server(db_url, tmp_path / "fast") as fast,
        intake_server(db_url, tmp_path / "slow", fast_path=False) as slow,
    ):
        fast.add_provider("esp-a", PASSWORD)
        yield fast, slow


def _seen(response: httpx.Response) -> Seen:
    # ids differ between the two servers' reports (one database); nothing else may
    body = re.sub(rb"<(reportId|fileId)>[^<]*</", rb"<\1>ID</", response.content)
    headers = response.headers
    return response.status_code, headers.get("content-type"), headers.get("connection"), body


def _conversation(base: str) -> list[Seen]:
    """One report's protocol exchange with every refusal the routes answer themselves."""
    image = IMAGE.read_bytes()
    out: list[Seen] = []
    with httpx.Client(
        base_url=base, auth=("esp-a", PASSWORD), timeout=HANG_SECONDS, trust_env=False
    ) as http:

        def keep(response: httpx.Response, tag: bytes = b"reportId") -> str:
            out.append(_seen(response))
            found = re.search(b"<" + tag + b">([^<]*)</", response.content)
            return found.group(1).decode() if found else ""

        keep(http.get("/status"))
        keep(http.get("/status", auth=("esp-a", "wrong")))
        keep(httpx.get(f"{base}/status", timeout=HANG_SECONDS, trust_env=False))
        keep(http.get("/status", headers={"Authorization": "Basic !!"}, auth=None))
        keep(http.get("/xsd"))
        report = keep(http.post("/submit", content=REPORT))
        keep(http.post("/submit", content=BOMB))
        keep(http.post("/submit", content=b""))
        file_id = keep(
            http.post("/upload", data={"id": report}, files={"file": ("a.jpg", image)}), b"fileId"
        )
        keep(http.post("/upload", data={"id": report}))
        keep(http.post("/upload", files={"file": ("a.jpg", image)}))
        keep(http.post("/upload", data={"id": report}, files={"file": ("e.bin", b"")}))
        keep(
            http.post("/upload", data={"id": report}, files={"file": ("b", b"x" * (MAX_FILE + 1))})
        )
        keep(
            http.post(
                "/upload",
                content=b"--zz\r\nnot a part",
                headers={"Content-Type": "multipart/form-data; boundary=zz"},
            )
        )
        keep(http.post("/upload", content=b"x" * (MAX_BODY + 1)))  # declared length: 413
        details = (
            f"<fileDetails><reportId>{report}</reportId><fileId>{file_id}</fileId>"
            "<fileViewedByEsp>true</fileViewedByEsp></fileDetails>"
        )
        keep(http.post("/fileinfo", content=details.encode()))
        keep(http.post("/finish", json={"id": report}))  # not a form: no id
        keep(http.post("/finish", data={"id": report, "x": [str(n) for n in range(12)]}))
        keep(http.post("/finish", data={"id": report}))
        keep(http.post("/retract", data={"id": report}))
        keep(http.post("/finish", data={"id": report}))
        # left to FastAPI by both: wrong method, unknown path, trailing slash
        keep(http.get("/submit"))
        keep(http.head("/status"))
        keep(http.post("/status"))
        keep(http.get("/nothing"))
        keep(http.get("/status/", follow_redirects=False))
    return out


def test_fast_path_answers_as_fastapi_routes_do(servers: tuple[IntakeServer, IntakeServer]) -> None:
    fast, slow = servers
    seen_fast, seen_slow = _conversation(fast.url), _conversation(slow.url)
    for number, (a, b) in enumerate(zip(seen_fast, seen_slow, strict=True)):
        assert a == b, (number, a, b)
    codes = [re.search(rb"<responseCode>(\d+)<", s[3]) for s in seen_fast]
    statuses = [s[0] for s in seen_fast]
    # not a vacuous match: the exchange went as the protocol says
    assert statuses[1:4] == [401, 401, 401] and seen_fast[1][3] == b""
    assert statuses[14] == 413 and seen_fast[14][2] == "close"
    assert statuses[-5:] == [405, 405, 405, 404, 307]
    assert [int(c.group(1)) if c else None for c in codes[:21]] == [
        *(0, None, None, None, None),  # status, three failed logins, the schema
        *(0, 4110, 4110),  # submit: good, a bomb, nothing
        *(0, 4000, 5001, 4200, 4000, 4000),  # upload: good, no file, no id, empty, big, bad
        *(None, 0),  # over the body limit (413), fileinfo
        *(5001, 5001, 0, 5102, 5102),  # finish: no form, too many fields, good; then closed
    ]


def _chunked_upload(url: str, total: int) -> tuple[int, bytes]:
    """POST a chunked multipart upload of up to ``total`` bytes on a raw socket; stop
    sending when the server stops reading. Returns (bytes sent, response head)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path}/upload HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Authorization: Basic ZXNwLWE6cHJvdmlkZXItYS1wYXNzd29yZC0x\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    first = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    piece = b"x" * (64 * 1024)
    sent = 0
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=HANG_SECONDS) as sock:
        sock.sendall(head + f"{len(first):x}\r\n".encode() + first + b"\r\n")
        sock.settimeout(5)  # a blocked send (the server stopped reading) ends the sending
        try:
            while sent < total:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
        except (TimeoutError, ConnectionError):
            pass
        sock.settimeout(HANG_SECONDS)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionError:
            pass
    return sent, received.split(b"\r\n\r\n", 1)[0]


def test_oversize_chunked_upload_is_413_and_not_read_to_the_end(
    servers: tuple[IntakeServer, IntakeServer],
) -> None:
    total = 256 * 1024 * 1024
    heads = []
    for running in servers:
        sent, head = _chunked_upload(running.url, total)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert sent < total // 2, sent  # the server stopped reading at the limit
        heads.append(sorted(h for h in head.lower().split(b"\r\n")[1:] if b"date:" not in h))
    assert heads[0] == heads[1]


def test_metrics_name_the_route_template(servers: tuple[IntakeServer, IntakeServer]) -> None:
    fast, _ = servers
    with httpx.Client(base_url=fast.url, auth=("esp-a", PASSWORD), trust_env=False) as http:
        assert http.get("/status").status_code == 200
        assert http.post("/finish", data={"id": "1"}).status_code == 200
    text = httpx.get(fast.url.removesuffix("/ispws") + "/metrics", trust_env=False).text
    assert 'method="GET",route="/ispws/status",status="200"' in text
    assert 'method="POST",route="/ispws/finish",status="200"' in text


def test_exceptions_go_to_the_apps_handlers_by_class() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    def on_tipline(request: object, exc: Exception) -> None:
        raise AssertionError("not called")

    def on_any(request: object, exc: Exception) -> None:
        raise AssertionError("not called")

    handlers = {TiplineError: on_tipline, Exception: on_any}
    fast = IspwsFastPath(app, ctx=None, handlers=handlers)  # type: ignore[arg-type]
    assert fast._handler(InputError("bad")) is on_tipline
    # left to the server-error layer, as FastAPI's exception middleware leaves it
    assert fast._handler(ValueError("bad")) is None
    assert sorted(path for _, path in fast.calls) == sorted(
        f"/ispws/{name}"
        for name in ("status", "xsd", "submit", "upload", "fileinfo", "finish", "retract")
    )
