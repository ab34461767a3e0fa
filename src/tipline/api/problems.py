"""RFC 9457 problem documents for every error the HTTP API answers with.

Every failure leaves the API as ``application/problem+json``: a :class:`TiplineError`
keeps its own ``status`` and ``code``; FastAPI validation errors become 422; Starlette
HTTP errors (404 route, 405 method) keep their status; a write losing a race at commit
(integrity error) is a 409 and an unreachable database a 503; anything unexpected
becomes a 500 with no internals in the body (and is logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tipline.errors import BusyError, TiplineError

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: ``type`` URIs are relative references under this prefix (RFC 9457 section 3.1.1).
TYPE_PREFIX = "/problems/"

_log = logging.getLogger("tipline.api")

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ProblemResponse(JSONResponse):
    """A JSON response with the problem+json media type."""

    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """A problem document: ``type``, ``title``, ``status``, ``detail`` (+ extensions).

    ``message`` repeats ``detail`` so HMA clients, which read ``message``, see the reason.
    """
    slug = code or _TITLES.get(status, "error").lower().replace(" ", "-")
    body: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{slug}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "message": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


def error_response(exc: TiplineError, instance: str | None = None) -> ProblemResponse:
    """The problem document for a :class:`TiplineError` (its status, code and message)."""
    status = exc.status if 400 <= exc.status < 600 else 500
    headers = {"WWW-Authenticate": 'Bearer realm="tipline"'} if status == 401 else None
    detail = exc.message if status < 500 else "internal error"
    if isinstance(exc, BusyError):  # at capacity: say so, and when to come back
        headers = {"Retry-After": str(exc.retry_after)}
        detail = exc.message
    return problem(status, detail, code=exc.code, instance=instance, headers=headers)


async def _tipline_error(request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, TiplineError):  # registered for TiplineError only
        return await _unexpected(request, exc)
    if exc.status >= 500:
        _log.error("request failed: %s %s: %s", request.method, request.url.path, exc)
    return error_response(exc, instance=request.url.path)


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, RequestValidationError):
        return await _unexpected(request, exc)
    errors = [{k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()]
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    detail = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
    return problem(
        422,
        detail,
        code="validation",
        instance=request.url.path,
        errors=jsonable_encoder(errors),
    )


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    if not isinstance(exc, StarletteHTTPException):
        return await _unexpected(request, exc)
    headers = dict(exc.headers) if exc.headers else None
    return problem(exc.status_code, str(exc.detail), instance=request.url.path, headers=headers)


async def _integrity(request: Request, exc: Exception) -> ProblemResponse:
    # A race between two writers (same bank name, same entry id) lost at commit time.
    return problem(
        409, "conflicts with a concurrent change; retry", code="conflict", instance=request.url.path
    )


async def _database_down(request: Request, exc: Exception) -> ProblemResponse:
    _log.error("database unavailable: %s %s: %s", request.method, request.url.path, exc)
    return problem(
        503,
        "database unavailable",
        code="unavailable",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    _log.exception("unexpected error: %s %s", request.method, request.url.path)
    return problem(500, "internal error", code="internal", instance=request.url.path)


#: Path prefixes of the HMA-compatible routes.
HMA_PREFIXES = ("/h/", "/m/", "/c/")


def _hma_plain(
    handler: Callable[[Request, Exception], Awaitable[ProblemResponse]],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """``handler``, answering HMA's plain ``{"message": ...}`` (application/json) on the
    HMA routes when the ``hma_plain_errors`` setting is on."""

    async def wrapped(request: Request, exc: Exception) -> JSONResponse:
        response = await handler(request, exc)
        ctx = getattr(request.app.state, "ctx", None)
        plain = bool(getattr(getattr(ctx, "settings", None), "hma_plain_errors", False))
        if not plain or not request.url.path.startswith(HMA_PREFIXES):
            return response
        body = json.loads(bytes(response.body))
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return JSONResponse(
            {"message": body.get("detail", "")}, status_code=response.status_code, headers=headers
        )

    return wrapped


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app`` (HMA's plain errors on the HMA
    routes when ``hma_plain_errors`` is set)."""
    app.add_exception_handler(TiplineError, _hma_plain(_tipline_error))
    app.add_exception_handler(RequestValidationError, _hma_plain(_validation_error))
    app.add_exception_handler(StarletteHTTPException, _hma_plain(_http_error))
    app.add_exception_handler(IntegrityError, _hma_plain(_integrity))
    app.add_exception_handler(OperationalError, _hma_plain(_database_down))
    app.add_exception_handler(Exception, _hma_plain(_unexpected))
