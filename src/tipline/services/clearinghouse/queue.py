"""What analysts read: the triage queue, received reports, one report in full, one
cluster.

The clearinghouse's reports belong to no tenant: only keys without a tenant may read or
decide them (a tenant-bound key of a shared deployment is refused with 403). Opening a
report or a cluster shows case data and is audited (``clearinghouse.report.view``,
``clearinghouse.cluster.view``); the queue and the report list show no personal data
and are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import InputError, NotFoundError, PermissionDeniedError
from tipline.services import audit
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import links
from tipline.services.clearinghouse.facts import file_facts, report_facts
from tipline.services.clearinghouse.intake import TARGET_REPORT, pdq_decode
from tipline.store.clearinghouse import IntakeFileRow, IntakeProviderRow, IntakeReportRow
from tipline.store.clearinghouse_triage import ClusterRow, FileDedupRow, FileLinkRow, TriageRow
from tipline.store.db import transaction

#: files listed in one cluster view at most
MAX_CLUSTER_FILES = 1000
TARGET_CLUSTER = "intake_cluster"
STATUSES = ("open", "finished", "retracted")


def require(who: Principal, permission: Permission) -> None:
    """:class:`PermissionDeniedError` unless ``who`` may ``permission`` and is bound to
    no tenant (the clearinghouse's reports are nobody's tenant data)."""
    who.require(permission)
    if who.tenant is not None:
        raise PermissionDeniedError(
            "the clearinghouse's reports belong to no tenant: use a key without a tenant"
        )


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A triaged report waiting for an analyst, with its score's factors."""

    report_id: int
    provider: str
    incident_type: str | None
    finished_at: datetime | None
    triaged_at: datetime
    status: str
    score: float
    factors: list[dict[str, Any]]
    files: int
    new_files: int
    known_files: int
    linked_reports: int


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """A received report as listed: state, provider, and its triage when triaged."""

    report_id: int
    provider: str
    status: str
    incident_type: str | None
    files: int
    created_at: datetime
    finished_at: datetime | None
    retracted_at: datetime | None
    triage_status: str | None
    score: float | None


def _providers(session: Session) -> dict[str, str]:
    return {
        str(i): str(n)
        for i, n in session.execute(select(IntakeProviderRow.id, IntakeProviderRow.name))
    }


def queue(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    status: str = "pending",
    limit: int = 100,
    offset: int = 0,
) -> list[QueueItem]:
    """Triaged reports of ``status`` (pending: the queue), highest score first (then
    oldest first)."""
    require(who, Permission.INTAKE_READ)
    if status not in ("pending", "confirmed", "rejected"):
        raise InputError("status must be pending, confirmed or rejected")
    if not 1 <= limit <= 1000 or offset < 0:
        raise InputError("limit must be 1-1000 and offset at least 0")
    with sessions() as session:
        names = _providers(session)
        rows = session.execute(
            select(TriageRow, IntakeReportRow)
            .join(IntakeReportRow, IntakeReportRow.id == TriageRow.report_id)
            .where(TriageRow.status == status)
            .order_by(TriageRow.score.desc(), TriageRow.report_id)
            .limit(limit)
            .offset(offset)
        ).all()
        return [
            QueueItem(
                report_id=int(t.report_id),
                provider=names.get(r.provider_id, r.provider_id),
                incident_type=r.incident_type,
                finished_at=r.finished_at,
                triaged_at=t.triaged_at,
                status=t.status,
                score=float(t.score),
                factors=list(t.factors),
                files=t.files,
                new_files=t.new_files,
                known_files=t.known_files,
                linked_reports=t.linked_reports,
            )
            for t, r in rows
        ]


