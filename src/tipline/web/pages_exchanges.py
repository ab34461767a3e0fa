"""Hash exchanges: where each sync of a shared hash list stands (read-only; syncs are
configured with ``tipline exchange`` and run by ``tipline worker``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from tipline.services import exchanges
from tipline.services.auth import Permission
from tipline.web.context import PREFIX, WebRoute, current, render, web

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)


@router.get("/exchanges", response_class=HTMLResponse)
def exchanges_page(request: Request) -> Response:
    """Every exchange: kind, bank, last success, lag, counts, last error, votes owed."""
    ws = current(request)
    ws.principal.require(Permission.BANK_READ)
    found = exchanges.list_exchanges(web(request).db, actor=ws.principal)
    return render(request, "exchanges.html", {"exchanges": found}, ws=ws)
