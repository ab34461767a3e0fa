"""The ThreatExchange adapter against a local server shaped as the Graph API's
``threat_updates`` edge (JSON pages, absolute ``paging.next`` links carrying the token,
updates not in time order, deletions), with faults."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tipline.config import Settings
from tipline.errors import ConfigError, ExchangeError
from tipline.services import banks, exchanges
from tipline.services.database import Database, open_database
from tipline.services.exchanges.http import Fetcher
from tipline.services.exchanges.model import ExchangeSpec
from tipline.services.exchanges.threatexchange import ThreatExchangeAdapter, check_config

TOKEN = "123456789|te-test-token-abcdefghijklmnop"
ENV = "TIPLINE_TEST_TE_TOKEN"
GROUP = 4242
NOW = 1_750_000_000


def _updates(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """n updates: PDQ and MD5 descriptors, a TMK one, later deletions of a few."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = "HASH_TMK" if i % 11 == 0 else ("HASH_MD5" if i % 3 == 0 else "HASH_PDQ")
        value = (
            f"{rng.getrandbits(128):032x}" if kind == "HASH_MD5" else f"{rng.getrandbits(256):064x}"
        )
        out.append(
            {
                "id": str(9000 + i),
                "indicator": value,
                "type": kind,
                "last_updated": NOW - 100_000 + i * 10,
                "should_delete": False,
                "tags": {"data": [{"text": "sample"}]} if i % 2 else ["other"],
            }
        )
    for i in range(0, n, 13):
        gone = dict(out[i], should_delete=True, last_updated=out[i]["last_updated"] + 5_000)
        out.append(gone)
    return out


@dataclass
class TeState:
    updates: list[dict[str, Any]]
    faults: list[str] = field(default_factory=list)
    tokens_in_urls: int = 0
    base: str = ""


def _handler(state: TeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if "access_token" in q:
                state.tokens_in_urls += 1
            if self.headers.get("Authorization") != f"OAuth {TOKEN}":
                self._send(401, {"error": {"message": "bad token"}})
                return
            fault = state.faults.pop(0) if state.faults else None
            if fault == "500":
                self._send(500, {"error": {"message": "oops"}})
                return
            if fault == "429":
                self._send(429, {"error": {"message": "slow"}}, {"Retry-After": "2"})
                return
            if fault == "evil":
                self._send(200, {"data": [], "paging": {"next": "http://127.0.0.2:9/x"}})
                return
            start, stop = int(q["start_time"]), int(q["stop_time"])
            wanted = set(q["types"].split(","))
            rows = [
                u for u in state.updates
                if start <= u["last_updated"] < stop and u["type"] in wanted | {"HASH_TMK"}
            ]  # fmt: skip
            rows.sort(key=lambda u: hash(u["id"]) % 97)  # not in time order
            after = int(q.get("after", "0"))
            limit = int(q.get("limit", "1000"))
            page = rows[after : after + limit]
            doc: dict[str, Any] = {"data": page}
            if after + limit < len(rows):
                more = {**q, "after": str(after + limit), "access_token": TOKEN}
                doc["paging"] = {"next": f"{state.base}{parts.path}?{urlencode(more)}"}
            self._send(200, doc)

    return Handler


@pytest.fixture
def te() -> Iterator[TeState]:
    state = TeState(_updates(700))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def db(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv(ENV, TOKEN)
    database = open_database(db_url, settings=Settings(data_dir=tmp_path, database_url=db_url))
    banks.create_bank(database, "te")
    yield database
    database.close()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _factory(sleeps: Sleeps, page: int = 200) -> Any:
    def build(spec: ExchangeSpec) -> ThreatExchangeAdapter:
        fetcher = Fetcher(spec.name, sleep=sleeps)
        return ThreatExchangeAdapter(spec, fetcher, token=TOKEN, clock=lambda: NOW, page_size=page)

    return build


def _expected(updates: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    live: dict[str, tuple[int, dict[str, Any]]] = {}
    for u in updates:
        cur = live.get(u["id"])
        if cur is None or u["last_updated"] > cur[0]:
            live[u["id"]] = (u["last_updated"], u)
    kinds = {"HASH_PDQ": "pdq", "HASH_MD5": "md5"}
    return {
        f"te-{k}": (f"{kinds[u['type']]}:{u['indicator']}",)
        for k, (_, u) in live.items()
        if not u["should_delete"] and u["type"] in kinds
    }


def _state(db: Database) -> dict[str, tuple[str, ...]]:
    return {
        e.entry_id: tuple(f"{s.type}:{s.value}" for s in e.signals)
        for e in banks.iter_bank_entries(db, "te")
        if not e.disabled
    }


def _add(db: Database, te: TeState) -> None:
    exchanges.add_exchange(
        db,
        "te",
        kind="threatexchange",
        bank="te",
        config={"privacy_group": GROUP, "url": te.base, "start": NOW - 200_000},
        credential_env=ENV,
    )


def test_sync_equals_the_updates_and_keeps_no_token(db: Database, te: TeState) -> None:
    _add(db, te)
    te.faults = ["ok", "500", "429"]
    sleeps = Sleeps()
    report = exchanges.sync_exchange(db, "te", factory=_factory(sleeps))
    assert _state(db) == _expected(te.updates)
    assert report.totals.unsupported == {"HASH_TMK": 64}
    assert 2.0 in sleeps.delays
    assert te.tokens_in_urls == 0  # the token went in the header, never in a URL
    status = exchanges.exchange_status(db, "te")
    assert TOKEN not in json.dumps(status.as_dict())
    assert status.checkpoint == {"since": NOW - 60, "stop": None, "next": None}
    labelled = banks.get_entry(db, "te", "te-9001")
    assert labelled.labels == ("sample",)


def test_a_paging_link_to_another_host_is_refused(db: Database, te: TeState) -> None:
    _add(db, te)
    te.faults = ["evil"]
    with pytest.raises(ExchangeError, match="another host"):
        exchanges.sync_exchange(db, "te", factory=_factory(Sleeps()))
    assert _state(db) == {}


def test_an_interrupted_sync_resumes_from_a_token_free_link(db: Database, te: TeState) -> None:
    _add(db, te)
    exchanges.sync_exchange(db, "te", factory=_factory(Sleeps()), max_pages=1)
    cp = exchanges.exchange_status(db, "te").checkpoint
    assert cp is not None and cp["next"] and "access_token" not in cp["next"]
    exchanges.sync_exchange(db, "te", factory=_factory(Sleeps()))
    assert _state(db) == _expected(te.updates)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="privacy-group"):
        check_config({})
    with pytest.raises(ConfigError, match="unsupported"):
        check_config({"privacy_group": 1, "types": ["HASH_TMK"]})
