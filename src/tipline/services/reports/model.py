"""What a CyberTipline report says, as plain values (no XML, no database).

The builder turns a :class:`ReportContent` into NCMEC's ``<report>`` document and each
:class:`ReportedFile` into a ``<fileDetails>`` document. Every time is an aware datetime
(written in UTC); every enumeration is one of the schema's values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class IncidentType(enum.Enum):
    """``incidentType`` values of the schema."""

    CHILD_PORNOGRAPHY = "Child Pornography (possession, manufacture, and distribution)"
    CHILD_SEX_TRAFFICKING = "Child Sex Trafficking"
    CHILD_SEX_TOURISM = "Child Sex Tourism"
    CHILD_SEXUAL_MOLESTATION = "Child Sexual Molestation"
    MISLEADING_DOMAIN_NAME = "Misleading Domain Name"
    MISLEADING_WORDS_OR_IMAGES = "Misleading Words or Digital Images on the Internet"
    ONLINE_ENTICEMENT = "Online Enticement of Children for Sexual Acts"
    UNSOLICITED_OBSCENE_MATERIAL = "Unsolicited Obscene Material Sent to a Child"


class IpEvent(enum.Enum):
    """``ipCaptureType``: what the user did when the address was seen."""

    LOGIN = "Login"
    REGISTRATION = "Registration"
    PURCHASE = "Purchase"
    UPLOAD = "Upload"
    OTHER = "Other"
    UNKNOWN = "Unknown"


class Classification(enum.Enum):
    """``industryClassification`` (the industry categorisation scale)."""

    A1 = "A1"
    A2 = "A2"
    B1 = "B1"
    B2 = "B2"


class ReportAnnotation(enum.Enum):
    """Tags of ``reportAnnotations``."""

    SEXTORTION = "sextortion"
    CSAM_SOLICITATION = "csamSolicitation"
    MINOR_TO_MINOR_INTERACTION = "minorToMinorInteraction"
    SPAM = "spam"
    SADISTIC_ONLINE_EXPLOITATION = "sadisticOnlineExploitation"


class FileAnnotation(enum.Enum):
    """Tags of ``fileAnnotations`` (schema order)."""

    ANIME_DRAWING_VIRTUAL_HENTAI = "animeDrawingVirtualHentai"
    POTENTIAL_MEME = "potentialMeme"
    VIRAL = "viral"
    POSSIBLE_SELF_PRODUCTION = "possibleSelfProduction"
    PHYSICAL_HARM = "physicalHarm"
    VIOLENCE_GORE = "violenceGore"
    BESTIALITY = "bestiality"
    LIVE_STREAMING = "liveStreaming"
    INFANT = "infant"
    GENERATIVE_AI = "generativeAi"


@dataclass(frozen=True, slots=True)
class IpCapture:
    """An IP address seen for the user; ``port`` is the source port (needed behind CGNAT)."""

    ip: str
    event: IpEvent | None = None
    at: datetime | None = None
    port: int | None = None
    possible_proxy: bool | None = None


@dataclass(frozen=True, slots=True)
class DeviceIdentifier:
    """A device id the platform recorded (type such as ``IMEI``, ``IDFA``, ``cookie``)."""

    id_type: str
    value: str
    event: IpEvent | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EstimatedLocation:
    """Where the platform believes the user is; ``country`` is ISO 3166 alpha-2."""

    city: str | None = None
    region: str | None = None
    country: str | None = None
    verified: bool | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReportedUser:
    """``personOrUserReported``: the account that uploaded the files."""

    esp_identifier: str | None = None
    esp_service: str | None = None
    screen_name: str | None = None
    display_names: tuple[str, ...] = ()
    profile_urls: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ip_events: tuple[IpCapture, ...] = ()
    devices: tuple[DeviceIdentifier, ...] = ()
    temporarily_disabled_at: datetime | None = None
    reenabled_at: datetime | None = None
    permanently_disabled_at: datetime | None = None
    location: EstimatedLocation | None = None


@dataclass(frozen=True, slots=True)
class Reporter:
    """``reporter``: the reporting company's person and contact (from settings)."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    company_template: str | None = None
    terms_of_service: str | None = None
    legal_url: str | None = None


