"""The clearinghouse's analyst API (``/v1/clearinghouse``): the triage queue with each
score's factors, received reports (list and full view), clusters, and decisions
(confirm publishes the new material's hashes; reject). Mounted with the clearinghouse
role; keys without a tenant only (role analyst or admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, Field

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import decisions, queue
from tipline.services.clearinghouse.dedup import DedupSettings
from tipline.signals.limits import MediaLimits

router = APIRouter(prefix="/v1/clearinghouse", tags=["clearinghouse analysts"])
_read = require(Permission.INTAKE_READ)
_decide = require(Permission.INTAKE_DECIDE)
_REPORT_ID = Path(..., ge=1, le=2**63 - 1, description="the report id the intake answered")


class FactorOut(BaseModel):
    """One reason for a score: ``points`` = ``weight`` x ``value`` (value 1 for yes/no
    factors, a share in [0, 1] for linked reports and recency)."""

    name: str
    weight: float
    value: float
    points: float
    detail: str


class QueueItemOut(BaseModel):
    """A triaged report, its score and the factors that make it up."""

    report_id: int
    provider: str
    incident_type: str | None
    finished_at: datetime | None
    triaged_at: datetime
    status: Literal["pending", "confirmed", "rejected"]
    score: float
    factors: list[FactorOut]
    files: int
    new_files: int
    known_files: int
    linked_reports: int


class ReportSummaryOut(BaseModel):
    """A received report in a list."""

    report_id: int
    provider: str
    status: Literal["open", "finished", "retracted"]
    incident_type: str | None
    files: int
    created_at: datetime
    finished_at: datetime | None
    retracted_at: datetime | None
    triage_status: Literal["pending", "confirmed", "rejected"] | None
    score: float | None


class KnownMatchOut(BaseModel):
    """A match of the file in a known hash list (distance: bits for PDQ, percent for
    vPDQ, 0 for digests); ``tier`` ``region`` when it matched a crop or small rotation
    of the entry's original (named by ``region``)."""

    bank: str
    entry_id: str
    signal: str
    distance: int
    labels: list[str]
    tier: str | None = None
    region: str | None = None


class FileLinkOut(BaseModel):
    """An earlier received file this file matched: why it is in its cluster."""

    other_file_id: str
    other_report_id: int | None
    signal: str
    distance: int


class PdqOut(BaseModel):
    """The file's PDQ hash (64 hex), its quality (0-100) and the decode it was computed
    with: ``fast`` (reduced JPEG decode, a few bits from the reference; its published
    hash is recomputed with the reference decode) or ``exact``."""

    value: str
    quality: int | None
    decode: Literal["fast", "exact"] = "exact"


class VpdqOut(BaseModel):
    """The file's vPDQ hash: number of hashed frames."""

    frames: int


class IntakeFileOut(BaseModel):
    """A file of the report: hashes, the provider's file details, de-duplication."""

    file_id: str
    file_name: str
    size: int
    media: str | None
    md5: str
    sha1: str
    sha256: str
    pdq: PdqOut | None = None
    vpdq: VpdqOut | None = None
    hash_error: str | None
    vault_id: str
    uploaded_at: datetime
    details: dict[str, Any]
    state: Literal["known", "seen", "new"] | None
    cluster_id: int | None
    indexed: bool | None
    published: bool | None
    known: list[KnownMatchOut]
    links: list[FileLinkOut]


class IdentifierOut(BaseModel):
    """A normalised identifier two reports share."""

    kind: Literal["account", "screen_name", "email", "ip", "device"]
    value: str


class LinkedReportOut(BaseModel):
    """Another report sharing an identifier with this one."""

    report_id: int
    provider: str | None
    score: float | None
    shared: list[IdentifierOut]


class IntakeReportOut(BaseModel):
    """The report's state at the intake."""

    report_id: int
    provider: str
    status: Literal["open", "finished", "retracted"]
    created_at: datetime
    finished_at: datetime | None
    retracted_at: datetime | None
    xml_sha256: str


class TriageOut(BaseModel):
    """The report's triage and the analyst's decision."""

    status: Literal["pending", "confirmed", "rejected"]
    score: float
    factors: list[FactorOut]
    files: int
    new_files: int
    known_files: int
    linked_reports: int
    triaged_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None


class ReportViewOut(BaseModel):
    """One received report in full. ``incident``: incident type and time, platform,
    escalation, report annotations, batched reason and the reported persons (ids,
    screen names, emails, IP capture events, devices) as the provider gave them."""

    report: IntakeReportOut
    incident: dict[str, Any]
    triage: TriageOut | None
    files: list[IntakeFileOut]
    linked_reports: list[LinkedReportOut]


