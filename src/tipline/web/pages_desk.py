"""The clearinghouse analyst's desk: a dashboard of what arrived and what waits, the
triaged queue with each score's factors, one received report (its files as blurred
thumbnails, the decision and routing forms, the referral package preview) and one
cluster. Role analyst or admin, users bound to no tenant (the same rule as the analyst
API); mounted with the clearinghouse role (``tipline serve --role clearinghouse`` or
``both``). The forms and the thumbnails are in :mod:`.pages_desk_actions`."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from tipline.services.clearinghouse import dashboard, queue
from tipline.services.clearinghouse.triage import CLASSIFICATIONS
from tipline.services.desk import report as desk_report
from tipline.services.review.media import MAX_LEVEL, VIEW_LEVEL
from tipline.web import svg
from tipline.web.context import PREFIX, WebRoute, current, media_url, render, web

router = APIRouter(prefix=f"{PREFIX}/desk", route_class=WebRoute, include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def desk_page(request: Request) -> Response:
    """Reports and files per day, distinct and duplicate files, new and known material,
    the backlog by band and age, the largest clusters, reports by country."""
    ws = current(request)
    d = dashboard.dashboard(web(request).db.sessions, ws.principal)
    charts = {
        "reports": svg.hbar(
            "chart-reports", "Reports received per day", [(x.day[5:], x.reports) for x in d.days]
        ),
        "files": svg.hbar(
            "chart-files", "Files received per day", [(x.day[5:], x.files) for x in d.days]
        ),
        "states": svg.hbar("chart-states", "Files by de-duplication state", list(d.states.items())),
        "backlog": svg.hbar(
            "chart-backlog", "Pending reports by triage band", list(d.backlog.items())
        ),
        "countries": svg.hbar("chart-countries", "Reports by routed country", d.countries),
    }
    return render(request, "desk.html", {"d": d, "charts": charts, "bands": dashboard.BANDS}, ws=ws)


@router.get("/queue", response_class=HTMLResponse)
def desk_queue_page(request: Request) -> Response:
    """Pending triaged reports, highest score first, each score broken down by factor."""
    ws = current(request)
    items = queue.queue(web(request).db.sessions, ws.principal, limit=200)
    return render(request, "desk_queue.html", {"items": items}, ws=ws)


#: what a finished desk action says on the report page (fixed texts)
_DONE = {
    "confirm": "Confirmed: its new material was published to the hash list",
    "reject": "Rejected",
    "route": "Routed: this decision is now in force",
}


@router.get("/reports/{report_id}", response_class=HTMLResponse)
def desk_report_page(
    request: Request,
    report_id: int = Path(..., ge=1, le=2**63 - 1),
    blur: str | None = Query(None, max_length=32),
    done: str | None = Query(None, max_length=16),
) -> Response:
    """One received report: incident, reported persons, files as blurred thumbnails with
    their hashes, clusters and the links explaining them, linked reports, triage, the
    decision forms, routing and the referral package preview (audited as a report
    view)."""
    ws = current(request)
    ctx = web(request)
    view = desk_report.open_report(
        ctx.db.sessions,
        ws.principal,
        report_id,
        default_level=ws.user.default_level,
        daily_limit=ctx.daily_limit(ws),
        blur=blur,
    )
    ttl = ctx.settings.web_media_url_seconds
    thumbs = {f: media_url(ws, f, level, ttl, kind="desk") for f, level in view.shown.items()}
    return render(
        request,
        "desk_report.html",
        {
            "v": view.view,
            "d": view,
            "thumbs": thumbs,
            "max_level": MAX_LEVEL,
            "view_level": VIEW_LEVEL,
            "classifications": CLASSIFICATIONS,
            "done": _DONE.get(done or ""),
        },
        ws=ws,
    )


@router.get("/clusters/{cluster_id}", response_class=HTMLResponse)
def desk_cluster_page(
    request: Request, cluster_id: int = Path(..., ge=1, le=2**63 - 1)
) -> Response:
    """One cluster: its files across reports and providers (hashes only) and the links
    (signal, distance) explaining each file's membership (audited)."""
    ws = current(request)
    view = queue.cluster_view(web(request).db.sessions, ws.principal, cluster_id)
    return render(request, "desk_cluster.html", {"c": view}, ws=ws)