@dataclass(frozen=True, slots=True)
class ReportedFile:
    """One file of a report and what the platform knows and did about it.

    ``viewed_by_esp`` and ``exif_viewed_by_esp`` must be exactly what the reviewer did:
    a file reported on a hash match alone was NOT viewed, and the report says so
    (whether the platform viewed a file decides what the clearinghouse may open without
    a warrant; United States v. Wilson, 9th Cir. 2021).
    """

    file_name: str
    md5: str
    sha1: str
    size: int
    viewed_by_esp: bool
    exif_viewed_by_esp: bool
    uploaded_at: datetime | None = None
    upload_ip: IpCapture | None = None
    potential_meme: bool = False
    annotations: frozenset[FileAnnotation] = frozenset()
    classification: Classification | None = None
    publicly_available: bool | None = None
    location: str | None = None
    #: (signal type, value) pairs sent as ``details type="HASH"`` (e.g. PDQ)
    hashes: tuple[tuple[str, str], ...] = ()
    #: the submission this file came from (tipline's id, not sent)
    submission_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportContent:
    """Everything one ``<report>`` says, plus its files' details."""

    report_id: str
    incident_type: IncidentType
    incident_at: datetime
    reporter: Reporter
    files: tuple[ReportedFile, ...]
    users: tuple[ReportedUser, ...] = ()
    platform: str | None = None
    escalation_reason: str | None = None
    annotations: frozenset[ReportAnnotation] = frozenset()
    urls: tuple[str, ...] = ()
    batched_viral: bool = False
    additional_info: str | None = None


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def ip_to_json(event: IpCapture) -> dict[str, object]:
    """JSON form of an :class:`IpCapture`."""
    return {
        "ip": event.ip,
        "event": event.event.value if event.event else None,
        "at": _dt(event.at),
        "port": event.port,
        "possible_proxy": event.possible_proxy,
    }


def ip_from_json(data: dict[str, object]) -> IpCapture:
    """Inverse of :func:`ip_to_json`."""
    event = data.get("event")
    port = data.get("port")
    proxy = data.get("possible_proxy")
    return IpCapture(
        ip=str(data["ip"]),
        event=IpEvent(event) if isinstance(event, str) else None,
        at=_parse_dt(data.get("at")),
        port=port if isinstance(port, int) else None,
        possible_proxy=proxy if isinstance(proxy, bool) else None,
    )


def file_to_json(file: ReportedFile) -> dict[str, object]:
    """JSON form of a :class:`ReportedFile` (stored with the report's files)."""
    return {
        "file_name": file.file_name,
        "md5": file.md5,
        "sha1": file.sha1,
        "size": file.size,
        "viewed_by_esp": file.viewed_by_esp,
        "exif_viewed_by_esp": file.exif_viewed_by_esp,
        "uploaded_at": _dt(file.uploaded_at),
        "upload_ip": ip_to_json(file.upload_ip) if file.upload_ip else None,
        "potential_meme": file.potential_meme,
        "annotations": sorted(a.value for a in file.annotations),
        "classification": file.classification.value if file.classification else None,
        "publicly_available": file.publicly_available,
        "location": file.location,
        "hashes": [list(pair) for pair in file.hashes],
        "submission_id": file.submission_id,
    }


def file_from_json(data: dict[str, object]) -> ReportedFile:
    """Inverse of :func:`file_to_json`."""
    upload_ip = data.get("upload_ip")
    classification = data.get("classification")
    publicly = data.get("publicly_available")
    annotations = data.get("annotations")
    hashes = data.get("hashes")
    location = data.get("location")
    submission_id = data.get("submission_id")
    return ReportedFile(
        file_name=str(data["file_name"]),
        md5=str(data["md5"]),
        sha1=str(data["sha1"]),
        size=int(str(data["size"])),
        viewed_by_esp=data["viewed_by_esp"] is True,
        exif_viewed_by_esp=data["exif_viewed_by_esp"] is True,
        uploaded_at=_parse_dt(data.get("uploaded_at")),
        upload_ip=ip_from_json(upload_ip) if isinstance(upload_ip, dict) else None,
        potential_meme=data.get("potential_meme") is True,
        annotations=frozenset(
            FileAnnotation(a) for a in (annotations if isinstance(annotations, list) else [])
        ),
        classification=Classification(classification) if isinstance(classification, str) else None,
        publicly_available=publicly if isinstance(publicly, bool) else None,
        location=location if isinstance(location, str) else None,
        hashes=tuple((str(p[0]), str(p[1])) for p in (hashes if isinstance(hashes, list) else [])),
        submission_id=submission_id if isinstance(submission_id, str) else None,
    )
