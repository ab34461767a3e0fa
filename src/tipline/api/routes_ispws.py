"""The clearinghouse intake over HTTP: the CyberTipline Reporting API (ISPWS) paths
under ``/ispws``, so existing CyberTipline clients submit unchanged. Mounted only when
the service role includes ``clearinghouse``.

HTTP Basic authentication per reporting provider; a failed login is HTTP 401 with an
empty body; every other answer is HTTP 200 with an XML ``reportResponse`` or
``reportDoneResponse`` whose ``responseCode`` says what happened.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from tipline.api.context import ServiceContext, get_ctx
from tipline.services import clearinghouse, vault
from tipline.services.clearinghouse import IntakeAuthError, IspwsAnswer
from tipline.services.clearinghouse.hashpool import HashPool
from tipline.signals.decode import DecodeMode
from tipline.signals.limits import MediaLimits

router = APIRouter(prefix="/ispws", tags=["clearinghouse intake (ISPWS)"])
_LOCK = threading.Lock()
_XML = "text/xml; charset=utf-8"

_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `reportResponse` (or, for finish, `reportDoneResponse`) XML "
        "document; `responseCode` 0 is success, anything else an error.",
        "content": {"text/xml": {"schema": {"type": "string"}}},
    },
    401: {"description": "Missing or wrong HTTP Basic credentials (empty body)."},
}


def _xml_body(description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"text/xml": {"schema": {"type": "string"}}},
        }
    }


def _form_body(description: str, *, with_file: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"id": {"type": "string", "description": "report id"}}
    content_type = "application/x-www-form-urlencoded"
    if with_file:
        properties["file"] = {"type": "string", "format": "binary"}
        content_type = "multipart/form-data"
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                content_type: {
                    "schema": {"type": "object", "properties": properties, "required": ["id"]}
                }
            },
        }
    }


def the_intake(ctx: ServiceContext) -> clearinghouse.Intake:
    """This process's intake (built from the settings on first use), whose finished
    reports are triaged at once by this process's :class:`TriageWorker`."""
    found = ctx.services.get("intake")
    if isinstance(found, clearinghouse.Intake):
        return found
    with _LOCK:
        found = ctx.services.get("intake")
        if not isinstance(found, clearinghouse.Intake):
            # the steps of an unfinished report and their triage commit without waiting
            # for the disk; a finish waits, and so makes its report's steps durable
            db = ctx.db.with_async_commit(ctx.settings)
            worker = clearinghouse.TriageWorker.open(db, ctx.settings)
            ctx.services["triage_worker"] = worker
            if db is not ctx.db:
                ctx.services["intake_db"] = db  # closed after the worker (dict order)
            pool = None
            if ctx.settings.intake_hash_processes > 0:
                pool = HashPool(ctx.settings.intake_hash_processes)
                ctx.services["intake_hash_pool"] = pool
                pool.start()
            found = clearinghouse.Intake(
                sessions=db.sessions,
                vault=vault.Vault.from_settings(ctx.settings),
                max_xml_bytes=ctx.settings.intake_max_xml_bytes,
                max_file_bytes=ctx.settings.intake_max_file_bytes,
                limits=MediaLimits.of(ctx.settings),
                on_finish=worker.submit,
                triage_grace_seconds=ctx.settings.clearinghouse_triage_grace_seconds,
                hash_pool=pool,
                hash_options=clearinghouse.intake_hash_options(
                    DecodeMode(ctx.settings.intake_decode)
                ),
            )
            ctx.services["intake"] = found
        return found


def _render(answer: IspwsAnswer) -> Response:
    return Response(answer.render(), media_type=_XML)


class _CallThreads(ThreadPoolExecutor):
    """The threads the intake's calls run in (they block on the database, the vault and
    the hashing processes). Their own pool rather than AnyIO's: handing a call to AnyIO's
    worker threads cost the event loop about twice the CPU of ``run_in_executor`` (its
    capacity limiter and cancel scopes, per call), and its 40 threads are shared with
    every synchronous route."""

    def close(self) -> None:
        self.shutdown(wait=True)


#: threads of :class:`_CallThreads` (AnyIO's default capacity, which the calls had)
CALL_THREADS = 40


def _call_threads(ctx: ServiceContext) -> _CallThreads:
    found = ctx.services.get("ispws_call_threads")
    if isinstance(found, _CallThreads):
        return found
    with _LOCK:
        found = ctx.services.get("ispws_call_threads")
        if not isinstance(found, _CallThreads):
            found = _CallThreads(CALL_THREADS, thread_name_prefix="tipline-ispws-call")
            ctx.services["ispws_call_threads"] = found
        return found


async def _call(ctx: ServiceContext, fn: Any, *args: Any) -> Response:
    """``fn(the intake, *args)`` in a call thread, its answer as the response."""
    call = functools.partial(fn, the_intake(ctx), *args)
    try:
        result = await asyncio.get_running_loop().run_in_executor(_call_threads(ctx), call)
    except IntakeAuthError:
        return Response(status_code=401)
    if isinstance(result, bytes):
        return Response(result, media_type=_XML)
    return _render(result)


async def _form_id(request: Request) -> str | None:
    try:
        form = await request.form(max_files=0, max_fields=10)
    except Exception:  # a malformed form is a missing id (answered 5001)
        return None
    value = form.get("id")
    return value if isinstance(value, str) else None


# The calls, one per path: the FastAPI routes below (the OpenAPI document, and any
# request the fast path leaves to FastAPI) and :class:`IspwsFastPath` both run these.


async def _status(ctx: ServiceContext, request: Request) -> Response:
    return await _call(ctx, clearinghouse.status, request.headers.get("authorization"))


