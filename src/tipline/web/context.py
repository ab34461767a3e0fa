"""What every page handler needs: the services' handles, the session of the request,
CSRF checks, signed media URLs, and HTML rendering with safe headers.

Every web response carries ``Cache-Control: no-store`` (pages show personal data and
media), a strict Content-Security-Policy (only this origin's scripts, styles and
images; no inline script), ``X-Content-Type-Options: nosniff`` and no referrer.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tipline.config import Settings
from tipline.errors import NotFoundError, PermissionDeniedError, TiplineError
from tipline.services import web_auth
from tipline.services.auth import Role
from tipline.services.database import Database
from tipline.services.vault import Vault
from tipline.services.web_auth import SessionPolicy, UserInfo, WebSession

_log = logging.getLogger("tipline.web")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "tipline_session"
LOGIN_COOKIE = "tipline_login"
PREFIX = "/web"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class WebContext:
    """Per-process state of the web UI (one per app)."""

    db: Database
    settings: Settings
    vault: Callable[[], Vault]
    templates: Environment
    #: the provider's review pages are served (role provider or both)
    review_enabled: bool = True
    #: the clearinghouse analyst's desk is served (role clearinghouse or both)
    desk_enabled: bool = False

    @property
    def policy(self) -> SessionPolicy:
        """How long sessions live."""
        return SessionPolicy.from_settings(self.settings)

    def landing(self, user: UserInfo) -> str:
        """Where ``user`` starts after login: an analyst at the desk, anyone else at the
        review queue (the desk where only the clearinghouse role runs)."""
        analyst = user.role is Role.ANALYST and user.tenant is None
        if self.desk_enabled and (analyst or not self.review_enabled):
            return f"{PREFIX}/desk"
        return f"{PREFIX}/review"

    def daily_limit(self, ws: WebSession) -> int:
        """The reviewer's exposure limit: their own when lower than the organisation's."""
        own = ws.user.daily_limit
        limit = self.settings.web_daily_exposure_limit
        return min(own, limit) if own is not None else limit


def make_templates() -> Environment:
    """The Jinja2 environment (autoescaping on for every template)."""
    return Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def web(request: Request) -> WebContext:
    """The app's :class:`WebContext`."""
    ctx: WebContext = request.app.state.web
    return ctx


def render(
    request: Request,
    template: str,
    values: Mapping[str, Any],
    *,
    status: int = 200,
    ws: WebSession | None = None,
) -> HTMLResponse:
    """Render ``template`` with the session's user and CSRF token available."""
    ctx = web(request)
    ws = ws or getattr(request.state, "web_session", None)
    minutes = None
    if ws is not None and ws.started_at is not None:
        minutes = (datetime.now(UTC) - ws.started_at).total_seconds() / 60
    html = ctx.templates.get_template(template).render(
        user=ws.user if ws is not None else None,
        csrf=ws.csrf_token if ws is not None else "",
        prefix=PREFIX,
        session_minutes=minutes,
        break_due=minutes is not None and minutes >= ctx.settings.web_break_minutes,
        **values,
    )
    return HTMLResponse(html, status_code=status)


class LoginRequired(Exception):
    """No live session: the browser goes to the login page."""


def current(request: Request) -> WebSession:
    """The request's live session (kept on ``request.state``); LoginRequired without."""
    found: WebSession | None = getattr(request.state, "web_session", None)
    if found is not None:
        return found
    ctx = web(request)
    try:
        ws = web_auth.resume(
            ctx.db.sessions, request.cookies.get(SESSION_COOKIE), policy=ctx.policy
        )
    except web_auth.SessionExpiredError as exc:
        raise LoginRequired(exc.message) from None
    request.state.web_session = ws
    return ws


