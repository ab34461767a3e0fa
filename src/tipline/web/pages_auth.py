"""Login, logout and the reviewer's own preferences."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from tipline.errors import AuthError, InputError, PermissionDeniedError
from tipline.services import web_auth
from tipline.web.context import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    WebRoute,
    current,
    form_of,
    new_login_token,
    render,
    web,
)

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)


def _safe_next(value: str | None) -> str:
    """Only a path of this UI (never another site) is a place to go after login; by
    default the UI's root, which sends each user to their own landing page."""
    if value and value.startswith(f"{PREFIX}/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX


@router.get("")
def root(request: Request) -> Response:
    """The user's landing page: the desk for an analyst, the review queue otherwise."""
    ws = current(request)
    return RedirectResponse(web(request).landing(ws.user), status_code=303)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=web(request).settings.web_cookie_secure,
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None, why: str | None = None) -> Response:
    """The login form (with a fresh double-submit CSRF token)."""
    token = new_login_token()
    notice = "Your session ended; please log in again." if why else None
    response = render(
        request, "login.html", {"login_token": token, "next": _safe_next(next), "notice": notice}
    )
    _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request) -> Response:
    """Check the password; on success set the session cookie and go on."""
    ctx = web(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    presented = fields.get("login_token", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), presented.encode("utf-8", "replace")):
        web_auth.refuse(
            ctx.db.sessions, actor="anonymous", reason="login without a valid CSRF token"
        )
        raise PermissionDeniedError("the login form expired; reload the page and try again")
    client = request.client.host if request.client else None
    try:
        token, _session = web_auth.login(
            ctx.db.sessions,
            fields.get("name", ""),
            fields.get("password", ""),
            policy=ctx.policy,
            client=client,
        )
    except AuthError as exc:
        fresh = new_login_token()
        refused = render(
            request,
            "login.html",
            {
                "login_token": fresh,
                "next": _safe_next(fields.get("next")),
                "error": exc.message,
                "name": fields.get("name", "")[:64],
            },
            status=401,
        )
        _cookie(refused, request, LOGIN_COOKIE, fresh, 3600)
        return refused
    response = RedirectResponse(_safe_next(fields.get("next")), status_code=303)
    _cookie(response, request, SESSION_COOKIE, token, int(ctx.policy.max_age.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session; the browser is told to drop its cache and cookies of this site."""
    ws = current(request)
    await form_of(request, ws)
    web_auth.logout(web(request).db.sessions, ws)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


@router.get("/preferences", response_class=HTMLResponse)
def preferences_page(request: Request, saved: str | None = None) -> Response:
    """The reviewer's defaults."""
    ws = current(request)
    return render(
        request,
        "preferences.html",
        {"org_limit": web(request).settings.web_daily_exposure_limit, "saved": saved == "1"},
        ws=ws,
    )


@router.post("/preferences")
async def preferences_submit(request: Request) -> Response:
    """Save the reviewer's default reveal level and own daily limit."""
    ws = current(request)
    fields = await form_of(request, ws)
    try:
        level = int(fields.get("default_level", "0"))
        limit_text = fields.get("daily_limit", "").strip()
        limit = int(limit_text) if limit_text else None
    except ValueError:
        raise InputError("levels and limits are whole numbers") from None
    web_auth.set_preferences(
        web(request).db.sessions, ws.user, default_level=level, daily_limit=limit
    )
    return RedirectResponse(f"{PREFIX}/preferences?saved=1", status_code=303)
