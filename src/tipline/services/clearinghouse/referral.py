"""Referral packages: what the clearinghouse hands to the agency a report was routed to.

One zip per package:

* ``report.json`` — the report's facts, every file with all its hashes, the routing
  decision with its explanation, and whether media is inside;
* ``summary.pdf`` — the same for a human reader;
* ``custody.json`` — the chain of custody: every audit record about the report, its
  files and their evidence-vault items, from intake up to packaging (each record with
  its chain hashes, re-checked while packaging);
* ``vics.json`` — a Project VIC VICS 2.0 export (see :mod:`.vics`);
* ``xml/`` — the report and file-details documents exactly as received;
* ``media/`` — the files themselves, only when the routing rule's agency allows media;
* ``SHA256SUMS`` — the SHA-256 of every other member (``sha256sum -c`` reads it).

Media is read from the evidence vault with the caller's permission (each read audited
as ``vault.read``); the package's own SHA-256 and members are recorded and audited as
``referral.package`` on the report, after the zip is complete (so that record is the
one custody record a package cannot contain).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import ConflictError, InputError, NotFoundError, PermissionDeniedError
from tipline.services import audit, vault
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import queue, routing
from tipline.services.clearinghouse.summary_pdf import summary_pdf
from tipline.services.clearinghouse.vics import VicsFile, vics_case
from tipline.services.reports.builder import parse_untrusted
from tipline.store.audit import AuditRecord
from tipline.store.base import utcnow
from tipline.store.clearinghouse import IntakeFileRow, IntakeProviderRow, IntakeReportRow
from tipline.store.db import transaction
from tipline.store.referrals import ReferralPackageRow

FORMAT = "tipline-referral/1"
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")
_DEFAULT_SUFFIX = {"photo": ".jpg", "video": ".mp4"}


@dataclass(frozen=True, slots=True)
class ReferralInfo:
    """A package as built."""

    id: str
    report_id: int
    decision_id: str
    agency: str
    sha256: str
    size: int
    media_files: int
    members: tuple[str, ...]
    created_at: datetime
    created_by: str
    path: Path

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (without the local path)."""
        return {
            "id": self.id,
            "report_id": self.report_id,
            "decision_id": self.decision_id,
            "agency": self.agency,
            "sha256": self.sha256,
            "size": self.size,
            "media_files": self.media_files,
            "members": list(self.members),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


def _member_of(row: IntakeFileRow) -> str:
    found = _SUFFIX.search(row.file_name or "")
    suffix = found.group(0).lower() if found else _DEFAULT_SUFFIX.get(row.media or "", ".bin")
    return f"media/{row.id}{suffix}"


def _details(xml: str | None) -> dict[str, Any]:
    """What a ``fileDetails`` document says, as plain values."""
    if not xml:
        return {}
    root = parse_untrusted(xml.encode("utf-8"))
    notes = root.find("fileAnnotations")
    return {
        "original_file_name": root.findtext("originalFileName"),
        "uploaded_to_esp_at": root.findtext("uploadedToEspTimestamp"),
        "file_viewed_by_esp": root.findtext("fileViewedByEsp"),
        "potential_meme": root.findtext("potentialMeme"),
        "industry_classification": root.findtext("industryClassification"),
        "annotations": sorted(child.tag for child in notes) if notes is not None else [],
        "location": root.findtext("locationOfFile"),
    }


def _facts(xml: str) -> dict[str, Any]:
    """What a ``<report>`` says that a reader needs first."""
    root = parse_untrusted(xml.encode("utf-8"))
    notes = root.find("incidentSummary/reportAnnotations")
    persons = []
    for person in root.findall("personOrUserReported"):
        persons.append(
            {
                "esp_identifier": person.findtext("espIdentifier"),
                "esp_service": person.findtext("espService"),
                "screen_name": person.findtext("screenName"),
                "emails": [e.text for e in person.findall("personOrUserReportedPerson/email")],
                "ip_events": [
                    {
                        "ip": node.findtext("ipAddress"),
                        "event": node.findtext("eventName"),
                        "at": node.findtext("dateTime"),
                    }
                    for node in person.findall("ipCaptureEvent")
                ],
            }
        )
    return {
        "incident_type": root.findtext("incidentSummary/incidentType"),
        "incident_at": root.findtext("incidentSummary/incidentDateTime"),
        "platform": root.findtext("incidentSummary/platform"),
        "escalate_to_high_priority": root.findtext("incidentSummary/escalateToHighPriority"),
        "annotations": sorted(child.tag for child in notes) if notes is not None else [],
        "batched_report": root.find("batchedReport") is not None,
        "persons_reported": persons,
    }


def _pdq(row: IntakeFileRow) -> str | None:
    for signal in row.signals or []:
        if signal.get("type") == "pdq" and not signal.get("variant"):
            value = signal.get("value")
            return str(value) if value else None
    return None


def _custody(session: Session, report_id: int, files: list[IntakeFileRow]) -> list[dict[str, Any]]:
    """Every audit record about the report, its files and their vault items, by seq,
    each with ``hash_ok``: its hash recomputed from its fields."""
    targets = [("intake_report", str(report_id))]
    targets += [("intake_file", f.id) for f in files]
    targets += [(vault.TARGET, f.vault_id) for f in files]
    condition = or_(
        *(and_(AuditRecord.target_type == t, AuditRecord.target_id == i) for t, i in targets)
    )
    records = session.scalars(select(AuditRecord).where(condition).order_by(AuditRecord.seq))
    out = []
    for record in records:
        entry = audit.record_as_dict(record)
        entry["hash_ok"] = (
            audit.record_hash(
                seq=record.seq,
                at=record.at,
                actor=record.actor,
                tenant=record.tenant,
                action=record.action,
                target_type=record.target_type,
                target_id=record.target_id,
                details=record.details,
                prev_hash=record.prev_hash,
            )
            == record.hash
        )
        out.append(entry)
    return out


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


class _Zip:
    """A zip being written, remembering each member's SHA-256."""

    def __init__(self, handle: Any, when: datetime) -> None:
        self.zip = zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED)
        self.when = when.timetuple()[:6]
        self.sums: dict[str, str] = {}

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.when)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add(self, name: str, data: bytes) -> None:
        self.zip.writestr(self._info(name, compress=True), data)
        self.sums[name] = hashlib.sha256(data).hexdigest()

    def add_stream(self, name: str, chunks: Any) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        with self.zip.open(self._info(name, compress=False), "w", force_zip64=True) as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        self.sums[name] = digest.hexdigest()
        return size, self.sums[name]

    def close(self) -> None:
        listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(self.sums.items()))
        self.zip.writestr(self._info("SHA256SUMS", compress=True), listing.encode())
        self.zip.close()


