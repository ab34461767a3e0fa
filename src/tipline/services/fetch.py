"""Fetch media from a URL without letting the URL reach inside the network (SSRF guard).

The host is resolved once, every address is checked, and the connection goes to the
checked address (the ``Host`` header and TLS SNI still name the host), so a DNS answer
that changes between check and connect cannot redirect the request. Redirects are
followed here, one at a time, and each target is checked again. The body is streamed
and cut off at the byte limit; the whole fetch has one deadline.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from tipline.config import Settings, get_settings
from tipline.errors import FetchError, MediaTooLargeError

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata endpoints: refused even when an allow-list covers them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: ``(host, port) -> addresses``; injectable so tests can model DNS rebinding.
Resolver = Callable[[str, int], list[IPAddress]]


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched body: final URL after redirects, its Content-Type and the bytes."""

    url: str
    content_type: str
    data: bytes


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (IPv4 and IPv6), via the system resolver."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    out: list[IPAddress] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        addr = ipaddress.ip_address(text)
        if addr not in out:
            out.append(addr)
    return out


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _is_public(addr: IPAddress) -> bool:
    if (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    ):
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None:
            return _is_public(inner)
    return True


def parse_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    """CIDR strings as networks; FetchError names a malformed one."""
    out: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise FetchError(f"bad CIDR in fetch allow-list: {cidr!r}") from None
    return out


def address_allowed(addr: IPAddress, allow: Iterable[IPNetwork] = ()) -> bool:
    """True when ``addr`` may be fetched: a public address, or one in ``allow``.

    Metadata endpoints are never allowed. IPv4-mapped, 6to4, Teredo and NAT64 IPv6
    addresses are judged by the IPv4 address they carry.
    """
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr in METADATA_ADDRESSES:
        return False
    if any(addr.version == net.version and addr in net for net in allow):
        return True
    return _is_public(addr)


def _check_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path+query)`` of an http(s) URL, or FetchError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be fetched, not {scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials are refused")
    host = parts.hostname
    if not host:
        raise FetchError("URL has no host")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _pick_address(host: str, port: int, resolver: Resolver, allow: list[IPNetwork]) -> IPAddress:
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addrs = [literal] if literal is not None else resolver(host, port)
    if not addrs:
        raise FetchError(f"host {host!r} has no addresses")
    refused = [a for a in addrs if not address_allowed(a, allow)]
    if refused:
        # One bad answer refuses the host: a resolver round-robin must not win a race.
        raise FetchError(f"refused: {host!r} resolves to a non-public address ({refused[0]})")
    return addrs[0]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context of every fetch: what ``verify=True`` gives httpx (certificate and
    host name checked against certifi's CAs), built once per process. Building one reads
    and parses the CA bundle (~25 ms of CPU); an SSLContext is safe to share between
    threads and connections."""
    import httpx

    return httpx.create_ssl_context(verify=True, trust_env=False)


def fetch_url(
    url: str,
    *,
    settings: Settings | None = None,
    resolver: Resolver | None = None,
    max_bytes: int | None = None,
) -> Fetched:
    """GET ``url`` with the SSRF guard, redirect re-checks, a byte limit and a deadline.

    ``max_bytes`` defaults to ``settings.fetch_max_bytes`` (bytes); the total time limit
    is ``settings.fetch_timeout_seconds`` (seconds). Raises FetchError (refused address,
    bad status, timeout, too many redirects) or MediaTooLargeError.
    """
    import httpx

    settings = settings or get_settings()
    resolver = resolver or system_resolver
    limit = settings.fetch_max_bytes if max_bytes is None else max_bytes
    allow = parse_networks(settings.fetch_allow_private)
    deadline = time.monotonic() + settings.fetch_timeout_seconds
    # trust_env=False: a proxy from the environment would connect on our behalf,
    # bypassing the address check.
    with httpx.Client(trust_env=False, follow_redirects=False, verify=_tls_context()) as client:
        current = url
        for _ in range(settings.fetch_max_redirects + 1):
            scheme, host, port, target = _check_url(current)
            addr = _pick_address(host, port, resolver, allow)
            ip_host = f"[{addr}]" if addr.version == 6 else str(addr)
            default_port = 443 if scheme == "https" else 80
            host_header = host if port == default_port else f"{host}:{port}"
            if ":" in host and not host.startswith("["):
                host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"timed out after {settings.fetch_timeout_seconds:g} s")
            request = client.build_request(
                "GET",
                f"{scheme}://{ip_host}:{port}{target}",
                headers={"Host": host_header, "Accept-Encoding": "identity"},
                timeout=httpx.Timeout(remaining),
                extensions={"sni_hostname": host},
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {settings.fetch_timeout_seconds:g} s") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot fetch {host}: {type(exc).__name__}: {exc}") from None
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"redirect {response.status_code} without Location")
                    current = urljoin(current, location)
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchError(f"{host} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise MediaTooLargeError(
                        f"{declared} bytes exceeds the fetch limit of {limit} bytes"
                    )
                data = _read_limited(response, limit, deadline, settings.fetch_timeout_seconds)
                content_type = response.headers.get("content-type", "")
                return Fetched(url=current, content_type=content_type, data=data)
            finally:
                response.close()
        raise FetchError(f"more than {settings.fetch_max_redirects} redirects")


def _read_limited(response: httpx.Response, limit: int, deadline: float, total: float) -> bytes:
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        # No chunk_size: each network read comes back at once, so a server dripping
        # one byte at a time still meets the deadline check.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise MediaTooLargeError(f"body exceeds the fetch limit of {limit} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"timed out after {total:g} s")
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise FetchError(f"timed out after {total:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"fetch failed while reading: {type(exc).__name__}") from None
    return b"".join(chunks)
