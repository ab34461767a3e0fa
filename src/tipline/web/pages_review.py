"""The review queue, one item, its media, reveals and verdicts; the reports list."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from tipline.errors import InputError
from tipline.services.reports import service as reports
from tipline.services.review import decisions, item, media
from tipline.services.review.queue import CLASSIFICATIONS, QueueStatus, list_queue, release
from tipline.signals.limits import MediaLimits
from tipline.web.context import (
    PREFIX,
    WebRoute,
    current,
    form_of,
    media_response,
    media_url,
    render,
    require_media_signature,
    web,
)

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)
_ID = re.compile(r"^[0-9A-Za-z]{1,26}$")

#: what a finished action says on the queue page (fixed texts: nothing from the URL
#: is shown but validated ids)
_DONE = {
    "confirm": "Confirmed",
    "confirm_first": "First confirmation recorded: a different reviewer must confirm",
    "false_positive": "Marked as a false positive",
    "escalate": "Escalated",
    "skip": "Skipped",
    "release": "Released back to the queue",
    "preferences": "Preferences saved",
}


def _item_id(value: str) -> str:
    if not _ID.match(value):
        raise InputError("not a review item id")
    return value


def _opt_id(value: str | None) -> str | None:
    return value if value and _ID.match(value) else None


@router.get("/review", response_class=HTMLResponse)
def queue_page(
    request: Request,
    status: str = "pending",
    bank: str | None = None,
    tenant: str | None = None,
    done: str | None = None,
    item_id: str | None = None,
    report: str | None = None,
    note: str | None = None,
) -> Response:
    """Items by priority, with filters."""
    ws = current(request)
    ctx = web(request)
    try:
        wanted = QueueStatus(status)
    except ValueError:
        raise InputError("status must be pending, escalated, confirmed or rejected") from None
    bank = (bank or "").strip()[:200] or None
    tenant = (tenant or "").strip()[:64] or None
    entries = list_queue(
        ctx.db.sessions,
        ws.principal,
        status=wanted,
        bank=bank,
        tenant=tenant,
        severity=ctx.settings.web_review_bank_severity,
    )
    return render(
        request,
        "queue.html",
        {
            "entries": entries,
            "status": wanted.value,
            "statuses": [s.value for s in QueueStatus],
            "bank": bank or "",
            "tenant": tenant or "",
            "done": _DONE.get(done or ""),
            "done_item": _opt_id(item_id),
            "done_report": _opt_id(report),
            "done_note": {
                "no-report": "No report was built",
                "no-allow": "Not added to an allow bank",
            }.get(note or ""),
        },
        ws=ws,
    )


@router.get("/review/{item_id}", response_class=HTMLResponse)
def item_page(request: Request, item_id: str, level: int | None = None) -> Response:
    """One item: blurred media, why it matched, the submission, the verdict forms."""
    ws = current(request)
    ctx = web(request)
    view = item.open_item(
        ctx.db.sessions,
        ws.principal,
        _item_id(item_id),
        lease_seconds=ctx.settings.web_review_lease_seconds,
        default_level=ws.user.default_level,
        daily_limit=ctx.daily_limit(ws),
    )
    shown = view.level if level is None else max(0, min(level, view.level))
    return render(
        request,
        "item.html",
        {
            "item": view,
            "shown": shown,
            "max_level": media.MAX_LEVEL,
            "view_level": media.VIEW_LEVEL,
            "image_url": media_url(ws, view.id, shown, ctx.settings.web_media_url_seconds)
            if view.media is not None
            else None,
            "classifications": CLASSIFICATIONS,
            "annotations": decisions.FILE_ANNOTATIONS,
        },
        ws=ws,
    )


@router.post("/review/{item_id}/reveal")
async def reveal(request: Request, item_id: str) -> Response:
    """Record a reveal at the asked level, then show the item at it."""
    ws = current(request)
    ctx = web(request)
    fields = await form_of(request, ws)
    try:
        level = int(fields.get("level", ""))
    except ValueError:
        raise InputError("reveal level must be a number") from None
    media.reveal(
        ctx.db.sessions,
        ws.principal,
        _item_id(item_id),
        level,
        daily_limit=ctx.daily_limit(ws),
    )
    return RedirectResponse(f"{PREFIX}/review/{item_id}?level={level}#media", status_code=303)


@router.get("/media/{item_id}/{level}.jpg")
def media_file(
    request: Request, item_id: str, level: int, exp: str = "", sig: str = ""
) -> Response:
    """The item's media rendered at ``level``; the URL must be signed for this session
    and not expired (refused and audited otherwise)."""
    ws = current(request)
    ctx = web(request)
    item_id = _item_id(item_id)
    require_media_signature(
        request, ws, item_id, level, exp, sig, kind="media",
        details={"item": item_id, "level": level},
    )  # fmt: skip
    rendered = media.render(
        ctx.db.sessions,
        ctx.vault(),
        ws.principal,
        item_id,
        level,
        default_level=ws.user.default_level,
        limits=MediaLimits.of(ctx.settings),
    )
    return media_response(rendered.data, rendered.media_type)


@router.post("/review/{item_id}/decide")
async def decide(request: Request, item_id: str) -> Response:
    """Confirm, false positive, escalate or skip; then back to the queue."""
    ws = current(request)
    ctx = web(request)
    fields = await form_of(request, ws)
    item_id = _item_id(item_id)
    verdict = fields.get("verdict", "")
    who = ws.principal
    note = None
    report_id = None
    if verdict == decisions.Verdict.CONFIRM.value:
        form = await request.form()
        annotations = [a for a in form.getlist("annotation") if isinstance(a, str)]
        outcome = decisions.confirm(
            ctx.db,
            who,
            item_id,
            classification=fields.get("classification", ""),
            file_annotations=annotations,
            settings=ctx.settings,
        )
        report_id = outcome.report_id
        note = "no-report" if outcome.report_error else None
        if outcome.awaiting_second:
            verdict, note = "confirm_first", None
    elif verdict == decisions.Verdict.FALSE_POSITIVE.value:
        outcome = decisions.false_positive(ctx.db, who, item_id, reason=fields.get("reason", ""))
        note = "no-allow" if outcome.allow_error else None
    elif verdict == decisions.Verdict.ESCALATE.value:
        decisions.escalate(ctx.db, who, item_id, note=fields.get("note", ""))
    elif verdict == decisions.Verdict.SKIP.value:
        decisions.skip(ctx.db, who, item_id)
    else:
        raise InputError("unknown verdict")
    query = f"done={verdict}&item_id={item_id}"
    if report_id:
        query += f"&report={report_id}"
    if note:
        query += f"&note={note}"
    return RedirectResponse(f"{PREFIX}/review?{query}", status_code=303)


@router.post("/review/{item_id}/release")
async def release_item(request: Request, item_id: str) -> Response:
    """Give the item back to the queue."""
    ws = current(request)
    await form_of(request, ws)
    release(web(request).db.sessions, ws.principal, _item_id(item_id))
    return RedirectResponse(f"{PREFIX}/review?done=release&item_id={item_id}", status_code=303)


_REPORT_DONE = {"retry": "Delivery will be tried again", "retract": "Retraction queued"}


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, done: str | None = None, report: str | None = None) -> Response:
    """Reports with their delivery state, newest first."""
    ws = current(request)
    found = reports.list_reports(web(request).db.sessions, ws.principal, limit=100)
    return render(
        request,
        "reports.html",
        {"reports": found, "done": _REPORT_DONE.get(done or ""), "done_report": _opt_id(report)},
        ws=ws,
    )


@router.get("/reports/{report_id}/xml", response_class=HTMLResponse)
def report_xml_page(request: Request, report_id: str) -> Response:
    """The report document exactly as built (and submitted)."""
    ws = current(request)
    xml = reports.report_xml(web(request).db.sessions, ws.principal, _item_id(report_id))
    return render(
        request,
        "report_xml.html",
        {"report_id": report_id, "xml": xml.decode("utf-8", "replace")},
        ws=ws,
    )


@router.post("/reports/{report_id}/{action}")
async def report_action(request: Request, report_id: str, action: str) -> Response:
    """Retry a failed delivery or retract a report."""
    ws = current(request)
    await form_of(request, ws)
    report_id = _item_id(report_id)
    sessions = web(request).db.sessions
    if action == "retry":
        reports.retry(sessions, ws.principal, report_id)
    elif action == "retract":
        reports.retract(sessions, ws.principal, report_id)
    else:
        raise InputError("unknown report action")
    return RedirectResponse(
        f"{PREFIX}/reports?done={action}&report={report_id}#r-{report_id}", status_code=303
    )
