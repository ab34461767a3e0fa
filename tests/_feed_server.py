"""A tipline feed publisher on 127.0.0.1 for the exchange tests, with injectable faults.

It serves ``page_of`` of a real publisher database over real HTTP; ``faults`` is a list
of what to do to the next requests, one item consumed per request: ``"500"``, ``"429"``
(with ``Retry-After: 7``), ``"drop"`` (close the connection without an answer),
``"truncate"`` (send half the body), ``"hang"`` (wait until the test ends), ``"tamper"``
(change a signed byte), ``"replay"`` (the first page ever served, again), or
``"wrongkey"`` (sign with another key).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tipline.services import exchanges
from tipline.services.database import Database

TOKEN = "feed-test-token"


@dataclass
class FeedServer:
    """State shared with the handler."""

    db: Database
    publisher: exchanges.Publisher
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


def _handler(state: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            state.requests.append(query)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, b'{"detail":"no"}')
                return
            bank = parts.path.rsplit("/", 1)[-1]
            fault = state.faults.pop(0) if state.faults else None
            if fault == "500":
                self._send(500, b'{"detail":"boom"}')
                return
            if fault == "429":
                self._send(429, b"{}", {"Retry-After": "7"})
                return
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "hang":
                state.release.wait(60)
                return
            if fault == "replay" and state.served:
                self._send(200, json.dumps(state.served[0]).encode())
                return
            publisher = state.publisher
            if fault == "wrongkey":
                publisher = exchanges.Publisher(publisher.banks, exchanges.SigningKey.generate())
            doc = exchanges.page_of(
                state.db,
                publisher,
                bank,
                after=int(query.get("after", "0")),
                limit=int(query.get("limit", "1000")),
            )
            state.served.append(doc)
            if fault == "tamper" and doc["page"]["items"]:
                doc = json.loads(json.dumps(doc))
                doc["page"]["items"][0]["labels"] = ["tampered"]
            body = json.dumps(doc).encode()
            if fault == "truncate":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) // 2))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                return
            self._send(200, body)

    return Handler


@contextmanager
def feed_server(db: Database, publisher: exchanges.Publisher) -> Iterator[FeedServer]:
    """Serve ``publisher``'s feeds of ``db`` on a free loopback port."""
    state = FeedServer(db, publisher)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/feeds"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
