"""What a received report and its file details say, for de-duplication and triage.

Read from the documents the intake stored (schema-valid, parsed again with no DTD, no
entities and no network). Identifiers of the reported person or of an upload are
normalised so that reports can be linked by them:

* ``account`` (``espIdentifier``) and ``screen_name``: meaningful inside one provider
  only, so scoped by the provider id;
* ``email``: trimmed, lower-cased;
* ``ip``: canonical text (an IPv4-mapped IPv6 address as IPv4); addresses that are
  not globally routable (private, loopback, CGNAT...) and addresses the provider marked
  ``possibleProxy`` are left out: they are shared by many people and would link
  unrelated reports;
* ``device``: ``idType:idValue``, trimmed and case-folded.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tipline.errors import InputError
from tipline.services.reports.builder import parse_untrusted

#: longest identifier value kept, characters (longer ones are not linked on)
MAX_IDENTIFIER_CHARS = 512
#: identifier kinds scoped by the provider that reported them
PROVIDER_SCOPED = frozenset({"account", "screen_name"})
IDENTIFIER_KINDS = ("account", "screen_name", "email", "ip", "device")


@dataclass(frozen=True, slots=True)
class Identifier:
    """A normalised identifier: ``kind`` (see :data:`IDENTIFIER_KINDS`) and value."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class ReportedPerson:
    """One ``personOrUserReported``, as an analyst reads it."""

    esp_identifier: str | None = None
    screen_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    display_names: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ips: tuple[dict[str, Any], ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    profile_urls: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The person as a JSON object."""
        return {
            "esp_identifier": self.esp_identifier,
            "screen_name": self.screen_name,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "display_names": list(self.display_names),
            "emails": list(self.emails),
            "ips": list(self.ips),
            "devices": list(self.devices),
            "profile_urls": list(self.profile_urls),
        }


@dataclass(frozen=True, slots=True)
class ReportFacts:
    """The parts of a ``<report>`` that triage and the analyst view use."""

    incident_type: str | None = None
    incident_at: datetime | None = None
    platform: str | None = None
    #: the provider's reason for escalating (``escalateToHighPriority``), else None
    escalation: str | None = None
    #: ``reportAnnotations`` present, by element name (e.g. ``sextortion``)
    annotations: tuple[str, ...] = ()
    #: ``batchedReport`` reason (e.g. ``VIRAL_POTENTIAL_MEME``), else None
    batched: str | None = None
    persons: tuple[ReportedPerson, ...] = ()
    identifiers: tuple[Identifier, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The facts as a JSON object (identifiers left out: see the report's links)."""
        return {
            "incident_type": self.incident_type,
            "incident_at": self.incident_at.isoformat() if self.incident_at else None,
            "platform": self.platform,
            "escalation": self.escalation,
            "annotations": list(self.annotations),
            "batched": self.batched,
            "persons": [p.as_json() for p in self.persons],
        }


@dataclass(frozen=True, slots=True)
class FileFacts:
    """The parts of a ``<fileDetails>`` that triage and the analyst view use."""

    classification: str | None = None
    annotations: tuple[str, ...] = ()
    original_file_name: str | None = None
    identifiers: tuple[Identifier, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """The facts as a JSON object."""
        return {
            "classification": self.classification,
            "annotations": list(self.annotations),
            "original_file_name": self.original_file_name,
        }


def _text(node: Any, path: str) -> str | None:
    value = node.findtext(path)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _texts(node: Any, path: str) -> tuple[str, ...]:
    return tuple(t for t in ((e.text or "").strip() for e in node.findall(path)) if t)


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _flags(node: Any) -> tuple[str, ...]:
    """Names of the child elements set to true (annotation blocks)."""
    if node is None:
        return ()
    return tuple(
        sorted(
            str(child.tag)
            for child in node
            if isinstance(child.tag, str) and (child.text or "").strip().lower() in ("true", "1")
        )
    )


def normal_email(text: str) -> str | None:
    """An email address trimmed and lower-cased (None when it is not one)."""
    value = text.strip().lower()
    return value if "@" in value and len(value) <= MAX_IDENTIFIER_CHARS else None


def normal_ip(text: str) -> str | None:
    """The canonical text of a globally routable address (None otherwise)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed if address.is_global else None


def _short(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_IDENTIFIER_CHARS else None


def _ip_events(node: Any, out: list[Identifier]) -> tuple[dict[str, Any], ...]:
    events = []
    for event in node.findall("ipCaptureEvent"):
        raw = _text(event, "ipAddress") or ""
        proxy = (_text(event, "possibleProxy") or "").lower() in ("true", "1")
        events.append(
            {
                "ip": raw[:64],
                "event": _text(event, "eventName"),
                "at": _text(event, "dateTime"),
                "possible_proxy": proxy,
            }
        )
        canonical = normal_ip(raw)
        if canonical is not None and not proxy:
            out.append(Identifier("ip", canonical))
    return tuple(events)


def _devices(node: Any, out: list[Identifier]) -> tuple[dict[str, Any], ...]:
    devices = []
    for device in node.findall("deviceId"):
        kind, value = _text(device, "idType") or "", _text(device, "idValue") or ""
        devices.append(
            {"type": kind[:64], "value": value[:256], "event": _text(device, "eventName")}
        )
        key = _short(f"{kind}:{value}".casefold())
        if kind and value and key is not None:
            out.append(Identifier("device", key))
    return tuple(devices)


def _person(node: Any, out: list[Identifier]) -> ReportedPerson:
    esp_id = _text(node, "espIdentifier")
    screen = _text(node, "screenName")
    for kind, value in (("account", esp_id), ("screen_name", screen)):
        short = _short(value)
        if short is not None:
            out.append(Identifier(kind, short))
    emails = _texts(node, "personOrUserReportedPerson/email")
    for email in emails:
        normal = normal_email(email)
        if normal is not None:
            out.append(Identifier("email", normal))
    return ReportedPerson(
        esp_identifier=esp_id,
        screen_name=screen,
        first_name=_text(node, "personOrUserReportedPerson/firstName"),
        last_name=_text(node, "personOrUserReportedPerson/lastName"),
        display_names=_texts(node, "displayName"),
        emails=emails,
        ips=_ip_events(node, out),
        devices=_devices(node, out),
        profile_urls=_texts(node, "profileUrl"),
    )


def _unique(items: list[Identifier]) -> tuple[Identifier, ...]:
    return tuple(dict.fromkeys(items))


def report_facts(xml: str | bytes) -> ReportFacts:
    """The facts of a stored ``<report>`` document (:class:`InputError` if unreadable)."""
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    root = parse_untrusted(data)
    if root.tag != "report":
        raise InputError("not a <report> document")
    summary = root.find("incidentSummary")
    identifiers: list[Identifier] = []
    persons = tuple(_person(p, identifiers) for p in root.findall("personOrUserReported"))
    batched = root.find("batchedReport")
    return ReportFacts(
        incident_type=_text(summary, "incidentType") if summary is not None else None,
        incident_at=_datetime(_text(summary, "incidentDateTime")) if summary is not None else None,
        platform=_text(summary, "platform") if summary is not None else None,
        escalation=_text(summary, "escalateToHighPriority") if summary is not None else None,
        annotations=_flags(summary.find("reportAnnotations")) if summary is not None else (),
        batched=(batched.get("reason") or "batched") if batched is not None else None,
        persons=persons,
        identifiers=_unique(identifiers),
    )


def file_facts(xml: str | bytes | None) -> FileFacts:
    """The facts of a stored ``<fileDetails>`` document (empty facts when None)."""
    if not xml:
        return FileFacts()
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    root = parse_untrusted(data)
    identifiers: list[Identifier] = []
    _ip_events(root, identifiers)
    _devices(root, identifiers)
    classification = _text(root, "industryClassification")
    annotations = _flags(root.find("fileAnnotations"))
    if (_text(root, "potentialMeme") or "").lower() in ("true", "1"):
        annotations = tuple(sorted({*annotations, "potentialMeme"}))
    return FileFacts(
        classification=classification.upper() if classification else None,
        annotations=annotations,
        original_file_name=_text(root, "originalFileName"),
        identifiers=_unique(identifiers),
    )
