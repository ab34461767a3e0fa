"""SSRF-guarded fetching against a real HTTP server on 127.0.0.x."""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _clock import HANG_SECONDS
from tipline.config import Settings
from tipline.errors import FetchError, MediaTooLargeError
from tipline.services.fetch import address_allowed, fetch_url, parse_networks

#: Bytes the /slow handler wrote before its client hung up (or all 1000), one per request.
SLOW_SENT: queue.Queue[int] = queue.Queue()
BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    target: str = ""  # redirect target, set per server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/img":
            self._send(200, BODY, {"Content-Type": "image/png"})
        elif self.path == "/host":
            self._send(200, self.headers.get("Host", "").encode(), {"Content-Type": "text/plain"})
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": type(self).target})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == "/big":
            self._send(200, b"x" * 100_000, {"Content-Type": "image/png"})
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(50):
                chunk = b"y" * 4096
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            sent = 0
            try:
                for _ in range(1000):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    sent += 1
                    time.sleep(0.05)
            except OSError:
                pass
            SLOW_SENT.put(sent)
        elif self.path == "/missing":
            self._send(404, b"no")
        else:
            self._send(500, b"?")


def _serve(host: str) -> Iterator[tuple[str, int, type[_Handler]]]:
    handler = type("H", (_Handler,), {})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host, server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local() -> Iterator[tuple[str, int, type[_Handler]]]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def local2() -> Iterator[tuple[str, int, type[_Handler]]]:
    yield from _serve("127.0.0.2")


def _settings(*allow: str, timeout: float = 5.0) -> Settings:
    return Settings(fetch_allow_private=list(allow), fetch_timeout_seconds=timeout)


def test_loopback_refused_by_default(local: tuple[str, int, type[_Handler]]) -> None:
    host, port, _ = local
    with pytest.raises(FetchError, match="non-public"):
        fetch_url(f"http://{host}:{port}/img", settings=_settings())
    with pytest.raises(FetchError, match="non-public"):
        fetch_url(f"http://localhost:{port}/img", settings=_settings())


def test_allow_list_permits_local_server(local: tuple[str, int, type[_Handler]]) -> None:
    host, port, _ = local
    got = fetch_url(f"http://{host}:{port}/img", settings=_settings("127.0.0.0/8"))
    assert got.data == BODY
    assert got.content_type == "image/png"


def test_redirect_to_private_address_refused(
    local: tuple[str, int, type[_Handler]], local2: tuple[str, int, type[_Handler]]
) -> None:
    _, port1, _ = local
    host2, port2, handler2 = local2
    handler2.target = f"http://127.0.0.1:{port1}/img"
    settings = _settings("127.0.0.2/32")
    with pytest.raises(FetchError, match="non-public"):
        fetch_url(f"http://{host2}:{port2}/redirect", settings=settings)
    # The same redirect is followed when its target is allowed too.
    got = fetch_url(f"http://{host2}:{port2}/redirect", settings=_settings("127.0.0.0/8"))
    assert got.data == BODY
    assert got.url == f"http://127.0.0.1:{port1}/img"


def test_redirect_loop_stops(local: tuple[str, int, type[_Handler]]) -> None:
    host, port, _ = local
    with pytest.raises(FetchError, match="redirects"):
        fetch_url(f"http://{host}:{port}/loop", settings=_settings("127.0.0.0/8"))


def test_connects_to_the_checked_address(local2: tuple[str, int, type[_Handler]]) -> None:
    """A name is resolved once; the connection goes to that address, Host names the host."""
    host, port, _ = local2
    calls: list[str] = []

    def resolver(name: str, _port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        calls.append(name)
        return [ipaddress.ip_address(host)]

    got = fetch_url(
        f"http://media.invalid:{port}/host", settings=_settings("127.0.0.2/32"), resolver=resolver
    )
    assert got.data == f"media.invalid:{port}".encode()
    assert calls == ["media.invalid"]


def test_any_private_answer_refuses_the_host() -> None:
    def resolver(_name: str, _port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    with pytest.raises(FetchError, match="non-public"):
        fetch_url("http://rebind.invalid/x", settings=_settings(), resolver=resolver)


def test_size_limit_declared_and_streamed(local: tuple[str, int, type[_Handler]]) -> None:
    host, port, _ = local
    settings = _settings("127.0.0.0/8")
    with pytest.raises(MediaTooLargeError):
        fetch_url(f"http://{host}:{port}/big", settings=settings, max_bytes=50_000)
    with pytest.raises(MediaTooLargeError):
        fetch_url(f"http://{host}:{port}/chunked", settings=settings, max_bytes=50_000)
    got = fetch_url(f"http://{host}:{port}/chunked", settings=settings, max_bytes=300_000)
    assert len(got.data) == 50 * 4096


def test_total_time_limit(local: tuple[str, int, type[_Handler]]) -> None:
    """/slow sends a byte every 50 ms (well within a per-read timeout) for 50 s: only a
    limit on the whole transfer stops it, so the client hangs up before the last byte."""
    host, port, _ = local
    with pytest.raises(FetchError, match="timed out"):
        fetch_url(f"http://{host}:{port}/slow", settings=_settings("127.0.0.0/8", timeout=0.5))
    assert SLOW_SENT.get(timeout=HANG_SECONDS) < 1000


def test_bad_status(local: tuple[str, int, type[_Handler]]) -> None:
    host, port, _ = local
    with pytest.raises(FetchError, match="404"):
        fetch_url(f"http://{host}:{port}/missing", settings=_settings("127.0.0.0/8"))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "ftp://example.com/x",
        "http://user:pw@example.com/",
        "http:///nohost",
        "http://[::1",
        "",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(FetchError):
        fetch_url(url, settings=_settings())


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_non_public_addresses_refused(addr: str) -> None:
    assert not address_allowed(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_allowed(addr: str) -> None:
    assert address_allowed(ipaddress.ip_address(addr))


def test_metadata_refused_even_when_allow_listed() -> None:
    allow = parse_networks(["169.254.0.0/16", "fd00::/8", "0.0.0.0/0"])
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)
    assert not address_allowed(ipaddress.ip_address("fd00:ec2::254"), allow)
    assert not address_allowed(ipaddress.ip_address("::ffff:169.254.169.254"), allow)
    assert address_allowed(ipaddress.ip_address("169.254.1.1"), allow)


def test_bad_allow_list() -> None:
    with pytest.raises(FetchError, match="CIDR"):
        parse_networks(["not-a-cidr"])


_PRIVATE_V4 = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16")
]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mapped_ipv6_judged_like_ipv4(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert address_allowed(mapped) == address_allowed(v4)
    if any(v4 in net for net in _PRIVATE_V4):
        assert not address_allowed(v4)
