"""Routing: which agency a finished intake report goes to, and why.

The addresses come from the report itself: every ``ipCaptureEvent`` of each
``personOrUserReported`` and of each file's ``fileDetails``. Each address is located
with the geolocation database (:mod:`.geoip`); the decision is a vote that anyone can
redo from the explanation stored beside it:

1. Addresses that cannot be located (invalid, private, reserved, not in the database,
   no country) are listed with their status and do not vote. Addresses the provider
   flagged ``possibleProxy`` vote only when no other address was located.
2. Each distinct address votes once for its country; the country with most votes wins,
   a tie going to the country of the most recent event (then to document order). Within
   that country the subdivisions (US states, ...) vote the same way.
3. The routing table (:class:`tipline.config.RoutingTable`) is applied in order:
   ``subdivisions["CC-SUB"]`` (e.g. a US state's ICAC task force), ``countries["CC"]``,
   ``fallback``; a report with no located address goes to ``unlocated`` (default
   ``fallback``). No applicable rule leaves the report ``unrouted`` (recorded, no agency).

Each decision is stored (the latest of a report is in force) and audited as
``routing.decide`` on the report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.config import RoutingTable, Settings
from tipline.errors import ConfigError, ConflictError, InputError, NotFoundError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse.geoip import (
    GeoDatabase,
    IpStatus,
    Location,
    open_geo_database,
)
from tipline.services.reports.builder import parse_untrusted
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow
from tipline.store.db import transaction
from tipline.store.referrals import RoutingDecisionRow

TARGET_REPORT = "intake_report"
FINISHED = "finished"
#: largest routing table file read, bytes
MAX_TABLE_BYTES = 4 * 1024**2

RULE_SUBDIVISION = "subdivision"
RULE_COUNTRY = "country"
RULE_FALLBACK = "fallback"
RULE_UNLOCATED = "unlocated"
RULE_UNROUTED = "unrouted"


# --- the routing table ------------------------------------------------------------


def check_table(table: RoutingTable) -> RoutingTable:
    """``table`` with upper-case codes; :class:`ConfigError` naming the first rule that
    points to an unknown agency or has a malformed code."""
    countries: dict[str, str] = {}
    for code, agency in table.countries.items():
        key = code.strip().upper()
        if len(key) != 2 or not key.isalpha():
            raise ConfigError(f"routing table: country {code!r} is not ISO 3166-1 alpha-2")
        countries[key] = agency
    subdivisions: dict[str, str] = {}
    for code, agency in table.subdivisions.items():
        key = code.strip().upper()
        country, sep, sub = key.partition("-")
        if not sep or len(country) != 2 or not country.isalpha() or not 1 <= len(sub) <= 3:
            raise ConfigError(f"routing table: subdivision {code!r} is not ISO 3166-2 (e.g. US-CA)")
        subdivisions[key] = agency
    rules: list[tuple[str, str | None]] = [
        *((f"countries[{k}]", v) for k, v in countries.items()),
        *((f"subdivisions[{k}]", v) for k, v in subdivisions.items()),
        ("fallback", table.fallback),
        ("unlocated", table.unlocated),
    ]
    for where, target in rules:
        if target is not None and target not in table.agencies:
            raise ConfigError(f"routing table: {where} names unknown agency {target!r}")
    return table.model_copy(update={"countries": countries, "subdivisions": subdivisions})


def table_from_settings(settings: Settings) -> RoutingTable:
    """The routing table in force: ``routing_table_file`` (JSON) when set, else
    ``routing_table``; checked with :func:`check_table`."""
    path = settings.routing_table_file
    if path is None:
        return check_table(settings.routing_table)
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the routing table ({exc.strerror})") from None
    if len(raw) > MAX_TABLE_BYTES:
        raise ConfigError(f"{path}: routing table over {MAX_TABLE_BYTES} bytes")
    try:
        table = RoutingTable.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        raise ConfigError(f"{path}: not a routing table: {' '.join(first)}") from None
    return check_table(table)


# --- addresses of a report ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpEvidence:
    """One ``ipCaptureEvent`` of a report."""

    ip: str
    #: ``reported_person`` or ``file:<fileId>``
    source: str
    event: str | None = None
    at: datetime | None = None
    possible_proxy: bool = False


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _events(parent: Any, source: str) -> list[IpEvidence]:
    found = []
    for node in parent.findall("ipCaptureEvent"):
        ip = (node.findtext("ipAddress") or "").strip()
        if not ip:
            continue
        found.append(
            IpEvidence(
                ip=ip[:64],
                source=source,
                event=(node.findtext("eventName") or "").strip() or None,
                at=_datetime(node.findtext("dateTime")),
                possible_proxy=(node.findtext("possibleProxy") or "").strip() in ("true", "1"),
            )
        )
    return found


def report_ips(report_xml: str, files: Iterable[tuple[str, str | None]]) -> list[IpEvidence]:
    """Every address of a report: its reported persons' events, then each file's upload
    event; ``files`` are (file id, fileDetails XML or None) in upload order."""
    root = parse_untrusted(report_xml.encode("utf-8"))
    found: list[IpEvidence] = []
    for person in root.findall("personOrUserReported"):
        found.extend(_events(person, "reported_person"))
    for file_id, details in files:
        if details:
            found.extend(_events(parse_untrusted(details.encode("utf-8")), f"file:{file_id}"))
    return found


# --- the decision (pure) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A routing decision before it is stored."""

    agency: str | None
    agency_name: str | None
    media_allowed: bool
    rule: str
    rule_key: str | None
    country: str | None
    subdivision: str | None
    ip: str | None
    explanation: dict[str, Any] = field(default_factory=dict)