def list_reports(
    sessions: sessionmaker[Session],
    who: Principal,
    *,
    status: str | None = None,
    provider: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[ReportSummary]:
    """Received reports (every state), newest first; ``before`` is a report id cursor."""
    require(who, Permission.INTAKE_READ)
    if status is not None and status not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}")
    if not 1 <= limit <= 1000:
        raise InputError("limit must be 1-1000")
    with sessions() as session:
        names = _providers(session)
        query = (
            select(IntakeReportRow, TriageRow)
            .outerjoin(TriageRow, TriageRow.report_id == IntakeReportRow.id)
            .order_by(IntakeReportRow.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(IntakeReportRow.status == status)
        if provider is not None:
            ids = [i for i, n in names.items() if n == provider]
            query = query.where(IntakeReportRow.provider_id.in_(ids))
        if before is not None:
            query = query.where(IntakeReportRow.id < before)
        rows = session.execute(query).all()
        counts = _file_counts(session, [int(r.id) for r, _ in rows])
        return [
            ReportSummary(
                report_id=int(r.id),
                provider=names.get(r.provider_id, r.provider_id),
                status=r.status,
                incident_type=r.incident_type,
                files=counts.get(int(r.id), 0),
                created_at=r.created_at,
                finished_at=r.finished_at,
                retracted_at=r.retracted_at,
                triage_status=t.status if t is not None else None,
                score=float(t.score) if t is not None else None,
            )
            for r, t in rows
        ]


def _file_counts(session: Session, report_ids: list[int]) -> dict[int, int]:
    from sqlalchemy import func

    if not report_ids:
        return {}
    rows = session.execute(
        select(IntakeFileRow.report_id, func.count())
        .where(IntakeFileRow.report_id.in_(report_ids))
        .group_by(IntakeFileRow.report_id)
    )
    return {int(r): int(n) for r, n in rows}


def _signals(row: IntakeFileRow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in row.signals or ():
        if item.get("variant"):
            continue
        if item.get("type") == "pdq":
            out["pdq"] = {
                "value": item.get("value"),
                "quality": item.get("quality"),
                "decode": pdq_decode(item),
            }
        elif item.get("type") == "vpdq":
            value = str(item.get("value") or "")
            out["vpdq"] = {"frames": len([x for x in value.splitlines() if x.strip()])}
    return out


def _links_of(session: Session, file_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not file_ids:
        return {}
    rows = list(session.scalars(select(FileLinkRow).where(FileLinkRow.file_id.in_(file_ids))))
    others = {r.other_file_id for r in rows}
    report_of: dict[str, int] = {}
    if others:
        query = select(IntakeFileRow.id, IntakeFileRow.report_id).where(
            IntakeFileRow.id.in_(others)
        )
        report_of = {str(f): int(r) for f, r in session.execute(query)}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.file_id, []).append(
            {
                "other_file_id": r.other_file_id,
                "other_report_id": int(report_of[r.other_file_id])
                if r.other_file_id in report_of
                else None,
                "signal": r.signal,
                "distance": r.distance,
            }
        )
    return out


def report_view(sessions: sessionmaker[Session], who: Principal, report_id: int) -> dict[str, Any]:
    """One received report in full: incident, reported persons, files with their hashes,
    de-duplication and clusters, linked reports, triage and decision (audited)."""
    require(who, Permission.INTAKE_READ)
    with transaction(sessions) as session:
        report = session.get(IntakeReportRow, report_id)
        if report is None:
            raise NotFoundError(f"no intake report {report_id}")
        names = _providers(session)
        files = list(
            session.scalars(
                select(IntakeFileRow)
                .where(IntakeFileRow.report_id == report_id)
                .order_by(IntakeFileRow.uploaded_at, IntakeFileRow.id)
            )
        )
        dedup = {
            r.file_id: r
            for r in session.scalars(
                select(FileDedupRow).where(FileDedupRow.report_id == report_id)
            )
        }
        file_links = _links_of(session, [f.id for f in files])
        triage = session.get(TriageRow, report_id)
        linked = links.linked(session, report_id)
        linked_rows = (
            {
                int(r.id): (r, t)
                for r, t in session.execute(
                    select(IntakeReportRow, TriageRow)
                    .outerjoin(TriageRow, TriageRow.report_id == IntakeReportRow.id)
                    .where(IntakeReportRow.id.in_(list(linked)))
                ).all()
            }
            if linked
            else {}
        )
        try:
            incident = report_facts(report.xml).as_json()
        except InputError:
            incident = {}
        out = {
            "report": {
                "report_id": int(report.id),
                "provider": names.get(report.provider_id, report.provider_id),
                "status": report.status,
                "created_at": report.created_at,
                "finished_at": report.finished_at,
                "retracted_at": report.retracted_at,
                "xml_sha256": report.xml_sha256,
            },
            "incident": incident,
            "triage": _triage_json(triage),
            "files": [_file_json(f, dedup.get(f.id), file_links.get(f.id, [])) for f in files],
            "linked_reports": [
                {
                    "report_id": rid,
                    "provider": names.get(linked_rows[rid][0].provider_id, "")
                    if rid in linked_rows
                    else None,
                    "score": float(linked_rows[rid][1].score)
                    if rid in linked_rows and linked_rows[rid][1] is not None
                    else None,
                    "shared": shared,
                }
                for rid, shared in sorted(linked.items())
            ],
        }
        audit.append(
            session,
            actor=who,
            action="clearinghouse.report.view",
            target=(TARGET_REPORT, str(report_id)),
        )
    return out


def _triage_json(row: TriageRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "status": row.status,
        "score": float(row.score),
        "factors": list(row.factors),
        "files": row.files,
        "new_files": row.new_files,
        "known_files": row.known_files,
        "linked_reports": row.linked_reports,
        "triaged_at": row.triaged_at,
        "decided_at": row.decided_at,
        "decided_by": row.decided_by,
        "note": row.note,
    }


def _file_json(
    row: IntakeFileRow, dedup: FileDedupRow | None, file_links: list[dict[str, Any]]
) -> dict[str, Any]:
    try:
        details = file_facts(row.details_xml).as_json()
    except InputError:
        details = {}
    return {
        "file_id": row.id,
        "file_name": row.file_name,
        "size": row.size,
        "media": row.media,
        "md5": row.md5,
        "sha1": row.sha1,
        "sha256": row.sha256,
        **_signals(row),
        "hash_error": row.hash_error,
        "vault_id": row.vault_id,
        "uploaded_at": row.uploaded_at,
        "details": details,
        "state": dedup.state if dedup else None,
        "cluster_id": int(dedup.cluster_id) if dedup else None,
        "indexed": dedup.indexed if dedup else None,
        "published": dedup.published if dedup else None,
        "known": list(dedup.known) if dedup else [],
        "links": file_links,
    }


def cluster_view(
    sessions: sessionmaker[Session], who: Principal, cluster_id: int
) -> dict[str, Any]:
    """One cluster: its files (report, provider, state, hashes) and the links that
    explain each membership; a merged cluster answers with the cluster it went into
    (``requested`` keeps the id asked for). Audited."""
    require(who, Permission.INTAKE_READ)
    with transaction(sessions) as session:
        cluster = session.get(ClusterRow, cluster_id)
        hops = 0
        while cluster is not None and cluster.merged_into is not None and hops < 64:
            cluster = session.get(ClusterRow, cluster.merged_into)
            hops += 1
        if cluster is None:
            raise NotFoundError(f"no cluster {cluster_id}")
        names = _providers(session)
        rows = session.execute(
            select(FileDedupRow, IntakeFileRow, IntakeReportRow)
            .join(IntakeFileRow, IntakeFileRow.id == FileDedupRow.file_id)
            .join(IntakeReportRow, IntakeReportRow.id == FileDedupRow.report_id)
            .where(FileDedupRow.cluster_id == cluster.id)
            .order_by(FileDedupRow.processed_at, FileDedupRow.file_id)
            .limit(MAX_CLUSTER_FILES)
        ).all()
        file_links = _links_of(session, [f.id for _, f, _ in rows])
        files = [
            {
                "file_id": f.id,
                "report_id": int(r.id),
                "provider": names.get(r.provider_id, r.provider_id),
                "state": d.state,
                "media": f.media,
                "md5": f.md5,
                "sha256": f.sha256,
                **_signals(f),
                "known": list(d.known),
                "published": d.published,
                "processed_at": d.processed_at,
                "links": file_links.get(f.id, []),
            }
            for d, f, r in rows
        ]
        out = {
            "cluster_id": int(cluster.id),
            "requested": cluster_id,
            "created_at": cluster.created_at,
            "first_file_id": cluster.first_file_id,
            "size": cluster.size,
            "reports": len({f["report_id"] for f in files}),
            "providers": len({f["provider"] for f in files}),
            "known": any(f["state"] == "known" for f in files),
            "files": files,
            "truncated": cluster.size > len(files),
        }
        audit.append(
            session,
            actor=who,
            action="clearinghouse.cluster.view",
            target=(TARGET_CLUSTER, str(cluster.id)),
        )
    return out
