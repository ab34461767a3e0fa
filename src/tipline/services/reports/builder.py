"""Build NCMEC CyberTipline documents (``<report>``, ``<fileDetails>``) and check them
against the schema.

Elements are written in the schema's order by hand (the schema is a sequence almost
everywhere, so order is part of validity) and every document is validated with the
packaged ``cyber_tipline.xsd`` before it leaves this module: a document that does not
validate is a bug here, raised as :class:`ReportSchemaError`, never sent.

The output is deterministic (same content, same bytes), so golden files can pin it.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from tipline._optional import require
from tipline.errors import InputError, TiplineError
from tipline.services.reports.model import (
    DeviceIdentifier,
    FileAnnotation,
    IpCapture,
    ReportContent,
    ReportedFile,
    ReportedUser,
    Reporter,
)

if TYPE_CHECKING:
    from lxml import etree as _etree_t

SCHEMA_FILE = "cyber_tipline.xsd"
#: prefix of the report-level ``additionalInfo`` line that names tipline's report id
REFERENCE_PREFIX = "ESP report reference: "

# XML 1.0 forbids most control characters; user-supplied text (screen names, file
# names) may carry them. They become U+FFFD rather than breaking the document.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class ReportSchemaError(TiplineError):
    """A generated document does not satisfy NCMEC's schema (a bug, never sent)."""

    code = "report-schema"


_ETREE: Any = None


def _etree() -> Any:
    """``lxml.etree`` (looked up once: every document asks for it)."""
    global _ETREE
    if _ETREE is None:
        _ETREE = require("lxml.etree")
    return _ETREE


#: compiled validators not in use; lxml validators keep per-call error state, so each
#: is used by one thread at a time, and threads share them (a new thread, e.g. each of a
#: delivery run's, no longer compiles the schema again)
_IDLE_SCHEMAS: list[Any] = []
_IDLE_LOCK = threading.Lock()
#: libxml2 fails to parse a schema while another thread parses one ("Document is not
#: valid XML Schema"): validators are built under this lock
_SCHEMA_BUILD = threading.Lock()


def schema_bytes() -> bytes:
    """The packaged NCMEC schema, as published."""
    return resources.files("tipline.services.reports").joinpath(SCHEMA_FILE).read_bytes()


def _take_schema() -> Any:
    with _IDLE_LOCK:
        if _IDLE_SCHEMAS:
            return _IDLE_SCHEMAS.pop()
    etree = _etree()
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    with _SCHEMA_BUILD:
        return etree.XMLSchema(etree.fromstring(schema_bytes(), parser))


def validate_tree(root: _etree_t._Element) -> None:
    """Raise :class:`ReportSchemaError` with the first schema complaint, if any."""
    schema = _take_schema()
    try:
        if not schema.validate(root):
            error = schema.error_log.last_error
            raise ReportSchemaError(f"line {error.line}: {error.message}")
    finally:
        with _IDLE_LOCK:
            _IDLE_SCHEMAS.append(schema)


def parse_untrusted(data: bytes, *, max_bytes: int = 16 * 1024 * 1024) -> _etree_t._Element:
    """Parse a document from outside: no DTD, no entities, no network, bounded size."""
    etree = _etree()
    if len(data) > max_bytes:
        raise InputError(f"XML document over {max_bytes} bytes")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"malformed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise InputError("XML with a document type declaration is refused")
    return root  # type: ignore[no-any-return]


def validate_bytes(data: bytes) -> _etree_t._Element:
    """Parse untrusted bytes and validate them against the schema."""
    root = parse_untrusted(data)
    validate_tree(root)
    return root


def xml_datetime(value: datetime) -> str:
    """``xs:dateTime`` in UTC with a ``Z`` zone (microseconds only when non-zero)."""
    if value.tzinfo is None:
        raise InputError("report times must be timezone-aware")
    value = value.astimezone(UTC)
    if value.year >= 1000:  # isoformat: strftime's text, without strftime's cost
        text = value.replace(microsecond=0, tzinfo=None).isoformat()
    else:  # (strftime writes such a year with fewer than four digits)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _clean(text: str) -> str:
    return _INVALID_XML.sub("\ufffd", text)