_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class _Place:
    votes: int = 0
    latest: datetime = _EPOCH
    first: int = 0
    ip: str | None = None
    #: the latest event time seen for ``ip``
    ip_at: datetime = _EPOCH

    def rank(self) -> tuple[int, datetime, int]:
        return (self.votes, self.latest, -self.first)


def _tally(
    entries: Sequence[tuple[int, IpEvidence, Location]], key: Callable[[Location], str | None]
) -> dict[str, _Place]:
    places: dict[str, _Place] = {}
    voted: set[tuple[str, str]] = set()
    for index, ev, loc in entries:
        name = key(loc)
        if name is None:
            continue
        place = places.setdefault(name, _Place(first=index))
        if (name, loc.ip) not in voted:
            voted.add((name, loc.ip))
            place.votes += 1
        at = ev.at or _EPOCH
        place.latest = max(place.latest, at)
        if place.ip is None or at > place.ip_at:
            place.ip, place.ip_at = loc.ip, at
    return places


def _winner(places: dict[str, _Place]) -> str | None:
    return max(places, key=lambda name: places[name].rank()) if places else None


def _why(ev: IpEvidence, loc: Location, proxies_only: bool) -> tuple[bool, str]:
    if loc.status is not IpStatus.LOCATED:
        return False, {
            IpStatus.INVALID: "not an IP address",
            IpStatus.PRIVATE: "private or local address (not routable on the internet)",
            IpStatus.RESERVED: "reserved address (documentation, multicast, unspecified...)",
            IpStatus.NOT_FOUND: "public address not in the geolocation database",
            IpStatus.NO_COUNTRY: "in the geolocation database without a country",
        }[loc.status]
    if ev.possible_proxy and not proxies_only:
        return False, "flagged possibleProxy; other addresses were located"
    if ev.possible_proxy:
        return True, "flagged possibleProxy, counted because no other address was located"
    return True, "located"


