"""The facts a report draws from tipline's records, as JSON kept on those records.

* Review facts (on a decision): what the reviewer viewed and concluded. A file is
  reported as viewed only when the reviewer's decision says so; absent facts mean NOT
  viewed.
* Account facts (on a submission): the uploader's IP events, devices, emails, display
  names, disabled dates and estimated location at upload time.

Both are validated when they come in (:func:`review_facts_from_json`,
:func:`account_from_json` raise :class:`InputError`), so a stored record always builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tipline.errors import InputError
from tipline.services.reports.model import (
    Classification,
    DeviceIdentifier,
    EstimatedLocation,
    FileAnnotation,
    IncidentType,
    IpCapture,
    IpEvent,
    ReportAnnotation,
)


@dataclass(frozen=True, slots=True)
class ReviewFacts:
    """What a reviewer saw and concluded about one submission's file."""

    viewed: bool = False
    exif_viewed: bool = False
    classification: Classification | None = None
    file_annotations: frozenset[FileAnnotation] = frozenset()
    report_annotations: frozenset[ReportAnnotation] = frozenset()
    escalation_reason: str | None = None
    potential_meme: bool = False
    incident_type: IncidentType = IncidentType.CHILD_PORNOGRAPHY

    def as_json(self) -> dict[str, Any]:
        """Stored form (stable keys, sorted lists)."""
        return {
            "viewed": self.viewed,
            "exif_viewed": self.exif_viewed,
            "classification": self.classification.value if self.classification else None,
            "file_annotations": sorted(a.value for a in self.file_annotations),
            "report_annotations": sorted(a.value for a in self.report_annotations),
            "escalation_reason": self.escalation_reason,
            "potential_meme": self.potential_meme,
            "incident_type": self.incident_type.value,
        }


def _enum(kind: Any, value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(str(m.value) for m in kind)
        raise InputError(f"{what}: {value!r} is not one of: {names}") from None


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false")
    return value


def _str(data: dict[str, Any], key: str, limit: int = 2000) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InputError(f"{key} must be text of at most {limit} characters")
    return value


def _list(data: dict[str, Any], key: str, limit: int = 100) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > limit:
        raise InputError(f"{key} must be a list of at most {limit} items")
    return value


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise InputError(f"{what}: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise InputError(f"{what} needs a time zone")
    return parsed


def review_facts_from_json(data: dict[str, Any] | None) -> ReviewFacts:
    """Parse stored or incoming review facts (absent: nothing viewed)."""
    data = data or {}
    classification = data.get("classification")
    return ReviewFacts(
        viewed=_bool(data, "viewed"),
        exif_viewed=_bool(data, "exif_viewed"),
        classification=_enum(Classification, classification, "classification")
        if classification
        else None,
        file_annotations=frozenset(
            _enum(FileAnnotation, a, "file annotation") for a in _list(data, "file_annotations")
        ),
        report_annotations=frozenset(
            _enum(ReportAnnotation, a, "report annotation")
            for a in _list(data, "report_annotations")
        ),
        escalation_reason=_str(data, "escalation_reason"),
        potential_meme=_bool(data, "potential_meme"),
        incident_type=_enum(
            IncidentType,
            data.get("incident_type") or IncidentType.CHILD_PORNOGRAPHY.value,
            "incident type",
        ),
    )


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """The uploader account's facts at upload time."""

    ip_events: tuple[IpCapture, ...] = ()
    devices: tuple[DeviceIdentifier, ...] = ()
    emails: tuple[str, ...] = ()
    display_names: tuple[str, ...] = ()
    temporarily_disabled_at: datetime | None = None
    reenabled_at: datetime | None = None
    permanently_disabled_at: datetime | None = None
    location: EstimatedLocation | None = None


def _ip(data: Any) -> IpCapture:
    if not isinstance(data, dict) or not isinstance(data.get("ip"), str):
        raise InputError("an IP event needs an 'ip'")
    event = data.get("event")
    port = data.get("port")
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise InputError("an IP event's port must be 0-65535")
    proxy = data.get("possible_proxy")
    return IpCapture(
        ip=data["ip"][:64],
        event=_enum(IpEvent, event, "IP event") if event else None,
        at=_time(data.get("at"), "IP event time"),
        port=port,
        possible_proxy=proxy if isinstance(proxy, bool) else None,
    )


def _device(data: Any) -> DeviceIdentifier:
    if not isinstance(data, dict):
        raise InputError("a device needs 'id_type' and 'value'")
    id_type, value = _str(data, "id_type", 100), _str(data, "value", 500)
    if id_type is None or value is None:
        raise InputError("a device needs 'id_type' and 'value'")
    event = data.get("event")
    return DeviceIdentifier(
        id_type=id_type,
        value=value,
        event=_enum(IpEvent, event, "device event") if event else None,
        at=_time(data.get("at"), "device time"),
    )


def account_from_json(data: dict[str, Any] | None) -> AccountFacts:
    """Parse stored or incoming account facts."""
    data = data or {}
    loc = data.get("location")
    location = None
    if isinstance(loc, dict):
        country = _str(loc, "country", 64)
        if country is not None and not (
            len(country) == 2 and country.isascii() and country.isupper()
        ):
            raise InputError("location country must be ISO 3166 alpha-2 (e.g. US)")
        verified = loc.get("verified")
        location = EstimatedLocation(
            city=_str(loc, "city", 200),
            region=_str(loc, "region", 200),
            country=country,
            verified=verified if isinstance(verified, bool) else None,
            at=_time(loc.get("at"), "location time"),
        )
    elif loc is not None:
        raise InputError("location must be an object")
    return AccountFacts(
        ip_events=tuple(_ip(e) for e in _list(data, "ip_events")),
        devices=tuple(_device(d) for d in _list(data, "devices")),
        emails=tuple(str(e)[:320] for e in _list(data, "emails", 20)),
        display_names=tuple(str(n)[:256] for n in _list(data, "display_names", 20)),
        temporarily_disabled_at=_time(data.get("temporarily_disabled_at"), "disabled time"),
        reenabled_at=_time(data.get("reenabled_at"), "re-enabled time"),
        permanently_disabled_at=_time(data.get("permanently_disabled_at"), "disabled time"),
        location=location,
    )
