"""IP geolocation for routing: a MaxMind-format database (GeoLite2/GeoIP2 City or
Country, or any ``.mmdb`` with the same ``country``/``subdivisions`` fields) read with
``maxminddb``.

Every address gets exactly one :class:`IpStatus`, so a routing decision can say why an
address did or did not count: not an address at all, not routable on the internet
(private, loopback, link-local, multicast, reserved, documentation...), not in the
database, in the database without a country, or located.
"""

from __future__ import annotations

import enum
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tipline._optional import require
from tipline.errors import GeoDatabaseError


class IpStatus(enum.Enum):
    """What geolocation made of one address."""

    LOCATED = "located"
    INVALID = "invalid"  # not an IPv4/IPv6 address
    PRIVATE = "private"  # RFC 1918 / unique local / loopback / link-local
    RESERVED = "reserved"  # multicast, unspecified, documentation, other non-global
    NOT_FOUND = "not_found"  # a public address the database does not hold
    NO_COUNTRY = "no_country"  # in the database, without a country


@dataclass(frozen=True, slots=True)
class Location:
    """Where the database puts one address."""

    ip: str
    status: IpStatus
    #: ISO 3166-1 alpha-2 (upper case), when located
    country: str | None = None
    #: ISO 3166-2 subdivision code without the country (e.g. ``CA``), when known
    subdivision: str | None = None
    #: the database field the country came from: ``country`` or ``registered_country``
    source: str | None = None
    #: the network the database matched, e.g. ``81.2.69.0/24``
    network: str | None = None

    @property
    def region(self) -> str | None:
        """``CC-SUB`` (ISO 3166-2) when the subdivision is known."""
        if self.country and self.subdivision:
            return f"{self.country}-{self.subdivision}"
        return None


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` names (IPv4-mapped IPv6 as IPv4; a zone id is dropped), else
    None."""
    value = text.strip()
    if "%" in value:
        value = value.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: private address space (RFC 1918, shared CGNAT space, unique local IPv6)
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def classify(text: str) -> IpStatus | None:
    """The status of an address that cannot be located whatever the database holds
    (invalid, private, reserved); None for a public address."""
    address = parse_ip(text)
    if address is None:
        return IpStatus.INVALID
    if (
        address.is_loopback
        or address.is_link_local
        or any(address.version == n.version and address in n for n in _PRIVATE_NETS)
    ):
        return IpStatus.PRIVATE
    if not address.is_global or address.is_multicast or address.is_reserved:
        return IpStatus.RESERVED
    return None


def _iso(node: Any) -> str | None:
    if isinstance(node, dict):
        code = node.get("iso_code")
        if isinstance(code, str) and code.strip():
            return code.strip().upper()
    return None


class GeoDatabase:
    """An open ``.mmdb`` file; lookups are safe from many threads."""

    def __init__(self, path: Path) -> None:
        maxminddb = require("maxminddb")
        self._invalid: type[Exception] = maxminddb.InvalidDatabaseError
        try:
            self._reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoDatabaseError(f"{path}: not a readable MaxMind database ({exc})") from None
        self.path = path
        meta = self._reader.metadata()
        #: e.g. ``GeoLite2-City``
        self.database_type: str = str(meta.database_type)
        #: build time of the database, seconds since the epoch
        self.build_epoch: int = int(meta.build_epoch)

    def close(self) -> None:
        """Release the file."""
        self._reader.close()

    def locate(self, text: str) -> Location:
        """Where ``text`` is (see :class:`IpStatus` for the cases)."""
        status = classify(text)
        if status is not None:
            return Location(ip=text, status=status)
        address = parse_ip(text)
        assert address is not None  # classify() answered INVALID otherwise
        try:
            record, prefix = self._reader.get_with_prefix_len(address)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return Location(ip=text, status=IpStatus.NOT_FOUND)
        except self._invalid as exc:
            raise GeoDatabaseError(f"{self.path}: damaged geolocation database ({exc})") from None
        if not isinstance(record, dict):
            return Location(ip=text, status=IpStatus.NOT_FOUND)
        network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
        country = _iso(record.get("country"))
        source = "country"
        if country is None:
            country, source = _iso(record.get("registered_country")), "registered_country"
        if country is None:
            return Location(ip=text, status=IpStatus.NO_COUNTRY, network=network)
        subdivisions = record.get("subdivisions")
        subdivision = (
            _iso(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else None
        )
        return Location(
            ip=text,
            status=IpStatus.LOCATED,
            country=country,
            subdivision=subdivision,
            source=source,
            network=network,
        )


_OPEN: dict[tuple[str, int, int], GeoDatabase] = {}
_LOCK = threading.Lock()


def open_geo_database(path: Path | None) -> GeoDatabase:
    """The database at ``path``, opened once per process (reopened when the file
    changes); :class:`GeoDatabaseError` when no path is configured or the file is unusable."""
    if path is None:
        raise GeoDatabaseError(
            "routing needs an IP geolocation database: set TIPLINE_GEOIP_DATABASE to a "
            "GeoLite2/GeoIP2 .mmdb file"
        )
    try:
        stat = path.stat()
    except OSError as exc:
        raise GeoDatabaseError(
            f"{path}: cannot read the geolocation database ({exc.strerror})"
        ) from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        found = _OPEN.get(key)
        if found is None:
            found = GeoDatabase(path)
            _OPEN[key] = found
    return found