async def _xsd(ctx: ServiceContext, request: Request) -> Response:
    return await _call(ctx, clearinghouse.schema, request.headers.get("authorization"))


async def _submit(ctx: ServiceContext, request: Request) -> Response:
    body = await request.body()
    return await _call(ctx, clearinghouse.submit, request.headers.get("authorization"), body)


async def _upload(ctx: ServiceContext, request: Request) -> Response:
    report_id: str | None = None
    name: str | None = None
    stream = None
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception:  # malformed multipart: answered as a request without a file
        form = None
    if form is not None:
        raw = form.get("id")
        report_id = raw if isinstance(raw, str) else None
        item = form.get("file")
        if isinstance(item, UploadFile):
            name, stream = item.filename, item.file
    try:
        return await _call(
            ctx,
            clearinghouse.upload,
            request.headers.get("authorization"),
            report_id,
            name,
            stream,
        )
    finally:
        if form is not None:
            await form.close()


async def _fileinfo(ctx: ServiceContext, request: Request) -> Response:
    body = await request.body()
    return await _call(ctx, clearinghouse.fileinfo, request.headers.get("authorization"), body)


async def _finish(ctx: ServiceContext, request: Request) -> Response:
    report_id = await _form_id(request)
    return await _call(ctx, clearinghouse.finish, request.headers.get("authorization"), report_id)


async def _retract(ctx: ServiceContext, request: Request) -> Response:
    report_id = await _form_id(request)
    return await _call(ctx, clearinghouse.retract, request.headers.get("authorization"), report_id)


@router.get("/status", summary="Service status", responses=_ANSWER)
async def status(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """`reportResponse` with responseCode 0 when the service is up and the account accepted."""
    return await _status(ctx, request)


@router.get(
    "/xsd",
    summary="The report schema in force",
    responses={**_ANSWER, 200: {"description": "NCMEC's XSD", "content": {"text/xml": {}}}},
)
async def xsd(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """The XML schema reports and file details are validated against."""
    return await _xsd(ctx, request)


@router.post(
    "/submit",
    summary="Open a report",
    responses=_ANSWER,
    openapi_extra=_xml_body("a `<report>` document valid against the schema"),
)
async def submit(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Validate the `<report>` and open it; the answer carries the new `reportId`."""
    return await _submit(ctx, request)


@router.post(
    "/upload",
    summary="Attach a file to an open report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id and the file", with_file=True),
)
async def upload(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Attach a file; the answer carries `fileId` and `hash` (MD5 of the bytes received)."""
    return await _upload(ctx, request)


@router.post(
    "/fileinfo",
    summary="Describe a file of an open report",
    responses=_ANSWER,
    openapi_extra=_xml_body("a `<fileDetails>` document valid against the schema"),
)
async def fileinfo(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Record the `<fileDetails>` naming `reportId` and `fileId`."""
    return await _fileinfo(ctx, request)


@router.post(
    "/finish",
    summary="Finish a report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id"),
)
async def finish(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Close the report; `reportDoneResponse` lists every file attached."""
    return await _finish(ctx, request)


@router.post(
    "/retract",
    summary="Retract an unfinished report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id"),
)
async def retract(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Withdraw an open report (a finished one cannot be retracted)."""
    return await _retract(ctx, request)


_Handler = Callable[[ServiceContext, Request], Awaitable[Response]]
_HANDLERS: dict[str, _Handler] = {
    "status": _status,
    "xsd": _xsd,
    "submit": _submit,
    "upload": _upload,
    "fileinfo": _fileinfo,
    "finish": _finish,
    "retract": _retract,
}


class IspwsFastPath:
    """Pure ASGI middleware serving the ISPWS calls without FastAPI's per-request work.

    Why: an intake file costs two to three requests, and the event loop spent more CPU
    in FastAPI's route matching, dependency solving and its three inner layers than in
    parsing the request. A request whose method and path are exactly those of an ISPWS
    route runs that route's call here, with the route in ``scope["route"]`` (the
    metrics label it by its template as before); an exception the app has a handler for
    (problem documents) is answered by that handler, as FastAPI's exception middleware
    would, anything else propagates to the server-error layer. Every other request goes
    on to the app unchanged, so the routes themselves, their OpenAPI entries and the
    405/404 answers stay FastAPI's. Installed inside the body limit and the metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: ServiceContext,
        handlers: Mapping[Any, Callable[..., Any]],
    ) -> None:
        self.app = app
        self.ctx = ctx
        #: the app's exception handlers (the dict itself: later additions count)
        self.handlers = handlers
        self.calls: dict[tuple[str, str], tuple[_Handler, BaseRoute]] = {}
        for route in router.routes:
            assert isinstance(route, APIRoute)
            call = _HANDLERS[route.path.rsplit("/", 1)[1]]
            for method in route.methods or ():
                self.calls[(method, route.path)] = (call, route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if scope["type"] == "http" and not scope.get("root_path"):
            found = self.calls.get((scope["method"], scope["path"]))
        if found is None:
            await self.app(scope, receive, send)
            return
        call, route = found
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await call(self.ctx, request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        for cls in type(exc).__mro__:
            if cls is Exception:  # the server-error layer's (a 500)
                return None
            if cls in self.handlers:
                return self.handlers[cls]
        return None


def install_fast_path(app: FastAPI, ctx: ServiceContext) -> None:
    """Serve the ISPWS calls through :class:`IspwsFastPath` (call before adding the
    body limit and metrics middleware: it must sit inside them)."""
    app.add_middleware(IspwsFastPath, ctx=ctx, handlers=app.exception_handlers)
