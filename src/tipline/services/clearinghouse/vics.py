"""Project VIC's VICS 2.0 JSON (a "Cases" document) for a referral, which forensic
tools such as Griffeye Analyze import.

The document is one case (``value[0]``) whose ``Media`` are keyed by MD5: files of a
report with the same bytes become one ``Media`` with several ``MediaFiles``. Each
Media carries ``MediaID``, ``MD5`` and ``SHA1`` (upper-case hex, as Project VIC hash
sets write them), ``MediaSize`` (bytes), ``MimeType``, the other digests and the PDQ
hash as ``AlternativeHashes``, and ``RelativeFilePath`` only when the file itself is in
the package. ``Category`` is left out: the clearinghouse does not categorise content
(a tool reads a Media without one as uncategorised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tipline import __version__

#: the OData context of a VICS 2.0 cases document
VICS_CONTEXT = (
    "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/CUSTOM/$metadata#Cases"
)
_MIME = {"photo": "image/jpeg", "video": "video/mp4"}
_MIME_BY_SUFFIX = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".heic": "image/heic",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
}


@dataclass(frozen=True, slots=True)
class VicsFile:
    """What the export needs of one file of the report."""

    file_id: str
    file_name: str
    size: int
    md5: str
    sha1: str
    sha256: str
    media: str | None
    pdq: str | None
    uploaded_at: datetime
    #: path inside the package when the file itself is included
    member: str | None
    comment: str | None = None


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _mime(file: VicsFile) -> str:
    lower = file.file_name.lower()
    for suffix, mime in _MIME_BY_SUFFIX.items():
        if lower.endswith(suffix):
            return mime
    return _MIME.get(file.media or "", "application/octet-stream")


def vics_case(
    *,
    case_id: str,
    case_number: str,
    report_path: str,
    files: Sequence[VicsFile],
    contact_organization: str | None = None,
) -> dict[str, Any]:
    """The VICS 2.0 document of one referral; ``report_path`` prefixes each
    ``MediaFiles[].FilePath`` (where the file sat: the intake report and file id)."""
    by_md5: dict[str, dict[str, Any]] = {}
    for file in files:
        key = file.md5.upper()
        media = by_md5.get(key)
        if media is None:
            alternative = [{"HashName": "SHA256", "HashValue": file.sha256.upper()}]
            if file.pdq:
                alternative.append({"HashName": "PDQ", "HashValue": file.pdq.lower()})
            media = {
                "MediaID": len(by_md5) + 1,
                "MD5": key,
                "SHA1": file.sha1.upper(),
                "MediaSize": file.size,
                "MimeType": _mime(file),
                "DateUpdated": _when(file.uploaded_at),
                "AlternativeHashes": alternative,
                "MediaFiles": [],
            }
            if file.member is not None:
                media["RelativeFilePath"] = file.member
            if file.comment:
                media["Comments"] = file.comment
            by_md5[key] = media
        media["MediaFiles"].append(
            {
                "MD5": key,
                "FileName": file.file_name,
                "FilePath": f"{report_path}/{file.file_id}",
                "Created": _when(file.uploaded_at),
            }
        )
    case: dict[str, Any] = {
        "CaseID": case_id,
        "CaseNumber": case_number,
        "SourceApplicationName": "tipline",
        "SourceApplicationVersion": __version__,
        "Media": list(by_md5.values()),
    }
    if contact_organization:
        case["ContactOrganization"] = contact_organization
    return {"@odata.context": VICS_CONTEXT, "value": [case]}