def decide(
    evidence: Sequence[IpEvidence], locate: Callable[[str], Location], table: RoutingTable
) -> Decision:
    """The routing decision for a report's addresses (see the module docstring)."""
    located = [(i, ev, locate(ev.ip)) for i, ev in enumerate(evidence)]
    usable = [e for e in located if e[2].status is IpStatus.LOCATED]
    direct = [e for e in usable if not e[1].possible_proxy]
    proxies_only = not direct and bool(usable)
    pool = direct or usable
    addresses = []
    for _, ev, loc in located:
        counted, why = _why(ev, loc, proxies_only)
        addresses.append(
            {
                "ip": ev.ip,
                "source": ev.source,
                "event": ev.event,
                "at": ev.at.isoformat() if ev.at else None,
                "possible_proxy": ev.possible_proxy,
                "status": loc.status.value,
                "country": loc.country,
                "subdivision": loc.subdivision,
                "country_field": loc.source,
                "network": loc.network,
                "counted": counted,
                "why": why,
            }
        )
    countries = _tally(pool, lambda loc: loc.country)
    country = _winner(countries)
    in_country = [e for e in pool if e[2].country == country]
    subdivisions = _tally(in_country, lambda loc: loc.subdivision)
    subdivision = _winner(subdivisions)
    deciding: str | None = None
    if subdivision is not None:
        deciding = subdivisions[subdivision].ip
    elif country is not None:
        deciding = countries[country].ip
    if country is None:
        rule, key, agency = RULE_UNLOCATED, None, table.unlocated or table.fallback
        reason = f"no address of {len(evidence)} could be located"
    else:
        where = f"{country}-{subdivision}" if subdivision else country
        reason = (
            f"{where}: {countries[country].votes} of {sum(p.votes for p in countries.values())}"
            f" located address(es) in {country}"
        )
        if subdivision:
            reason += f", {subdivisions[subdivision].votes} of them in {where}"
        region = f"{country}-{subdivision}" if subdivision else None
        if region is not None and region in table.subdivisions:
            rule, key, agency = RULE_SUBDIVISION, region, table.subdivisions[region]
        elif country in table.countries:
            rule, key, agency = RULE_COUNTRY, country, table.countries[country]
        else:
            rule, key, agency = RULE_FALLBACK, None, table.fallback
    if agency is None:
        rule, key = RULE_UNROUTED, None
    info = table.agencies.get(agency) if agency is not None else None
    if agency is None:
        outcome = "no rule applies: unrouted"
    elif key is not None:
        outcome = f"{rule}s[{key}] -> {agency}"
    else:
        outcome = f"{rule} -> {agency}"
    explanation = {
        "addresses": addresses,
        "vote": {
            "countries": {k: v.votes for k, v in sorted(countries.items())},
            "subdivisions": {k: v.votes for k, v in sorted(subdivisions.items())},
            "proxies_only": proxies_only,
        },
        "deciding_ip": deciding,
        "rule": rule,
        "rule_key": key,
        "agency": agency,
        "summary": f"{reason}; {outcome}",
    }
    return Decision(
        agency=agency,
        agency_name=info.name if info else None,
        media_allowed=bool(info and info.media),
        rule=rule,
        rule_key=key,
        country=country,
        subdivision=subdivision,
        ip=deciding,
        explanation=explanation,
    )


# --- stored decisions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionInfo:
    """A stored routing decision."""

    id: str
    report_id: int
    agency: str | None
    agency_name: str | None
    media_allowed: bool
    rule: str
    rule_key: str | None
    country: str | None
    subdivision: str | None
    ip: str | None
    explanation: dict[str, Any]
    decided_at: datetime
    decided_by: str

    @classmethod
    def of(cls, row: RoutingDecisionRow) -> DecisionInfo:
        """From a row."""
        return cls(
            id=row.id,
            report_id=int(row.report_id),
            agency=row.agency,
            agency_name=row.agency_name,
            media_allowed=row.media_allowed,
            rule=row.rule,
            rule_key=row.rule_key,
            country=row.country,
            subdivision=row.subdivision,
            ip=row.ip,
            explanation=dict(row.explanation),
            decided_at=row.decided_at,
            decided_by=row.decided_by,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "report_id": self.report_id,
            "agency": self.agency,
            "agency_name": self.agency_name,
            "media_allowed": self.media_allowed,
            "rule": self.rule,
            "rule_key": self.rule_key,
            "country": self.country,
            "subdivision": self.subdivision,
            "ip": self.ip,
            "explanation": self.explanation,
            "decided_at": self.decided_at.isoformat(),
            "decided_by": self.decided_by,
        }


@dataclass
class Router:
    """What routing needs: the database, the geolocation database, the table, a clock."""

    sessions: sessionmaker[Session]
    geo: GeoDatabase
    table: RoutingTable
    clock: Callable[[], datetime] = utcnow


def _actor_id(actor: str | audit.ActorLike) -> str:
    return actor if isinstance(actor, str) else actor.key_id


def _report_evidence(session: Session, report_id: int) -> list[IpEvidence]:
    report = session.get(IntakeReportRow, report_id)
    if report is None:
        raise NotFoundError(f"intake report {report_id} does not exist")
    if report.status != FINISHED:
        raise ConflictError(
            f"intake report {report_id} is {report.status}; only finished reports are routed"
        )
    files = session.execute(
        select(IntakeFileRow.id, IntakeFileRow.details_xml)
        .where(IntakeFileRow.report_id == report_id)
        .order_by(IntakeFileRow.uploaded_at, IntakeFileRow.id)
    ).all()
    try:
        return report_ips(report.xml, [(str(f), d) for f, d in files])
    except InputError as exc:  # stored documents were validated on intake
        raise ConflictError(f"intake report {report_id}: unreadable XML ({exc})") from None


