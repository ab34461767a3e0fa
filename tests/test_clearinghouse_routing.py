"""Routing of intake reports: geolocation with a generated .mmdb (held to a brute-force
longest-prefix oracle under hypothesis), the vote and the routing table's rules, and
decisions stored and audited for reports filed through the intake."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from _clearinghouse_fixtures import file_report, ip_event, make_intake
from _geo import city_record, write_geo_db
from tipline.config import RoutingAgency, RoutingTable, Settings
from tipline.errors import ConfigError, ConflictError, InputError, NotFoundError
from tipline.services.clearinghouse import Triager, routing, triage_report
from tipline.services.clearinghouse.geoip import (
    GeoDatabase,
    IpStatus,
    Location,
    classify,
    open_geo_database,
)
from tipline.services.clearinghouse.routing import IpEvidence, decide
from tipline.services.database import Database
from tipline.store.audit import AuditRecord
from tipline.store.referrals import RoutingDecisionRow

#: CIDR -> (country, subdivision); nested networks exercise longest-prefix matching
NETWORKS: dict[str, tuple[str | None, str | None]] = {
    "81.0.0.0/12": ("DE", None),
    "81.2.0.0/16": ("FR", None),
    "81.2.69.0/24": ("GB", "ENG"),
    "8.0.0.0/9": ("US", "CA"),
    "8.128.0.0/9": ("US", "NY"),
    "24.0.0.0/8": ("US", None),
    "41.0.0.0/8": ("NG", "LA"),
    "150.0.0.0/8": (None, None),  # in the database without a country
    "2a00::/12": ("NL", None),
    "2a02:100::/32": ("BE", "VLG"),
}

TABLE = RoutingTable(
    agencies={
        "icac-ca": RoutingAgency(name="California ICAC Task Force", media=True),
        "icac-ny": RoutingAgency(name="New York ICAC Task Force", media=True),
        "us-federal": RoutingAgency(name="US federal desk", media=True),
        "nca": RoutingAgency(name="UK National Crime Agency"),
        "bka": RoutingAgency(name="Bundeskriminalamt"),
        "intl": RoutingAgency(name="International liaison desk"),
        "triage": RoutingAgency(name="Analyst triage (no location)"),
    },
    countries={"US": "us-federal", "GB": "nca", "de": "bka"},
    subdivisions={"US-CA": "icac-ca", "us-ny": "icac-ny"},
    fallback="intl",
    unlocated="triage",
)


def _record(country: str | None, sub: str | None) -> dict[str, object]:
    if country is None:
        return {"continent": {"code": "AS"}}
    return city_record(country, sub)


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> GeoDatabase:
    path = tmp_path_factory.mktemp("geo") / "test-city.mmdb"
    write_geo_db(path, {cidr: _record(*where) for cidr, where in NETWORKS.items()})
    return open_geo_database(path)


def _oracle(text: str) -> tuple[IpStatus, str | None, str | None]:
    """Brute force: the fixed rules for non-public space, then the longest network."""
    fixed = classify(text)
    if fixed is not None:
        return fixed, None, None
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d by definition
    best: tuple[int, tuple[str | None, str | None]] | None = None
    for cidr, where in NETWORKS.items():
        net = ipaddress.ip_network(cidr)
        inside = net.version == address.version and address in net
        if inside and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, where)
    if best is None:
        return IpStatus.NOT_FOUND, None, None
    country, sub = best[1]
    if country is None:
        return IpStatus.NO_COUNTRY, None, None
    return IpStatus.LOCATED, country, sub


def _near_networks() -> st.SearchStrategy[str]:
    """Addresses inside, at the edges of and just outside the test networks."""
    nets = [ipaddress.ip_network(c) for c in NETWORKS]

    def pick(net: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int) -> str:
        base = int(net.network_address) + offset
        top = (1 << net.max_prefixlen) - 1
        return str(
            ipaddress.ip_address(min(max(base, 0), top))
            if net.version == 4
            else ipaddress.IPv6Address(min(max(base, 0), top))
        )

    return st.builds(
        pick,
        st.sampled_from(nets),
        st.one_of(st.integers(-2, 2), st.integers(0, 1 << 24), st.integers(-(1 << 20), -1)),
    )


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        _near_networks(),
        st.text(max_size=20),
    )
)
def test_locate_agrees_with_a_longest_prefix_oracle(geo: GeoDatabase, text: str) -> None:
    got = geo.locate(text)
    if classify(text) is IpStatus.INVALID:
        assert got.status is IpStatus.INVALID
        return
    assert (got.status, got.country, got.subdivision) == _oracle(text)
    if got.status is IpStatus.LOCATED:
        assert got.network is not None
        assert got.region in (None, f"{got.country}-{got.subdivision}")


@pytest.mark.parametrize(
    ("ip", "status"),
    [
        ("10.1.2.3", IpStatus.PRIVATE),
        ("192.168.0.1", IpStatus.PRIVATE),
        ("172.20.0.1", IpStatus.PRIVATE),
        ("127.0.0.1", IpStatus.PRIVATE),
        ("169.254.1.1", IpStatus.PRIVATE),
        ("100.64.0.9", IpStatus.PRIVATE),
        ("fd00::1", IpStatus.PRIVATE),
        ("::1", IpStatus.PRIVATE),
        ("192.0.2.7", IpStatus.RESERVED),
        ("2001:db8::1", IpStatus.RESERVED),
        ("224.0.0.5", IpStatus.RESERVED),
        ("0.0.0.0", IpStatus.RESERVED),
        ("240.0.0.1", IpStatus.RESERVED),
        ("999.1.1.1", IpStatus.INVALID),
        ("", IpStatus.INVALID),
        ("9.9.9.9", IpStatus.NOT_FOUND),
        ("150.1.1.1", IpStatus.NO_COUNTRY),
    ],
)
def test_addresses_that_cannot_be_located_say_why(
    geo: GeoDatabase, ip: str, status: IpStatus
) -> None:
    assert geo.locate(ip).status is status


def test_ipv4_mapped_ipv6_is_located_as_ipv4(geo: GeoDatabase) -> None:
    got = geo.locate("::ffff:81.2.69.160")
    assert (got.country, got.subdivision, got.region) == ("GB", "ENG", "GB-ENG")


def test_registered_country_is_used_when_country_is_missing(tmp_path: Path) -> None:
    path = write_geo_db(
        tmp_path / "reg.mmdb", {"5.0.0.0/8": {"registered_country": {"iso_code": "se"}}}
    )
    got = GeoDatabase(path).locate("5.1.1.1")
    assert (got.status, got.country, got.source) == (IpStatus.LOCATED, "SE", "registered_country")


def test_missing_or_broken_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TIPLINE_GEOIP_DATABASE"):
        open_geo_database(None)
    with pytest.raises(ConfigError, match="cannot read"):
        open_geo_database(tmp_path / "absent.mmdb")
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database" * 10)
    with pytest.raises(ConfigError, match="MaxMind"):
        open_geo_database(junk)


# --- the decision -------------------------------------------------------------------


def _ev(
    ip: str, hours: int = 0, *, proxy: bool = False, source: str = "reported_person"
) -> IpEvidence:
    return IpEvidence(ip=ip, source=source, at=ip_event(ip, hours=hours).at, possible_proxy=proxy)


def _decide(geo: GeoDatabase, *events: IpEvidence) -> routing.Decision:
    return decide(events, geo.locate, routing.check_table(TABLE))


def test_a_us_state_goes_to_its_icac_task_force(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("8.1.1.1"), _ev("10.0.0.1"), _ev("8.2.2.2", 3))
    assert (got.agency, got.rule, got.rule_key) == ("icac-ca", "subdivision", "US-CA")
    assert got.agency_name == "California ICAC Task Force" and got.media_allowed
    assert got.ip == "8.2.2.2"  # the latest event of the winning place
    statuses = [(a["ip"], a["status"], a["counted"]) for a in got.explanation["addresses"]]
    assert statuses == [
        ("8.1.1.1", "located", True),
        ("10.0.0.1", "private", False),
        ("8.2.2.2", "located", True),
    ]
    assert "subdivisions[US-CA] -> icac-ca" in got.explanation["summary"]


def test_the_majority_country_wins_and_a_tie_goes_to_the_latest_event(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("81.2.69.1"), _ev("81.1.0.1", 1), _ev("81.1.0.2", 2))
    assert (got.country, got.agency, got.rule) == ("DE", "bka", "country")
    assert got.explanation["vote"]["countries"] == {"DE": 2, "GB": 1}
    tie = _decide(geo, _ev("81.2.69.1", 5), _ev("81.1.0.1", 1))
    assert (tie.country, tie.agency, tie.rule_key) == ("GB", "nca", "GB")
    same_time = _decide(geo, _ev("81.1.0.1"), _ev("81.2.69.1"))
    assert same_time.country == "DE"  # then document order


def test_one_address_seen_many_times_votes_once(geo: GeoDatabase) -> None:
    got = _decide(geo, *(_ev("41.1.1.1", h) for h in range(5)), _ev("8.1.1.1"), _ev("8.200.0.1"))
    assert got.country == "US" and got.explanation["vote"]["countries"] == {"NG": 1, "US": 2}


def test_a_located_country_without_a_rule_goes_to_the_fallback(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("41.1.1.1"))
    assert (got.country, got.subdivision, got.agency, got.rule) == ("NG", "LA", "intl", "fallback")
    assert not got.media_allowed


def test_a_state_without_a_rule_goes_to_the_country_rule(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("24.1.2.3"))
    assert (got.agency, got.rule, got.subdivision) == ("us-federal", "country", None)


def test_proxies_vote_only_when_nothing_else_was_located(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("81.1.0.1", proxy=True), _ev("8.1.1.1"))
    assert got.agency == "icac-ca"
    assert got.explanation["addresses"][0]["counted"] is False
    only = _decide(geo, _ev("81.1.0.1", proxy=True), _ev("10.0.0.1"))
    assert only.agency == "bka" and only.explanation["vote"]["proxies_only"] is True


def test_nothing_located_goes_to_the_unlocated_rule(geo: GeoDatabase) -> None:
    got = _decide(geo, _ev("10.0.0.1"), _ev("9.9.9.9"), _ev("2001:db8::1"), _ev("bogus"))
    assert (got.agency, got.rule, got.country, got.ip) == ("triage", "unlocated", None, None)
    assert [a["status"] for a in got.explanation["addresses"]] == [
        "private",
        "not_found",
        "reserved",
        "invalid",
    ]
    assert _decide(geo).rule == "unlocated"


def test_no_applicable_rule_leaves_the_report_unrouted(geo: GeoDatabase) -> None:
    bare = RoutingTable(agencies={"x": RoutingAgency(name="X")}, countries={"FR": "x"})
    got = decide([_ev("41.1.1.1")], geo.locate, bare)
    assert (got.agency, got.rule, got.country) == (None, "unrouted", "NG")
    assert decide([], geo.locate, bare).rule == "unrouted"


def test_the_table_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown agency 'nobody'"):
        routing.check_table(RoutingTable(countries={"FR": "nobody"}))
    with pytest.raises(ConfigError, match="alpha-2"):
        routing.check_table(
            RoutingTable(agencies={"a": RoutingAgency(name="A")}, countries={"FRA": "a"})
        )
    with pytest.raises(ConfigError, match="ISO 3166-2"):
        routing.check_table(
            RoutingTable(agencies={"a": RoutingAgency(name="A")}, subdivisions={"CA": "a"})
        )
    path = tmp_path / "table.json"
    path.write_text(json.dumps(TABLE.model_dump()))
    loaded = routing.table_from_settings(Settings(data_dir=tmp_path, routing_table_file=path))
    assert loaded.subdivisions["US-NY"] == "icac-ny" and loaded.countries["DE"] == "bka"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a routing table"):
        routing.table_from_settings(Settings(data_dir=tmp_path, routing_table_file=path))


# --- stored decisions for intake reports -----------------------------------------------


def test_reports_filed_through_the_intake_are_routed_and_audited(
    geo: GeoDatabase, tmp_path: Path, db_url: str
) -> None:
    with make_intake(tmp_path / "ch", db_url) as intake:
        router = routing.Router(intake.sessions, geo, routing.check_table(TABLE))
        us, _ = file_report(
            intake,
            person_ips=(ip_event("8.130.0.1"), ip_event("192.168.1.1", hours=1)),
            files=(
                ("a.bin", b"first", ip_event("8.131.0.9", hours=2)),
                ("b.bin", b"second", ip_event("81.2.69.5", hours=3)),
            ),
        )
        nowhere, _ = file_report(intake, person_ips=(ip_event("10.9.9.9"),))
        still_open, _ = file_report(intake, finish=False)

        assert routing.unrouted_reports(intake.sessions) == [us, nowhere]
        done = routing.route_pending(router, actor="cli")
        assert [d.report_id for d in done] == [us, nowhere]
        assert routing.unrouted_reports(intake.sessions) == []

        first = routing.latest_decision(intake.sessions, us)
        assert (first.agency, first.rule_key, first.ip) == ("icac-ny", "US-NY", "8.131.0.9")
        sources = [a["source"] for a in first.explanation["addresses"]]
        assert sources[:2] == ["reported_person", "reported_person"]
        assert sources[2].startswith("file:") and len(sources) == 4
        assert first.explanation["database"]["type"] == "tipline-test-City"
        second = routing.latest_decision(intake.sessions, nowhere)
        assert (second.agency, second.rule) == ("triage", "unlocated")

        with pytest.raises(ConflictError, match="open"):
            routing.route_report(router, still_open, actor="cli")
        with pytest.raises(NotFoundError):
            routing.route_report(router, 999_999, actor="cli")
        with pytest.raises(NotFoundError, match="not been routed"):
            routing.latest_decision(intake.sessions, still_open)

        # routing again keeps the history; the newest decision is in force
        again = routing.route_report(router, us, actor="key-1")
        assert routing.latest_decision(intake.sessions, us).id == again.id
        with intake.sessions() as s:
            assert (
                len(
                    s.scalars(
                        select(RoutingDecisionRow).where(RoutingDecisionRow.report_id == us)
                    ).all()
                )
                == 2
            )
            audited = s.scalars(
                select(AuditRecord).where(
                    AuditRecord.action == "routing.decide",
                    AuditRecord.target_type == "intake_report",
                    AuditRecord.target_id == str(us),
                )
            ).all()
        assert [r.actor for r in audited] == ["cli", "key-1"]
        assert json.loads(audited[0].details)["agency"] == "icac-ny"


def test_location_values_are_plain(geo: GeoDatabase) -> None:
    assert geo.locate("8.1.1.1") == Location(
        ip="8.1.1.1",
        status=IpStatus.LOCATED,
        country="US",
        subdivision="CA",
        source="country",
        network=geo.locate("8.1.1.1").network,
    )


def test_the_migration_creates_what_the_models_describe(tmp_path: Path, db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from _report_fixtures import open_db
    from tipline.store.base import Base

    engine, _ = open_db(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    ours = {"routing_decisions", "referral_packages", "ix_audit_log_target"}
    assert [d for d in diff if ours & set(_names(d))] == []


def _names(item: object) -> list[str]:
    if isinstance(item, str):
        return [item]
    if isinstance(item, tuple | list):
        return [n for x in item for n in _names(x)]
    names = [str(getattr(item, "name", ""))]
    table = getattr(item, "table", None)
    if table is not None:
        names.append(str(table.name))
    return names


# --- routing as reports are triaged; analysts' overrides -------------------------------


def test_triage_routes_each_report_and_an_analyst_can_override(
    geo: GeoDatabase, tmp_path: Path, db_url: str
) -> None:
    with make_intake(tmp_path / "ch", db_url) as intake:
        engine = intake.sessions.kw["bind"]
        url = engine.url.render_as_string(hide_password=False)
        db = Database(engine, intake.sessions, url)
        settings = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path / "ch",
            database_url=url,
            geoip_database=geo.path,
            routing_table=TABLE,
        )
        ca, _ = file_report(intake, person_ips=(ip_event("8.1.0.1"),))
        nowhere, _ = file_report(intake, person_ips=(ip_event("10.0.0.1"),))
        by_hand, _ = file_report(intake, person_ips=(ip_event("81.2.69.5"),))
        hand = routing.route_report(
            routing.router_from_settings(intake.sessions, settings), by_hand, actor="cli"
        )
        triager = Triager.open(db, settings)
        try:
            outcomes = {rid: triage_report(triager, rid) for rid in (ca, nowhere, by_hand)}
        finally:
            triager.close()
        assert {rid: o.routed_to for rid, o in outcomes.items() if o} == {
            ca: "icac-ca",
            nowhere: "triage",
            by_hand: None,  # routed before triage: left as it was
        }
        auto = routing.latest_decision(intake.sessions, ca)
        assert (auto.rule, auto.rule_key, auto.decided_by) == (
            "subdivision",
            "US-CA",
            "clearinghouse",
        )
        assert routing.latest_decision(intake.sessions, nowhere).rule == "unlocated"
        assert routing.latest_decision(intake.sessions, by_hand).id == hand.id

        # an analyst sends the report elsewhere: a new decision in force, the old kept
        moved = routing.override(
            intake.sessions, settings, ca, "nca", actor="key-ana", note="suspect moved to the UK"
        )
        assert routing.latest_decision(intake.sessions, ca).id == moved.id
        assert (moved.agency, moved.rule, moved.rule_key, moved.media_allowed) == (
            "nca",
            "analyst",
            "nca",
            False,
        )
        assert moved.explanation["override"] == {
            "by": "key-ana",
            "note": "suspect moved to the UK",
            "replaces": auto.id,
            "replaced_agency": "icac-ca",
            "replaced_rule": "subdivision",
        }
        with pytest.raises(InputError, match="unknown agency 'fbi'"):
            routing.override(intake.sessions, settings, ca, "fbi", actor="key-ana")
        still_open, _ = file_report(intake, finish=False)
        with pytest.raises(ConflictError, match="open"):
            routing.override(intake.sessions, settings, still_open, "nca", actor="key-ana")
        with intake.sessions() as s:
            audited = [
                (r.actor, json.loads(r.details)["agency"], json.loads(r.details)["automatic"])
                for r in s.scalars(
                    select(AuditRecord)
                    .where(
                        AuditRecord.action == "routing.decide",
                        AuditRecord.target_id == str(ca),
                    )
                    .order_by(AuditRecord.seq)
                )
            ]
        assert audited == [("clearinghouse", "icac-ca", True), ("key-ana", "nca", False)]


def test_without_a_geolocation_database_triage_routes_nothing(tmp_path: Path, db_url: str) -> None:
    with make_intake(tmp_path / "ch", db_url) as intake:
        engine = intake.sessions.kw["bind"]
        url = engine.url.render_as_string(hide_password=False)
        settings = Settings(data_dir=tmp_path / "ch", database_url=url)  # type: ignore[call-arg]
        rid, _ = file_report(intake, person_ips=(ip_event("8.1.0.1"),))
        triager = Triager.open(Database(engine, intake.sessions, url), settings)
        try:
            outcome = triage_report(triager, rid)
        finally:
            triager.close()
        assert outcome is not None and outcome.routed_to is None
        assert routing.unrouted_reports(intake.sessions) == [rid]
