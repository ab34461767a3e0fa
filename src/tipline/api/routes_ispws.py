"""The clearinghouse intake over HTTP: the CyberTipline Reporting API (ISPWS) paths
under ``/ispws``, so existing CyberTipline clients submit unchanged. Mounted only when
the service role includes ``clearinghouse``.

HTTP Basic authentication per reporting provider; a failed login is HTTP 401 with an
empty body; every other answer is HTTP 200 with an XML ``reportResponse`` or
``reportDoneResponse`` whose ``responseCode`` says what happened.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tipline.api.context import ServiceContext, get_ctx
from tipline.services import clearinghouse, vault
from tipline.services.clearinghouse import IntakeAuthError, IspwsAnswer
from tipline.services.clearinghouse.hashpool import HashPool
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
            worker = clearinghouse.TriageWorker.open(ctx.db, ctx.settings)
            ctx.services["triage_worker"] = worker
            pool = None
            if ctx.settings.intake_hash_processes > 0:
                pool = HashPool(ctx.settings.intake_hash_processes)
                ctx.services["intake_hash_pool"] = pool
                pool.start()
            found = clearinghouse.Intake(
                sessions=ctx.sessions,
                vault=vault.Vault.from_settings(ctx.settings),
                max_xml_bytes=ctx.settings.intake_max_xml_bytes,
                max_file_bytes=ctx.settings.intake_max_file_bytes,
                limits=MediaLimits.of(ctx.settings),
                on_finish=worker.submit,
                triage_grace_seconds=ctx.settings.clearinghouse_triage_grace_seconds,
                hash_pool=pool,
            )
            ctx.services["intake"] = found
        return found


def _render(answer: IspwsAnswer) -> Response:
    return Response(answer.render(), media_type=_XML)


async def _call(fn: Any, *args: Any) -> Response:
    try:
        result = await run_in_threadpool(fn, *args)
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


@router.get("/status", summary="Service status", responses=_ANSWER)
async def status(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """`reportResponse` with responseCode 0 when the service is up and the account accepted."""
    return await _call(clearinghouse.status, the_intake(ctx), request.headers.get("authorization"))


@router.get(
    "/xsd",
    summary="The report schema in force",
    responses={**_ANSWER, 200: {"description": "NCMEC's XSD", "content": {"text/xml": {}}}},
)
async def xsd(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """The XML schema reports and file details are validated against."""
    return await _call(clearinghouse.schema, the_intake(ctx), request.headers.get("authorization"))


@router.post(
    "/submit",
    summary="Open a report",
    responses=_ANSWER,
    openapi_extra=_xml_body("a `<report>` document valid against the schema"),
)
async def submit(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Validate the `<report>` and open it; the answer carries the new `reportId`."""
    body = await request.body()
    return await _call(
        clearinghouse.submit, the_intake(ctx), request.headers.get("authorization"), body
    )


@router.post(
    "/upload",
    summary="Attach a file to an open report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id and the file", with_file=True),
)
async def upload(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Attach a file; the answer carries `fileId` and `hash` (MD5 of the bytes received)."""
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
            clearinghouse.upload,
            the_intake(ctx),
            request.headers.get("authorization"),
            report_id,
            name,
            stream,
        )
    finally:
        if form is not None:
            await form.close()


@router.post(
    "/fileinfo",
    summary="Describe a file of an open report",
    responses=_ANSWER,
    openapi_extra=_xml_body("a `<fileDetails>` document valid against the schema"),
)
async def fileinfo(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Record the `<fileDetails>` naming `reportId` and `fileId`."""
    body = await request.body()
    return await _call(
        clearinghouse.fileinfo, the_intake(ctx), request.headers.get("authorization"), body
    )


@router.post(
    "/finish",
    summary="Finish a report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id"),
)
async def finish(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Close the report; `reportDoneResponse` lists every file attached."""
    report_id = await _form_id(request)
    return await _call(
        clearinghouse.finish, the_intake(ctx), request.headers.get("authorization"), report_id
    )


@router.post(
    "/retract",
    summary="Retract an unfinished report",
    responses=_ANSWER,
    openapi_extra=_form_body("the report id"),
)
async def retract(request: Request, ctx: ServiceContext = Depends(get_ctx)) -> Response:
    """Withdraw an open report (a finished one cannot be retracted)."""
    report_id = await _form_id(request)
    return await _call(
        clearinghouse.retract, the_intake(ctx), request.headers.get("authorization"), report_id
    )