def _store(
    session: Session,
    clock: Callable[[], datetime],
    report_id: int,
    decision: Decision,
    *,
    actor: str | audit.ActorLike,
    addresses: int,
    automatic: bool = False,
) -> DecisionInfo:
    """Store ``decision`` for ``report_id`` and audit ``routing.decide`` (deferred to the
    commit), in the caller's transaction."""
    values: dict[str, Any] = {
        "id": str(ULID()),
        "report_id": report_id,
        "agency": decision.agency,
        "agency_name": decision.agency_name,
        "media_allowed": decision.media_allowed,
        "rule": decision.rule,
        "rule_key": decision.rule_key,
        "country": decision.country,
        "subdivision": decision.subdivision,
        "ip": decision.ip,
        "explanation": decision.explanation,
        "decided_at": clock(),
        "decided_by": _actor_id(actor),
    }
    session.execute(_decision_insert(), values)  # Core: no unit of work for one row
    info = DecisionInfo(**{**values, "explanation": dict(decision.explanation)})
    # appended at commit, with the transaction's other records (one head lock)
    audit.defer(
        session,
        actor=actor,
        action="routing.decide",
        target=(TARGET_REPORT, str(report_id)),
        details={
            "decision": info.id,
            "agency": decision.agency,
            "rule": decision.rule,
            "rule_key": decision.rule_key,
            "country": decision.country,
            "subdivision": decision.subdivision,
            "ip": decision.ip,
            "addresses": addresses,
            "automatic": automatic,
        },
    )
    return info


def _decide(router: Router, evidence: list[IpEvidence]) -> Decision:
    decision = decide(evidence, router.geo.locate, router.table)
    decision.explanation["database"] = {
        "type": router.geo.database_type,
        "build_epoch": router.geo.build_epoch,
    }
    return decision


def route_report(router: Router, report_id: int, *, actor: str | audit.ActorLike) -> DecisionInfo:
    """Route a finished report: decide, store the decision, audit ``routing.decide``."""
    with router.sessions() as session:
        evidence = _report_evidence(session, report_id)
    decision = _decide(router, evidence)
    with transaction(router.sessions) as session:
        return _store(
            session, router.clock, report_id, decision, actor=actor, addresses=len(evidence)
        )


def route_triaged(
    session: Session,
    router: Router,
    report_id: int,
    report_xml: str,
    files: Iterable[tuple[str, str | None]],
    *,
    actor: str,
    decided: bool | None = None,
) -> DecisionInfo | None:
    """Route a report as it is triaged, in the triage's transaction (``files``: id and
    fileDetails XML of each); None when it already has a decision (routed by hand
    before triage) or its stored XML cannot be read. ``decided``: whether it has one,
    when the caller read it already (else it is read here)."""
    if decided is None:
        decided = session.scalar(_decided_query(), {"report_id": report_id}) is not None
    if decided:
        return None
    try:
        evidence = report_ips(report_xml, files)
    except InputError:  # stored documents were validated on intake
        return None
    decision = _decide(router, evidence)
    return _store(
        session,
        router.clock,
        report_id,
        decision,
        actor=actor,
        addresses=len(evidence),
        automatic=True,
    )


@functools.cache
def _decision_insert() -> Any:
    """The decision row's INSERT (built once)."""
    return cast(Table, RoutingDecisionRow.__table__).insert()


@functools.cache
def _decided_query() -> Any:
    """A decision's id for ``:report_id`` (built once: Core, a bound parameter)."""
    return (
        select(RoutingDecisionRow.id)
        .where(RoutingDecisionRow.report_id == bindparam("report_id"))
        .limit(1)
    )


def route_one(
    sessions: sessionmaker[Session],
    settings: Settings,
    report_id: int,
    *,
    actor: str | audit.ActorLike,
    agency: str | None = None,
    note: str | None = None,
) -> DecisionInfo:
    """Route one finished report: by the routing table, or to ``agency`` when an
    analyst names one (:func:`override`)."""
    if agency is not None:
        return override(sessions, settings, report_id, agency, actor=actor, note=note)
    return route(sessions, settings, [report_id], actor=actor)[0]