def _bool(value: bool) -> str:
    return "true" if value else "false"


class _Writer:
    """Tiny helper around SubElement that skips absent values."""

    __slots__ = ("_sub", "etree")

    def __init__(self) -> None:
        self.etree = _etree()
        self._sub = self.etree.SubElement

    def el(self, parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
        node = self._sub(parent, tag, attrs) if attrs else self._sub(parent, tag)
        if text is not None:
            node.text = _clean(text)
        return node

    def opt(self, parent: Any, tag: str, text: str | None) -> None:
        if text is not None and text != "":
            self.el(parent, tag, text)


def _ip_event(w: _Writer, parent: Any, event: IpCapture) -> None:
    node = w.el(parent, "ipCaptureEvent")
    w.el(node, "ipAddress", event.ip)
    if event.event is not None:
        w.el(node, "eventName", event.event.value)
    if event.at is not None:
        w.el(node, "dateTime", xml_datetime(event.at))
    if event.possible_proxy is not None:
        w.el(node, "possibleProxy", _bool(event.possible_proxy))
    if event.port is not None:
        if not 0 <= event.port <= 65535:
            raise InputError(f"port {event.port} is outside 0-65535")
        w.el(node, "port", str(event.port))


def _device(w: _Writer, parent: Any, device: DeviceIdentifier) -> None:
    node = w.el(parent, "deviceId")
    w.el(node, "idType", device.id_type)
    w.el(node, "idValue", device.value)
    if device.event is not None:
        w.el(node, "eventName", device.event.value)
    if device.at is not None:
        w.el(node, "dateTime", xml_datetime(device.at))


def _reporter(w: _Writer, root: Any, reporter: Reporter) -> None:
    node = w.el(root, "reporter")
    person = w.el(node, "reportingPerson")
    w.opt(person, "firstName", reporter.first_name)
    w.opt(person, "lastName", reporter.last_name)
    w.opt(person, "phone", reporter.phone)
    w.el(person, "email", reporter.email)
    w.opt(node, "companyTemplate", reporter.company_template)
    w.opt(node, "termsOfService", reporter.terms_of_service)
    w.opt(node, "legalURL", reporter.legal_url)


def _user(w: _Writer, root: Any, user: ReportedUser) -> None:
    node = w.el(root, "personOrUserReported")
    if user.emails:
        person = w.el(node, "personOrUserReportedPerson")
        for email in user.emails:
            w.el(person, "email", email)
    w.opt(node, "espIdentifier", user.esp_identifier)
    w.opt(node, "espService", user.esp_service)
    w.opt(node, "screenName", user.screen_name)
    for name in user.display_names:
        w.el(node, "displayName", name)
    for url in user.profile_urls:
        w.el(node, "profileUrl", url)
    for event in user.ip_events:
        _ip_event(w, node, event)
    for device in user.devices:
        _device(w, node, device)
    if user.temporarily_disabled_at is not None:
        attrs = {"disabledDate": xml_datetime(user.temporarily_disabled_at)}
        if user.reenabled_at is not None:
            attrs["reenabledDate"] = xml_datetime(user.reenabled_at)
        w.el(node, "accountTemporarilyDisabled", "true", **attrs)
    if user.permanently_disabled_at is not None:
        w.el(
            node,
            "accountPermanentlyDisabled",
            "true",
            disabledDate=xml_datetime(user.permanently_disabled_at),
        )
    loc = user.location
    if loc is not None:
        attrs = {}
        if loc.verified is not None:
            attrs["verified"] = _bool(loc.verified)
        if loc.at is not None:
            attrs["timestamp"] = xml_datetime(loc.at)
        where = w.el(node, "estimatedLocation", **attrs)
        w.opt(where, "city", loc.city)
        w.opt(where, "region", loc.region)
        if loc.country is not None:
            if not _COUNTRY.match(loc.country):
                raise InputError(f"country {loc.country!r} is not ISO 3166 alpha-2")
            w.el(where, "countryCode", loc.country)


def report_tree(content: ReportContent) -> Any:
    """The ``<report>`` element for ``content`` (not yet validated)."""
    w = _Writer()
    root = w.etree.Element("report")
    if content.batched_viral:
        w.el(root, "batchedReport", reason="VIRAL_POTENTIAL_MEME")
    summary = w.el(root, "incidentSummary")
    w.el(summary, "incidentType", content.incident_type.value)
    w.opt(summary, "platform", content.platform)
    w.opt(summary, "escalateToHighPriority", content.escalation_reason)
    if content.annotations:
        tags = w.el(summary, "reportAnnotations")
        for tag in sorted(a.value for a in content.annotations):
            w.el(tags, tag, "true")
    w.el(summary, "incidentDateTime", xml_datetime(content.incident_at))
    internet = w.el(root, "internetDetails")
    page = w.el(internet, "webPageIncident")
    for url in content.urls:
        w.el(page, "url", url)
    _reporter(w, root, content.reporter)
    for user in content.users:
        _user(w, root, user)
    info = f"{REFERENCE_PREFIX}{content.report_id}"
    if content.additional_info:
        info = f"{info}\n{content.additional_info}"
    w.el(root, "additionalInfo", info)
    return root


def _serialize(root: Any) -> bytes:
    data: bytes = _etree().tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data


def build_report(content: ReportContent, *, validate: bool = True) -> bytes:
    """The ``<report>`` document (UTF-8 bytes), validated against the schema."""
    if not content.files:
        raise InputError("a report needs at least one file")
    root = report_tree(content)
    if validate:
        validate_tree(root)
    return _serialize(root)


_ANNOTATION_ORDER = {a: i for i, a in enumerate(FileAnnotation)}


def file_details_tree(file: ReportedFile, *, report_id: int, file_id: str) -> Any:
    """The ``<fileDetails>`` element of one uploaded file (not yet validated)."""
    w = _Writer()
    root = w.etree.Element("fileDetails")
    w.el(root, "reportId", str(report_id))
    w.el(root, "fileId", file_id)
    w.el(root, "originalFileName", file.file_name)
    if file.uploaded_at is not None:
        w.el(root, "uploadedToEspTimestamp", xml_datetime(file.uploaded_at))
    w.opt(root, "locationOfFile", file.location)
    # Always explicit, never omitted: "not viewed" must be said (see ReportedFile).
    w.el(root, "fileViewedByEsp", _bool(file.viewed_by_esp))
    w.el(root, "exifViewedByEsp", _bool(file.exif_viewed_by_esp))
    if file.publicly_available is not None:
        w.el(root, "publiclyAvailable", _bool(file.publicly_available))
    tags = set(file.annotations)
    if file.potential_meme and tags:
        tags.add(FileAnnotation.POTENTIAL_MEME)
    if tags:
        # the schema allows potentialMeme OR fileAnnotations; the annotations carry it
        node = w.el(root, "fileAnnotations")
        for tag in sorted(tags, key=_ANNOTATION_ORDER.__getitem__):
            w.el(node, tag.value, "true")
    else:
        w.el(root, "potentialMeme", _bool(file.potential_meme))
    if file.classification is not None:
        w.el(root, "industryClassification", file.classification.value)
    w.el(root, "originalFileHash", file.md5, hashType="MD5")
    w.el(root, "originalFileHash", file.sha1, hashType="SHA1")
    if file.upload_ip is not None:
        _ip_event(w, root, file.upload_ip)
    if file.hashes:
        details = w.el(root, "details", type="HASH")
        for name, value in file.hashes:
            pair = w.el(details, "nameValuePair")
            w.el(pair, "name", name)
            w.el(pair, "value", value)
    return root


def build_file_details(
    file: ReportedFile, *, report_id: int, file_id: str, validate: bool = True
) -> bytes:
    """The ``<fileDetails>`` document for the receiver's ``report_id`` and ``file_id``."""
    root = file_details_tree(file, report_id=report_id, file_id=file_id)
    if validate:
        validate_tree(root)
    return _serialize(root)
