"""A local stand-in for NCMEC's hash sharing API v2, shaped as NCMEC documents it, for
the exchange tests and ``bench/exchanges.py``.

The data set is generated from a seed, so a million entries cost no memory: event ``i``
happens at ``T0 + i * STEP`` seconds; most events add entry ``i`` (an image with MD5,
SHA1, PDQ and a PhotoDNA value, or every 5th a video with MD5 and TMK+PDQF); every 97th
event deletes an earlier entry. ``GET /hashsharing/v2/entries?from=&to=`` answers the
events of the window in pages of ``size``, NOT in time order (NCMEC warns of this), with
a ``<paging><next>`` path while more remain. HTTP Basic auth is checked.

``faults``: one consumed per request — ``500``, ``429`` (``Retry-After: 3``), ``drop``,
``truncate``, ``dup`` (this page also repeats the previous page's last entry), or
``kill:<pid>`` (SIGKILL that process before answering).

Run standalone: ``python tests/_ncmec_server.py --entries 1000000`` prints the base URL.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

USER, PASSWORD = "esp-test", "hash-sharing-password"
T0 = 1_700_000_000
STEP = 7
PAGE = 1000
NS = "https://hashsharing.ncmec.org/hashsharing/v2"


def _hex(i: int, salt: str, n: int) -> str:
    out = b""
    k = 0
    while len(out) < n:
        out += hashlib.sha256(f"{salt}:{i}:{k}".encode()).digest()
        k += 1
    return out[:n].hex()


@dataclass(frozen=True, slots=True)
class Event:
    """One add (``deletes`` None) or deletion (``deletes``: the entry index)."""

    index: int
    ts: int
    deletes: int | None


def event(i: int) -> Event:
    """Event ``i`` of the data set."""
    deletes = i - 50 if i >= 97 and i % 97 == 0 else None
    return Event(i, T0 + i * STEP, deletes)


def member_of(entry: int) -> int:
    """The member that shared ``entry``."""
    return 40 + entry % 3


def expected_bank(count: int) -> dict[str, tuple[tuple[str, ...], bool]]:
    """entry id -> (sorted tipline signals, removed) after syncing events [0, count)."""
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for i in range(count):
        e = event(i)
        if e.deletes is None:
            if i % 5 == 0:
                sig = (f"video_md5:{_hex(i, 'md5', 16)}",)
            else:
                sig = tuple(
                    sorted(
                        (
                            f"md5:{_hex(i, 'md5', 16)}",
                            f"sha1:{_hex(i, 'sha1', 20)}",
                            f"pdq:{_hex(i, 'pdq', 32)}",
                        )
                    )
                )
            out[f"{member_of(i)}-e{i}"] = (sig, False)
    for i in range(count):
        e = event(i)
        if e.deletes is not None:
            key = f"{member_of(e.deletes)}-e{e.deletes}"
            if key in out:
                out[key] = (out[key][0], True)
    return out


def _entry_xml(i: int) -> str:
    e = event(i)
    stamp = datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if e.deletes is not None:
        d = e.deletes
        tag = "deletedVideo" if d % 5 == 0 else "deletedImage"
        return (
            f'<{tag}><member id="{member_of(d)}">Member {member_of(d)}</member>'
            f"<id>e{d}</id><timestamp>{stamp}</timestamp></{tag}>"
        )
    if i % 5 == 0:
        return (
            f'<video><member id="{member_of(i)}">Member {member_of(i)}</member>'
            f"<timestamp>{stamp}</timestamp><id>e{i}</id><classification>A1</classification>"
            f"<fingerprints><md5>{_hex(i, 'md5', 16)}</md5>"
            f"<tmk_pdqf>{_hex(i, 'tmk', 64)}</tmk_pdqf></fingerprints></video>"
        )
    label = "A1" if i % 2 else "B1"
    return (
        f'<image><member id="{member_of(i)}">Member {member_of(i)}</member>'
        f"<timestamp>{stamp}</timestamp><id>e{i}</id><classification>{label}</classification>"
        f"<fingerprints><md5>{_hex(i, 'md5', 16)}</md5><sha1>{_hex(i, 'sha1', 20)}</sha1>"
        f"<pdna>{_hex(i, 'pdna', 72)}</pdna><pdq>{_hex(i, 'pdq', 32)}</pdq></fingerprints>"
        "<feedback/></image>"
    )


def _parse_time(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@dataclass
class NcmecState:
    """The data set's size and the faults to inject."""

    count: int
    faults: list[str] = field(default_factory=list)
    requests: int = 0
    url: str = ""
    #: feedback received: (member id, entry id, fingerprint, body)
    votes: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: the down-vote reasons offered per fingerprint type: guid -> name
    reasons: dict[str, str] = field(
        default_factory=lambda: {"0f5d3a1e-1111-2222-3333-444455556666": "Not CSAM"}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


def _window(state: NcmecState, frm: int, to: int) -> list[int]:
    """Indices of events with frm <= ts < to, in a scrambled (not time) order."""
    lo = max(0, -(-(frm - T0) // STEP))
    hi = min(state.count, max(0, -(-(to - T0) // STEP)))
    return sorted(range(lo, hi), key=lambda i: hashlib.md5(str(i).encode()).digest())


def _handler(state: NcmecState) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, "<error>unauthorized</error>")
                return
            with state.lock:
                fault = state.faults.pop(0) if state.faults else None
            if fault == "500":
                self._send(500, "<error>internal</error>")
                return
            parts = urlsplit(self.path).path.split("/")
            # .../v2/entries/<member>/<id>/<fingerprint>/feedback
            if len(parts) < 6 or parts[-1] != "feedback" or parts[-5] != "entries":
                self._send(404, "<error>not found</error>")
                return
            member, entry, fingerprint = parts[-4], parts[-3], parts[-2]
            if fingerprint not in {"MD5", "SHA1", "PDQ", "PDNA"}:
                self._send(400, "<error>unknown fingerprint type</error>")
                return
            with state.lock:
                state.votes.append((member, entry, fingerprint, body))
            self._send(200, f'<feedbackResponse xmlns="{NS}"/>')

        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                fault = state.faults.pop(0) if state.faults else None
            if self.headers.get("Authorization") != expected:
                self._send(401, "<error>unauthorized</error>")
                return
            if fault and fault.startswith("kill:"):
                os.kill(int(fault.split(":")[1]), signal.SIGKILL)
            if fault == "500":
                self._send(500, "<error>internal</error>")
                return
            if fault == "429":
                self._send(429, "<error>slow down</error>", {"Retry-After": "3"})
                return
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path.endswith("/v2/status"):
                self._send(
                    200,
                    f'<status xmlns="{NS}"><ipAddress>127.0.0.1</ipAddress>'
                    f'<username>{USER}</username><member id="1">Test ESP</member></status>',
                )
                return
            if parts.path.endswith("/reasons"):
                items = "".join(
                    f'<reason guid="{g}" name="{n}"/>' for g, n in state.reasons.items()
                )
                self._send(
                    200,
                    f'<feedbackReasons xmlns="{NS}"><availableFeedbackReasons>{items}'
                    "</availableFeedbackReasons></feedbackReasons>",
                )
                return
            if parts.path.endswith("/v2/members"):
                self._send(
                    200,
                    f'<members xmlns="{NS}">'
                    + "".join(f'<member id="{m}">Member {m}</member>' for m in (40, 41, 42))
                    + "</members>",
                )
                return
            if not parts.path.endswith("/v2/entries"):
                self._send(404, "<error>not found</error>")
                return
            frm, to = _parse_time(q["from"]), _parse_time(q["to"])
            order = _window(state, frm, to)
            start = int(q.get("start", "0"))
            size = int(q.get("size", str(PAGE)))
            chunk = order[start : start + size]
            if fault == "dup" and start > 0:
                chunk = [order[start - 1], *chunk]
            body_entries = "".join(_entry_xml(i) for i in chunk)
            paging = ""
            if start + size < len(order):
                nxt = (
                    f"/v2/entries?from={quote(q['from'])}&to={quote(q['to'])}"
                    f"&start={start + size}&size={size}&max={len(order)}"
                )
                paging = f"<paging><next>{nxt.replace('&', '&amp;')}</next></paging>"
            body = (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                f'<queryResult xmlns="{NS}"><images count="{len(chunk)}">{body_entries}'
                f"</images>{paging}</queryResult>"
            )
            if fault == "truncate":
                raw = body.encode()
                half = raw[: len(raw) // 2]
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(half)))
                self.end_headers()
                self.wfile.write(half)
                return
            self._send(200, body)

    return Handler


@contextmanager
def ncmec_server(count: int) -> Iterator[NcmecState]:
    """Serve a data set of ``count`` events on a free loopback port."""
    state = NcmecState(count)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hashsharing"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    with ncmec_server(args.entries) as state:
        print(state.url, flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
