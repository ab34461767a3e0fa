"""CyberTipline reports (``/v1/reports``): build one from a confirmed decision (or many
at once, ``POST /v1/reports/batch``, the twin of ``tipline report create-many``), list
them with their delivery state, show one, download its XML, retract, retry, and read
the operator queue. Delivery itself runs in ``tipline report deliver``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services.auth import Permission, Principal
from tipline.services.reports import batch, service
from tipline.services.reports.outbox import ReportStatus

router = APIRouter(prefix="/v1", tags=["reports"])
_report = require(Permission.REPORT)
_ID = Path(..., min_length=1, max_length=26, description="report id (ULID)")


class ReportOut(BaseModel):
    """A report and its delivery state. ``step`` is the next ISPWS call (null when no
    delivery work is left; ``held`` while a match-time viral bundle collects uploads,
    until ``next_attempt_at``); ``orphans`` counts submits whose answer was lost (each may
    have left an open report on the receiver, which is never finished)."""

    id: str
    tenant: str | None
    kind: Literal["review", "auto", "bundle"]
    status: Literal["queued", "delivering", "finished", "failed", "retracted"]
    source: str
    remote_id: int | None
    orphans: int
    files: int
    created_at: datetime
    finished_at: datetime | None
    retracted_at: datetime | None
    last_error: str | None
    step: str | None
    attempts: int
    next_attempt_at: datetime | None
    held_uploads: int | None = Field(
        default=None,
        description="while held: uploads collected so far (its document is built at "
        "release; null otherwise)",
    )
    held_accounts: int | None = Field(
        default=None, description="while held: distinct uploader accounts so far"
    )

    @classmethod
    def of(cls, s: service.ReportSummary) -> ReportOut:
        """Wire form of a summary."""
        return cls.model_validate(s, from_attributes=True)


class ReportDetailOut(BaseModel):
    """One report with its files, step log and operator-queue items."""

    report: ReportOut
    files: list[dict[str, Any]]
    events: list[dict[str, Any]]
    operator_items: list[dict[str, Any]]


class OperatorItemOut(BaseModel):
    """A report waiting for a person: the receiver's refusal or the last error."""

    id: str
    report_id: str
    step: str
    response_code: int | None
    message: str
    created_at: datetime


@router.post(
    "/decisions/{decision_id}/report",
    response_model=ReportOut,
    status_code=201,
    responses=problems(404, 409, 503),
)
def report_decision(
    decision_id: str = Path(..., min_length=1, max_length=26),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> ReportOut:
    """Build and queue the report of a confirmed decision (one per decision; asking
    again returns it). Files are reported as viewed only when the decision says so."""
    return ReportOut.of(
        service.create_from_decision(ctx.sessions, who, decision_id, settings=ctx.settings)
    )


#: decisions one batch request may name (``tipline report create-many`` takes more)
MAX_BATCH = 1000


class BatchReportIn(BaseModel):
    """Confirmed decisions to report, each in its own report."""

    model_config = ConfigDict(extra="forbid")

    decisions: list[
        Annotated[str, StringConstraints(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")]
    ] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"decision ids (ULIDs; 1 to {MAX_BATCH}); a repeated id is answered once "
        "per mention",
    )
    batch_size: int = Field(
        64, ge=1, le=MAX_BATCH, description="decisions per database transaction"
    )


class BatchOutcomeOut(BaseModel):
    """One decision's result: its report (made now, or the one already made for it), or
    why none was made (``error``: not found or another tenant's, not confirmed, a file
    already reported, no stored media, a fact the schema refuses)."""

    decision_id: str
    report: ReportOut | None
    error: str | None


class BatchReportOut(BaseModel):
    """Every decision's outcome, in the order asked; ``failed`` counts the errors."""

    reported: int
    failed: int
    outcomes: list[BatchOutcomeOut]


@router.post(
    "/reports/batch",
    response_model=BatchReportOut,
    responses=problems(503),
)
def report_decisions(
    body: BatchReportIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> BatchReportOut:
    """Build and queue the reports of many confirmed decisions, ``batch_size`` per
    transaction (as ``tipline report create-many``). A decision that cannot be reported
    is answered with its error and does not stop the others; a decision of another
    tenant is answered as not found. 200 even when some failed: read ``failed``."""
    outcomes = batch.create_from_decisions(
        ctx.sessions,
        who,
        body.decisions,
        settings=ctx.settings,
        batch_size=body.batch_size,
        threads=2,
    )
    out = [
        BatchOutcomeOut(
            decision_id=o.decision_id,
            report=ReportOut.of(o.report) if o.report is not None else None,
            error=o.error,
        )
        for o in outcomes
    ]
    failed = sum(1 for o in out if o.report is None)
    return BatchReportOut(reported=len(out) - failed, failed=failed, outcomes=out)


@router.get("/reports", response_model=list[ReportOut], responses=problems())
def list_reports(
    status: Literal["queued", "delivering", "finished", "failed", "retracted"] | None = Query(None),
    before: str | None = Query(None, max_length=26, description="id cursor (exclusive)"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> list[ReportOut]:
    """Reports of the tenant, newest first, with their delivery state."""
    rows = service.list_reports(
        ctx.sessions,
        who,
        status=ReportStatus(status) if status else None,
        before=before,
        limit=limit,
    )
    return [ReportOut.of(r) for r in rows]


@router.get("/reports/operator-queue", response_model=list[OperatorItemOut], responses=problems())
def operator_queue(
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> list[OperatorItemOut]:
    """Reports the receiver refused or that ran out of retries, oldest first."""
    return [
        OperatorItemOut.model_validate(i)
        for i in service.operator_queue(ctx.sessions, who, limit=limit)
    ]


@router.get("/reports/{report_id}", response_model=ReportDetailOut, responses=problems(404))
def show_report(
    report_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> ReportDetailOut:
    """One report: files (hashes, viewed flag, receiver's file id), step log, operator
    items."""
    detail = service.get_report(ctx.sessions, who, report_id)
    return ReportDetailOut(
        report=ReportOut.of(detail.summary),
        files=detail.files,
        events=detail.events,
        operator_items=detail.operator_items,
    )


@router.get(
    "/reports/{report_id}/xml",
    response_class=Response,
    responses={
        200: {"content": {"application/xml": {}}, "description": "the report document"},
        **problems(404, 409),
    },
)
def report_xml(
    report_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> Response:
    """The ``<report>`` document exactly as built and submitted (audited); 409 while the
    report is a held viral bundle, whose document is built at release."""
    data = service.report_xml(ctx.sessions, who, report_id)
    return Response(
        content=data,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{report_id}.xml"'},
    )


@router.post("/reports/{report_id}/retract", response_model=ReportOut, responses=problems(404, 409))
def retract_report(
    report_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> ReportOut:
    """Withdraw an unfinished report (409 once it is finished)."""
    return ReportOut.of(service.retract(ctx.sessions, who, report_id))


@router.post("/reports/{report_id}/retry", response_model=ReportOut, responses=problems(404, 409))
def retry_report(
    report_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_report),
) -> ReportOut:
    """Queue a failed report again at the step that failed."""
    return ReportOut.of(service.retry(ctx.sessions, who, report_id))