class ClusterFileOut(BaseModel):
    """A file of a cluster, with the links that explain its membership."""

    file_id: str
    report_id: int
    provider: str
    state: Literal["known", "seen", "new"]
    media: str | None
    md5: str
    sha256: str
    pdq: PdqOut | None = None
    vpdq: VpdqOut | None = None
    known: list[KnownMatchOut]
    published: bool
    processed_at: datetime
    links: list[FileLinkOut]


class ClusterOut(BaseModel):
    """A cluster: the same picture or video across reports and providers. A merged
    cluster answers with the cluster it went into (``requested``: the id asked for)."""

    cluster_id: int
    requested: int
    created_at: datetime
    first_file_id: str
    size: int
    reports: int
    providers: int
    known: bool
    truncated: bool
    files: list[ClusterFileOut]


class ConfirmIn(BaseModel):
    """Confirm a report. ``files``: the files to publish (default: every file not in a
    known hash list); ``classification`` labels the published entries."""

    files: list[str] | None = Field(default=None, max_length=10_000)
    classification: Literal["A1", "A2", "B1", "B2"] | None = None
    note: str | None = Field(default=None, max_length=decisions.MAX_NOTE_CHARS)


class RejectIn(BaseModel):
    """Reject a report."""

    note: str | None = Field(default=None, max_length=decisions.MAX_NOTE_CHARS)


class DecisionOut(BaseModel):
    """The decision taken and, for a confirmation, the entries (SHA-256 of the files)
    added to the hash list and those already in it."""

    report_id: int
    status: Literal["confirmed", "rejected"]
    decided_by: str
    decided_at: datetime
    note: str | None
    bank: str | None
    published: list[str]
    already_published: list[str]

    @classmethod
    def of(cls, d: decisions.Decision) -> DecisionOut:
        """Wire form of a decision."""
        return cls.model_validate(d, from_attributes=True)


@router.get("/queue", response_model=list[QueueItemOut], responses=problems())
def triage_queue(
    status: Literal["pending", "confirmed", "rejected"] = Query("pending"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> list[QueueItemOut]:
    """Triaged reports waiting for an analyst (or decided ones), highest score first,
    each with the factors of its score and their weights."""
    items = queue.queue(ctx.sessions, who, status=status, limit=limit, offset=offset)
    return [QueueItemOut.model_validate(i, from_attributes=True) for i in items]


@router.get("/reports", response_model=list[ReportSummaryOut], responses=problems())
def list_intake_reports(
    status: Literal["open", "finished", "retracted"] | None = Query(None),
    provider: str | None = Query(None, max_length=64),
    before: int | None = Query(None, ge=1, le=2**63 - 1, description="report id cursor"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> list[ReportSummaryOut]:
    """Received reports in every state, newest first."""
    rows = queue.list_reports(
        ctx.sessions, who, status=status, provider=provider, before=before, limit=limit
    )
    return [ReportSummaryOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/reports/{report_id}", response_model=ReportViewOut, responses=problems(404))
def show_intake_report(
    report_id: int = _REPORT_ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> ReportViewOut:
    """One report: incident, reported persons, files with hashes, de-duplication and
    clusters, linked reports, triage and decision (audited)."""
    return ReportViewOut.model_validate(queue.report_view(ctx.sessions, who, report_id))


@router.get("/clusters/{cluster_id}", response_model=ClusterOut, responses=problems(404))
def show_cluster(
    cluster_id: int = Path(..., ge=1, le=2**63 - 1),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> ClusterOut:
    """One cluster's files with the links (signal, distance) explaining each (audited)."""
    return ClusterOut.model_validate(queue.cluster_view(ctx.sessions, who, cluster_id))


@router.post(
    "/reports/{report_id}/confirm", response_model=DecisionOut, responses=problems(404, 409)
)
def confirm_report(
    report_id: int = _REPORT_ID,
    body: ConfirmIn = Body(default_factory=ConfirmIn),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_decide),
) -> DecisionOut:
    """Confirm a pending report: its new material's hashes go into the clearinghouse's
    hash list (``TIPLINE_CLEARINGHOUSE_PUBLISH_BANK``). 409 once decided."""
    return DecisionOut.of(
        decisions.confirm(
            ctx.sessions,
            who,
            report_id,
            bank=ctx.settings.clearinghouse_publish_bank,
            settings=DedupSettings.of(ctx.settings),
            vault=ctx.vault(),
            limits=MediaLimits.of(ctx.settings),
            file_ids=body.files,
            classification=body.classification,
            note=body.note,
        )
    )


@router.post(
    "/reports/{report_id}/reject", response_model=DecisionOut, responses=problems(404, 409)
)
def reject_report(
    report_id: int = _REPORT_ID,
    body: RejectIn = Body(default_factory=RejectIn),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_decide),
) -> DecisionOut:
    """Reject a pending report (nothing is published). 409 once decided."""
    return DecisionOut.of(decisions.reject(ctx.sessions, who, report_id, note=body.note))