def build_referral(
    sessions: sessionmaker[Session],
    the_vault: vault.Vault,
    report_id: int,
    out: Path,
    *,
    actor: Principal,
    media: bool | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReferralInfo:
    """Write the referral package of a routed report to ``out`` (must not exist).

    ``media`` None follows the routing rule (media in when its agency allows it); True
    asks for media and is refused (:class:`PermissionDeniedError`) when the rule does
    not allow it; False leaves media out. The actor needs ``route`` and no tenant; media
    also needs ``evidence.read``. A report never
    routed, or routed nowhere, has no package (:class:`ConflictError`).
    """
    queue.require(actor, Permission.ROUTE)
    if out.exists():
        raise InputError(f"{out}: already exists")
    decision = routing.latest_decision(sessions, report_id)
    if decision.agency is None:
        raise ConflictError(
            f"intake report {report_id} is unrouted ({decision.explanation.get('summary')}); "
            "route it to an agency first"
        )
    if media and not decision.media_allowed:
        raise PermissionDeniedError(
            f"the routing rule for {decision.agency} does not allow media in its packages"
        )
    with_media = decision.media_allowed if media is None else media
    if with_media:
        actor.require(Permission.EVIDENCE_READ)
    with sessions() as session:
        report = session.get(IntakeReportRow, report_id)
        if report is None:  # pragma: no cover - a decision implies the report
            raise NotFoundError(f"intake report {report_id} does not exist")
        provider = session.get(IntakeProviderRow, report.provider_id)
        files = list(
            session.scalars(
                select(IntakeFileRow)
                .where(IntakeFileRow.report_id == report_id)
                .order_by(IntakeFileRow.uploaded_at, IntakeFileRow.id)
            )
        )
        for row in files:
            session.expunge(row)
        session.expunge(report)
    referral_id = str(ULID())
    created_at = clock()
    tmp = out.with_name(f".{out.name}.{os.urandom(4).hex()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            package = _Zip(handle, created_at)
            described: list[dict[str, Any]] = []
            vics_files = []
            for row in files:
                member = _member_of(row) if with_media else None
                if member is not None:
                    _info, chunks = vault.open_content(
                        sessions, the_vault, row.vault_id, actor=actor
                    )
                    _size, sha = package.add_stream(member, chunks)
                    if sha != row.sha256:
                        raise ConflictError(f"file {row.id}: vault content does not match its hash")
                details = _details(row.details_xml)
                described.append(
                    {
                        "file_id": row.id,
                        "name": row.file_name,
                        "size": row.size,
                        "md5": row.md5,
                        "sha1": row.sha1,
                        "sha256": row.sha256,
                        "media": row.media,
                        "signals": row.signals,
                        "hash_error": row.hash_error,
                        "uploaded_at": row.uploaded_at.isoformat(),
                        "vault_id": row.vault_id,
                        "member": member,
                        "details": details,
                    }
                )
                classification = details.get("industry_classification")
                vics_files.append(
                    VicsFile(
                        file_id=row.id,
                        file_name=row.file_name,
                        size=row.size,
                        md5=row.md5,
                        sha1=row.sha1,
                        sha256=row.sha256,
                        media=row.media,
                        pdq=_pdq(row),
                        uploaded_at=row.uploaded_at,
                        member=member,
                        comment=(
                            f"industryClassification {classification}" if classification else None
                        ),
                    )
                )
                if row.details_xml:
                    package.add(f"xml/{row.id}.fileDetails.xml", row.details_xml.encode("utf-8"))
            package.add("xml/report.xml", report.xml.encode("utf-8"))
            facts = {
                "id": report_id,
                "provider": provider.name if provider else None,
                "status": report.status,
                "received_at": report.created_at.isoformat(),
                "finished_at": report.finished_at.isoformat() if report.finished_at else None,
                "incident_type": report.incident_type,
                "xml_sha256": report.xml_sha256,
                "facts": _facts(report.xml),
            }
            with sessions() as session:
                custody = _custody(session, report_id, files)
            routed = decision.as_dict()
            package.add(
                "report.json",
                _json_bytes(
                    {
                        "format": FORMAT,
                        "referral_id": referral_id,
                        "created_at": created_at.isoformat(),
                        "created_by": actor.key_id,
                        "report": facts,
                        "files": described,
                        "routing": routed,
                        "media_included": with_media,
                    }
                ),
            )
            package.add(
                "custody.json",
                _json_bytes(
                    {
                        "report_id": report_id,
                        "records": custody,
                        "note": "audit records up to packaging; the referral.package record "
                        "of this package follows it in the service's audit log",
                    }
                ),
            )
            package.add(
                "vics.json",
                _json_bytes(
                    vics_case(
                        case_id=str(ULID.from_str(referral_id).to_uuid()),
                        case_number=f"tipline-intake-{report_id}",
                        report_path=f"intake-report-{report_id}",
                        files=vics_files,
                    )
                ),
            )
            package.add(
                "summary.pdf",
                summary_pdf(
                    referral_id=referral_id,
                    created_at=created_at,
                    created_by=actor.key_id,
                    report=facts,
                    routing=routed,
                    files=described,
                    media_included=with_media,
                    custody_records=len(custody),
                ),
            )
            members = (*package.sums, "SHA256SUMS")
            package.close()
        digest = hashlib.sha256()
        with tmp.open("rb") as done:
            for block in iter(lambda: done.read(1024 * 1024), b""):
                digest.update(block)
        size = tmp.stat().st_size
        media_files = sum(1 for f in described if f["member"])
        with transaction(sessions) as session:
            session.add(
                ReferralPackageRow(
                    id=referral_id,
                    report_id=report_id,
                    decision_id=decision.id,
                    agency=decision.agency,
                    sha256=digest.hexdigest(),
                    size=size,
                    media_files=media_files,
                    created_at=created_at,
                    created_by=actor.key_id,
                )
            )
            session.flush()
            audit.append(
                session,
                actor=actor,
                action="referral.package",
                target=(routing.TARGET_REPORT, str(report_id)),
                details={
                    "referral": referral_id,
                    "decision": decision.id,
                    "agency": decision.agency,
                    "sha256": digest.hexdigest(),
                    "size": size,
                    "media_files": media_files,
                    "media_allowed": decision.media_allowed,
                    "members": len(members),
                },
            )
            try:
                os.link(tmp, out)
            except FileExistsError:
                raise InputError(f"{out}: already exists") from None
        tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ReferralInfo(
        id=referral_id,
        report_id=report_id,
        decision_id=decision.id,
        agency=decision.agency,
        sha256=digest.hexdigest(),
        size=size,
        media_files=media_files,
        members=tuple(members),
        created_at=created_at,
        created_by=actor.key_id,
        path=out,
    )


def list_referrals(sessions: sessionmaker[Session], report_id: int) -> list[dict[str, Any]]:
    """Packages built for a report, oldest first."""
    with sessions() as session:
        rows = session.scalars(
            select(ReferralPackageRow)
            .where(ReferralPackageRow.report_id == report_id)
            .order_by(ReferralPackageRow.created_at, ReferralPackageRow.id)
        )
        return [
            {
                "id": r.id,
                "decision_id": r.decision_id,
                "agency": r.agency,
                "sha256": r.sha256,
                "size": r.size,
                "media_files": r.media_files,
                "created_at": r.created_at.isoformat(),
                "created_by": r.created_by,
            }
            for r in rows
        ]
