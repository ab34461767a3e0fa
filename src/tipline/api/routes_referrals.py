"""Routing and referral packages of the clearinghouse (``/v1/clearinghouse/reports``):
route a finished intake report, read the decision in force, and build the referral
package for the agency it was routed to (permission ``route``: analyst, admin; media in a
package also needs ``evidence.read``). Mounted with the clearinghouse role."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from enum import StrEnum
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services.auth import Permission, Principal
from tipline.services.clearinghouse import referral, routing

router = APIRouter(prefix="/v1/clearinghouse/reports", tags=["clearinghouse routing"])
_route = require(Permission.ROUTE)
_REPORT = Path(..., ge=1, description="intake report id (the ISPWS reportId)")


class DecisionOut(BaseModel):
    """A routing decision: the agency (null: unrouted), the rule that matched, the
    location and the address that decided, and the explanation (every address with
    its status, the vote, a one-line summary)."""

    id: str
    report_id: int
    agency: str | None
    agency_name: str | None
    media_allowed: bool = Field(description="packages for this decision may carry media")
    rule: str = Field(description="subdivision, country, fallback, unlocated, unrouted or analyst")
    rule_key: str | None = Field(description="e.g. US-CA or GB")
    country: str | None
    subdivision: str | None
    ip: str | None
    explanation: dict[str, Any]
    decided_at: datetime
    decided_by: str

    @classmethod
    def of(cls, decision: routing.DecisionInfo) -> DecisionOut:
        """Wire form."""
        return cls(**decision.as_dict())


class MediaChoice(StrEnum):
    """Media in a referral package: as the routing rule says, or asked for or left out."""

    AUTO = "auto"
    INCLUDE = "include"
    EXCLUDE = "exclude"


class RouteIn(BaseModel):
    """An analyst's choice of agency (none: the routing table decides)."""

    agency: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="an agency of the routing table; overrides the table's rules",
    )
    note: str | None = Field(default=None, max_length=2000, description="why (kept)")


@router.post(
    "/{report_id}/route", response_model=DecisionOut, responses=problems(400, 404, 409, 503)
)
def route_report(
    report_id: int = _REPORT,
    body: RouteIn = Body(default_factory=RouteIn),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_route),
) -> DecisionOut:
    """Route a finished report now (audited as `routing.decide`): by the routing table,
    or to the `agency` named (rule `analyst`, the replaced decision kept in the
    explanation). The new decision is the one in force. Reports are also routed
    automatically as they are triaged when a geolocation database is configured."""
    decided = routing.route_one(
        ctx.sessions, ctx.settings, report_id, actor=who, agency=body.agency, note=body.note
    )
    return DecisionOut.of(decided)


@router.get("/{report_id}/routing", response_model=DecisionOut, responses=problems(404))
def show_routing(
    report_id: int = _REPORT,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_route),
) -> DecisionOut:
    """The routing decision in force for a report (404 when never routed)."""
    return DecisionOut.of(routing.latest_decision(ctx.sessions, report_id))


@router.post(
    "/{report_id}/referral",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The referral package (zip): report.json, summary.pdf, "
            "custody.json, vics.json, xml/, media/ when allowed, SHA256SUMS",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problems(404, 409, 503),
    },
)
def build_referral(
    report_id: int = _REPORT,
    media: MediaChoice = Query(
        MediaChoice.AUTO,
        description="auto: as the routing rule allows; include: refused "
        "(403) when the rule does not allow media; exclude: no media",
    ),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_route),
) -> FileResponse:
    """Build the referral package of a routed report (audited as `referral.package`;
    each media file read from the vault audited as `vault.read`). The
    `X-Content-SHA256` header is the package's digest as recorded."""
    folder = FsPath(tempfile.mkdtemp(prefix="tipline-referral-"))
    choice = {MediaChoice.AUTO: None, MediaChoice.INCLUDE: True, MediaChoice.EXCLUDE: False}
    try:
        info = referral.build_referral(
            ctx.sessions,
            ctx.vault(),
            report_id,
            folder / "referral.zip",
            actor=who,
            media=choice[media],
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        info.path,
        media_type="application/zip",
        filename=f"referral-{report_id}-{info.id}.zip",
        headers={"X-Content-SHA256": info.sha256, "Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
