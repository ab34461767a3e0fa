"""What an analyst does on the desk's report page: see a file's thumbnail (a signed,
short-lived URL of this session; rendered blurred and grey unless revealed), reveal
it further, confirm or reject the report, route it again, download its referral
package. Every form is CSRF-checked;
each action is audited by its service."""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.background import BackgroundTask

from tipline.errors import InputError
from tipline.services.desk import actions, media
from tipline.signals.limits import MediaLimits
from tipline.web.context import (
    PREFIX,
    SECURITY_HEADERS,
    WebRoute,
    current,
    form_of,
    media_response,
    require_media_signature,
    web,
)

router = APIRouter(prefix=f"{PREFIX}/desk", route_class=WebRoute, include_in_schema=False)
_FILE_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")
_REPORT_ID = Path(..., ge=1, le=2**63 - 1)


def _file_id(value: str) -> str:
    if not _FILE_ID.match(value):
        raise InputError("not a received file's id")
    return value


@router.get("/files/{file_id}/{level}.jpg")
def desk_file(request: Request, file_id: str, level: int, exp: str = "", sig: str = "") -> Response:
    """A received file's thumbnail at ``level``; the URL must be signed for this session
    and not expired (refused and audited otherwise)."""
    ws = current(request)
    ctx = web(request)
    file_id = _file_id(file_id)
    require_media_signature(
        request, ws, file_id, level, exp, sig, kind="desk",
        details={"intake_file": file_id, "level": level},
    )  # fmt: skip
    rendered = media.render(
        ctx.db.sessions,
        ctx.vault(),
        ws.principal,
        file_id,
        level,
        default_level=ws.user.default_level,
        limits=MediaLimits.of(ctx.settings),
    )
    return media_response(rendered.data, rendered.media_type)


@router.post("/reports/{report_id}/files/{file_id}/reveal")
async def desk_reveal(request: Request, file_id: str, report_id: int = _REPORT_ID) -> Response:
    """Record a reveal of one file at the asked level, then show the report again."""
    ws = current(request)
    ctx = web(request)
    fields = await form_of(request, ws)
    try:
        level = int(fields.get("level", ""))
    except ValueError:
        raise InputError("reveal level must be a number") from None
    file_id = _file_id(file_id)
    media.reveal(
        ctx.db.sessions, ws.principal, report_id, file_id, level, daily_limit=ctx.daily_limit(ws)
    )
    return RedirectResponse(f"{PREFIX}/desk/reports/{report_id}#f-{file_id}", status_code=303)


@router.post("/reports/{report_id}/decide")
async def desk_decide(request: Request, report_id: int = _REPORT_ID) -> Response:
    """Confirm (publishes the new material's hashes) or reject the report."""
    ws = current(request)
    ctx = web(request)
    fields = await form_of(request, ws)
    verdict = fields.get("verdict", "")
    actions.decide(
        ctx.db.sessions,
        ctx.settings,
        ws.principal,
        report_id,
        verdict,
        classification=fields.get("classification"),
        note=fields.get("note"),
    )
    return RedirectResponse(
        f"{PREFIX}/desk/reports/{report_id}?done={verdict}#decision", status_code=303
    )


@router.post("/reports/{report_id}/route")
async def desk_route(request: Request, report_id: int = _REPORT_ID) -> Response:
    """Route the report now; the page then shows the decision and its package preview."""
    ws = current(request)
    ctx = web(request)
    await form_of(request, ws)
    actions.route(ctx.db.sessions, ctx.settings, ws.principal, report_id)
    return RedirectResponse(
        f"{PREFIX}/desk/reports/{report_id}?done=route#routing", status_code=303
    )


@router.post("/reports/{report_id}/referral")
async def desk_referral(request: Request, report_id: int = _REPORT_ID) -> Response:
    """Build the routed report's referral package and download it (media as the routing
    rule allows; audited as ``referral.package``)."""
    ws = current(request)
    ctx = web(request)
    await form_of(request, ws)
    info = actions.build_package(ctx.db.sessions, ctx.vault(), ws.principal, report_id)
    return FileResponse(
        info.path,
        media_type="application/zip",
        filename=f"referral-{report_id}-{info.id}.zip",
        headers={**SECURITY_HEADERS, "X-Content-SHA256": info.sha256},
        background=BackgroundTask(actions.discard_package, info),
    )
