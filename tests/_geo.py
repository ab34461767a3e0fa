"""Small MaxMind-format (.mmdb) databases for routing tests, written with mmdb-writer."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def city_record(country: str | None, subdivision: str | None = None) -> dict[str, object]:
    """A GeoLite2-City-shaped record."""
    record: dict[str, object] = {}
    if country is not None:
        record["country"] = {"iso_code": country, "names": {"en": country}}
    if subdivision is not None:
        record["subdivisions"] = [{"iso_code": subdivision, "names": {"en": subdivision}}]
    return record


def write_geo_db(path: Path, networks: dict[str, dict[str, object]]) -> Path:
    """Write ``networks`` (CIDR -> record) as an IPv6 database that also answers IPv4.

    Networks are inserted widest first, so a narrower network inside a wider one keeps
    its own record (longest prefix wins, as in MaxMind's databases)."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="tipline-test-City",
        languages=["en"],
        description="tipline test geolocation",
    )

    def width(cidr: str) -> int:
        return int(cidr.split("/")[1]) + (96 if ":" not in cidr else 0)

    for cidr in sorted(networks, key=width):
        writer.insert_network(IPSet([cidr]), networks[cidr])
    writer.to_db_file(str(path))
    return path
