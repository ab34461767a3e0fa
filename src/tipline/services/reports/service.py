"""Report use cases: queue a built report for delivery, list, show, download, retract,
retry. Each CLI command and API route calls one function here."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from ulid import ULID

from tipline.errors import InputError
from tipline.services import audit
from tipline.services.auth import Principal
from tipline.services.reports import builder
from tipline.services.reports.evidence import EvidenceFiles
from tipline.services.reports.model import ReportContent, ReportedFile, file_to_json
from tipline.services.reports.outbox import ReportStatus, Step
from tipline.store.base import utcnow
from tipline.store.reports import ReportFileRow, ReportOutboxRow, ReportRow


class ReportKind(enum.Enum):
    """Why a report exists."""

    REVIEW = "review"  # a reviewer confirmed the match
    AUTO = "auto"  # auto-report policy: exact match of a trusted, confirmed entry
    BUNDLE = "bundle"  # viral bundle of one perceptual cluster


@dataclass(frozen=True, slots=True)
class FileDigests:
    """MD5 and SHA-1 (hex) and size (bytes) of a file as uploaded."""

    md5: str
    sha1: str
    size: int


def digests(data: bytes) -> FileDigests:
    """The hashes a report carries for ``data``."""
    return FileDigests(
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        size=len(data),
    )


def new_report_id() -> str:
    """A new report id (ULID)."""
    return str(ULID())


def queue_report(
    session: Session,
    content: ReportContent,
    evidence_ids: Sequence[str],
    *,
    kind: ReportKind,
    source: str,
    tenant: str | None,
    actor: str | Principal,
    evidence: EvidenceFiles,
) -> ReportRow:
    """Build and validate ``content``'s XML, store the report with its files and queue
        its delivery, all in the caller's transaction (audited as ``report.create``); the XML
    is also preserved in ``evidence``.

        ``evidence_ids[i]`` names the stored bytes of ``content.files[i]``, whose MD5 and
        SHA-1 the caller computed from those bytes.
    """
    if len(evidence_ids) != len(content.files):
        raise InputError("one evidence id per report file is needed")
    xml = builder.build_report(content)
    now = utcnow()
    report = ReportRow(
        id=content.report_id,
        tenant=tenant,
        kind=kind.value,
        status=ReportStatus.QUEUED.value,
        source=source[:128],
        xml=xml.decode("utf-8"),
        xml_sha256=hashlib.sha256(xml).hexdigest(),
        remote_id=None,
        orphans=0,
        created_at=now,
        created_by=actor.key_id if isinstance(actor, Principal) else actor,
    )
    session.add(report)
    session.flush()
    for seq, (file, evidence_id) in enumerate(zip(content.files, evidence_ids, strict=True)):
        _check_file(file)
        session.add(
            ReportFileRow(
                report_id=report.id,
                seq=seq,
                submission_id=file.submission_id,
                evidence_id=evidence_id,
                file_name=file.file_name,
                size=file.size,
                md5=file.md5,
                sha1=file.sha1,
                details=file_to_json(file),
                remote_file_id=None,
                described=False,
            )
        )
    session.add(
        ReportOutboxRow(
            report_id=report.id,
            tenant=tenant,
            step=Step.SUBMIT.value,
            file_seq=0,
            inflight=False,
            final_retract=False,
            attempts=0,
            next_at=now,
        )
    )
    session.flush()
    evidence.keep_report_xml(session, tenant, report.id, xml)
    audit.append(
        session,
        actor=actor,
        action="report.create",
        target=("report", report.id),
        details={
            "kind": kind.value,
            "source": source,
            "files": len(content.files),
            "xml_sha256": report.xml_sha256,
            "viewed": [f.viewed_by_esp for f in content.files],
        },
        tenant=tenant,
    )
    return report


def _check_file(file: ReportedFile) -> None:
    if len(file.md5) != 32 or len(file.sha1) != 40:
        raise InputError(f"{file.file_name}: MD5/SHA-1 must be 32/40 hex digits")