async def form_of(request: Request, ws: WebSession) -> dict[str, str]:
    """The posted form, after its CSRF token was checked (a missing or wrong token is
    refused and audited)."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not ws.check_csrf(fields.get("csrf")):
        web_auth.refuse(
            web(request).db.sessions,
            actor=ws.principal,
            reason="missing or wrong CSRF token",
            details={"path": request.url.path},
        )
        refused = PermissionDeniedError("the form's security token is missing or out of date")
        refused.audited = True  # type: ignore[attr-defined]
        raise refused
    return fields


def media_url(ws: WebSession, item_id: str, level: int, ttl: int, *, kind: str = "media") -> str:
    """A signed URL of a review item's media (``kind`` "media") or of a received file's
    desk thumbnail (``kind`` "desk") at ``level``, valid ``ttl`` seconds, in this
    session only."""
    expires = int(time.time()) + ttl
    sig = ws.mac(f"{kind}:{item_id}:{level}:{expires}")
    where = "desk/files" if kind == "desk" else "media"
    return f"{PREFIX}/{where}/{quote(item_id)}/{level}.jpg?exp={expires}&sig={sig}"


def media_signature_ok(
    ws: WebSession, item_id: str, level: int, exp: str, sig: str, *, kind: str = "media"
) -> bool:
    """True when ``sig`` signs this kind, item, level and expiry for this session and
    the expiry is in the future."""
    if not exp.isdigit() or len(exp) > 12 or int(exp) < time.time():
        return False
    expected = ws.mac(f"{kind}:{item_id}:{level}:{exp}")
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))


def require_media_signature(
    request: Request,
    ws: WebSession,
    target_id: str,
    level: int,
    exp: str,
    sig: str,
    *,
    kind: str,
    details: dict[str, object],
) -> None:
    """Refuse (audited, with ``details``) a media URL not signed for this session, kind,
    target and level, or expired."""
    if media_signature_ok(ws, target_id, level, exp[:16], sig[:128], kind=kind):
        return
    web_auth.refuse(
        web(request).db.sessions,
        actor=ws.principal,
        reason="bad or expired media URL",
        details=details,
    )
    refused = PermissionDeniedError("this media link is not valid (expired or altered)")
    refused.audited = True  # type: ignore[attr-defined]
    raise refused


def media_response(data: bytes, media_type: str) -> Response:
    """Rendered media with the web UI's safe headers (``no-store`` included), inline."""
    return Response(
        data, media_type=media_type, headers={**SECURITY_HEADERS, "Content-Disposition": "inline"}
    )


def new_login_token() -> str:
    """The value of the pre-login CSRF cookie (double submit)."""
    return secrets.token_urlsafe(24)


class WebRoute(APIRoute):
    """Routes of the web UI: safe headers on every answer; errors become HTML pages
    (a missing session becomes a redirect to the login page); refusals are audited."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await inner(request)
            except LoginRequired as exc:
                target = request.url.path if request.method == "GET" else PREFIX
                response = RedirectResponse(
                    f"{PREFIX}/login?next={quote(target)}&why={quote(str(exc))}", status_code=303
                )
            except TiplineError as exc:
                response = _error_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            return response

        return handler


def _error_page(request: Request, exc: TiplineError) -> Response:
    ws: WebSession | None = getattr(request.state, "web_session", None)
    already = getattr(exc, "audited", False) or exc.code == "exposure-limit"
    if isinstance(exc, NotFoundError | PermissionDeniedError) and ws is not None and not already:
        web_auth.refuse(
            web(request).db.sessions,
            actor=ws.principal,
            reason=exc.code,
            details={"path": request.url.path, "message": exc.message},
        )
    status = exc.status if 400 <= exc.status < 600 else 500
    message = exc.message
    if status >= 500:  # as the API: no internals (paths, settings) on the page, only in the log
        _log.error("web request failed: %s %s: %s", request.method, request.url.path, exc)
        message = "The service could not do this now; the details are in the server's log."
    return render(request, "error.html", {"message": message, "status": status}, status=status)