#: rule of a decision an analyst made by naming the agency
RULE_ANALYST = "analyst"


def override(
    sessions: sessionmaker[Session],
    settings: Settings,
    report_id: int,
    agency: str,
    *,
    actor: str | audit.ActorLike,
    note: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> DecisionInfo:
    """Route a finished report to ``agency`` (an agency of the routing table) by hand,
    whatever the table's rules say: a new decision in force (rule ``analyst``) that
    keeps the one it replaces in its explanation; audited as ``routing.decide``.
    A principal needs ``route`` and no tenant."""
    if isinstance(actor, Principal):
        from tipline.services.clearinghouse import queue

        queue.require(actor, Permission.ROUTE)
    table = table_from_settings(settings)
    found = table.agencies.get(agency)
    if found is None:
        known = ", ".join(sorted(table.agencies)) or "none"
        raise InputError(f"unknown agency {agency!r} (the routing table has: {known})")
    with sessions() as session:
        evidence = _report_evidence(session, report_id)
    try:
        previous: DecisionInfo | None = latest_decision(sessions, report_id)
    except NotFoundError:
        previous = None
    decision = Decision(
        agency=agency,
        agency_name=found.name,
        media_allowed=bool(found.media),
        rule=RULE_ANALYST,
        rule_key=agency,
        country=previous.country if previous else None,
        subdivision=previous.subdivision if previous else None,
        ip=previous.ip if previous else None,
        explanation={
            "override": {
                "by": _actor_id(actor),
                "note": (note or "")[:2000] or None,
                "replaces": previous.id if previous else None,
                "replaced_agency": previous.agency if previous else None,
                "replaced_rule": previous.rule if previous else None,
            }
        },
    )
    with transaction(sessions) as session:
        return _store(session, clock, report_id, decision, actor=actor, addresses=len(evidence))


def router_from_settings(sessions: sessionmaker[Session], settings: Settings) -> Router:
    """A router with the settings' geolocation database and routing table."""
    return Router(
        sessions, open_geo_database(settings.geoip_database), table_from_settings(settings)
    )


def route(
    sessions: sessionmaker[Session],
    settings: Settings,
    report_ids: Sequence[int] | None,
    *,
    actor: str | audit.ActorLike,
    progress: Callable[[int, int], None] | None = None,
) -> list[DecisionInfo]:
    """Route ``report_ids`` (None: every finished report not routed yet) with the
    settings' database and table; a principal needs ``route`` and no tenant."""
    if isinstance(actor, Principal):
        from tipline.services.clearinghouse import queue

        queue.require(actor, Permission.ROUTE)
    router = router_from_settings(sessions, settings)
    if report_ids is None:
        return route_pending(router, actor=actor, progress=progress)
    done = []
    for number, report_id in enumerate(report_ids, 1):
        done.append(route_report(router, report_id, actor=actor))
        if progress is not None:
            progress(number, len(report_ids))
    return done


def unrouted_reports(sessions: sessionmaker[Session], *, limit: int | None = None) -> list[int]:
    """Finished reports without a routing decision, oldest first."""
    decided = select(RoutingDecisionRow.report_id)
    query = (
        select(IntakeReportRow.id)
        .where(IntakeReportRow.status == FINISHED, IntakeReportRow.id.not_in(decided))
        .order_by(IntakeReportRow.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with sessions() as session:
        return [int(i) for i in session.scalars(query)]


def route_pending(
    router: Router,
    *,
    actor: str | audit.ActorLike,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[DecisionInfo]:
    """Route every finished report that has no decision yet (at most ``limit``)."""
    pending = unrouted_reports(router.sessions, limit=limit)
    done = []
    for number, report_id in enumerate(pending, 1):
        done.append(route_report(router, report_id, actor=actor))
        if progress is not None:
            progress(number, len(pending))
    return done


def latest_decision(sessions: sessionmaker[Session], report_id: int) -> DecisionInfo:
    """The decision in force for a report; :class:`NotFoundError` when never routed."""
    with sessions() as session:
        row = session.scalars(
            select(RoutingDecisionRow)
            .where(RoutingDecisionRow.report_id == report_id)
            .order_by(RoutingDecisionRow.decided_at.desc(), RoutingDecisionRow.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise NotFoundError(f"intake report {report_id} has not been routed")
        return DecisionInfo.of(row)
