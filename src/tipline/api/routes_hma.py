"""HMA 2.x-compatible endpoints (OpenMediaMatch's hashing, matching and curation routes).

Same paths, parameters and response shapes as HMA, so an HMA integration switches by
changing its base URL (and sending an API key). Differences are listed in docs/api.md:
errors are problem documents (with HMA's ``message`` field), a key is required,
distances in ``raw_lookup`` stay strings as in HMA (the native API uses integers).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tipline.api import lookup
from tipline.api.audit_log import record_media_access
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.media import fetch_media, hash_upload
from tipline.api.schemas import problems
from tipline.errors import HashFormatError, InputError, NotFoundError, TiplineError
from tipline.services import banks
from tipline.services.auth import Permission, Principal, can_see_tenant
from tipline.services.matching.match import Match
from tipline.signals.base import Signal, get_signal_type
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult

router = APIRouter(tags=["hma"])

#: HMA content types -> the signals tipline computes for them
_CONTENT_SIGNALS: dict[str, tuple[str, ...]] = {
    "photo": ("pdq", "md5"),
    "video": ("vpdq", "video_md5"),
}

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "one file, in a field named after its content type",
                    "properties": {
                        "photo": {"type": "string", "format": "binary"},
                        "video": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


class HmaBank(BaseModel):
    """HMA's BankConfig."""

    name: str
    matching_enabled_ratio: float


class HmaBankIn(BaseModel):
    """HMA bank creation body."""

    name: str
    enabled: bool | None = None
    enabled_ratio: float | None = None


class HmaBankUpdate(BaseModel):
    """HMA bank update body."""

    name: str | None = None
    enabled: bool | None = None
    enabled_ratio: float | None = None


def _types(content_type: str, types: str | None) -> tuple[str, ...]:
    available = _CONTENT_SIGNALS.get(content_type)
    if available is None:
        raise InputError(f"no such content_type: '{content_type}'")
    if types is None:
        return available
    chosen = tuple(t.strip() for t in types.split(",") if t.strip())
    for name in chosen:
        if name not in available:
            raise InputError(f"signal type '{name}' doesn't exist or is disabled")
    if not chosen:
        raise InputError("empty signal type selection")
    return chosen


def _as_map(result: HashResult) -> dict[str, str]:
    return {s.type: s.value for s in result.signals if s.variant is None}


async def _hash_url(
    ctx: ServiceContext,
    who: Principal,
    url: str,
    content_type: str | None,
    types: str | None,
    decode: DecodeMode = DecodeMode.FAST,
) -> dict[str, str]:
    await record_media_access(ctx, who, "hma.hash.url", {"url": url})
    fetched = await fetch_media(ctx, url)
    kind = content_type or ""
    if not kind:
        declared = fetched.content_type.lower()
        if declared.startswith("image"):
            kind = "photo"
        elif declared.startswith("video"):
            kind = "video"
        else:
            raise InputError(
                f"unsupported url ContentType: '{fetched.content_type}', if you know the "
                "expected type, provide it with the content_type query param"
            )
    wanted = _types(kind, types)
    result = await hash_upload(ctx, fetched.data, url, HashOptions(signals=wanted, decode=decode))
    return _as_map(result)


async def _hash_form(
    ctx: ServiceContext,
    who: Principal,
    request: Request,
    types: str | None,
    decode: DecodeMode = DecodeMode.FAST,
) -> dict[str, str]:
    try:
        form = await request.form(max_files=2, max_fields=10)
    except TiplineError:
        raise
    except Exception as exc:  # malformed multipart bodies
        raise InputError(f"malformed multipart/form-data body: {type(exc).__name__}") from None
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise InputError("Missing multipart/form-data file upload")
        if len(files) > 1:
            raise InputError("Only one file allowed per request")
        field_name, upload = files[0]
        wanted = _types(field_name, types)
        data = await upload.read()
    finally:
        await form.close()  # spooled temporary files go at once, also on errors
    await record_media_access(ctx, who, "hma.hash.upload", {"bytes": len(data)})
    options = HashOptions(signals=wanted, decode=decode)
    result = await hash_upload(ctx, data, upload.filename or "upload", options)
    return _as_map(result)


# -- hashing --------------------------------------------------------------------------------


@router.get("/h/hash", responses=problems(400, 415))
async def hma_hash_url(
    url: str | None = Query(None, max_length=4096),
    content_type: str | None = Query(None, max_length=20),
    types: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.HASH)),
) -> dict[str, str]:
    """Fetch ``url`` and return ``{signal type: hash}``."""
    if not url:
        raise InputError("url is required")
    return await _hash_url(ctx, who, url, content_type, types)


@router.post("/h/hash", openapi_extra=_MULTIPART_BODY, responses=problems(400, 415))
async def hma_hash_upload(
    request: Request,
    types: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.HASH)),
) -> dict[str, str]:
    """Hash one uploaded file (field ``photo`` or ``video``): ``{signal type: hash}``."""
    return await _hash_form(ctx, who, request, types)


# -- matching -------------------------------------------------------------------------------


def _check_type(signal_type: str) -> str:
    try:
        return get_signal_type(signal_type).name
    except HashFormatError:
        raise InputError(f"No such SignalType '{signal_type}'") from None


def _raw(
    ctx: ServiceContext,
    who: Principal,
    signal: str,
    signal_type: str,
    entry_pks: dict[tuple[str, str], int] | None = None,
) -> list[Match]:
    kind = _check_type(signal_type)
    try:
        return lookup.match_hash(ctx, who, kind, signal, entry_pks=entry_pks)
    except HashFormatError as exc:
        raise InputError(f"invalid signal: {exc.message}") from None


@router.get("/m/raw_lookup", responses=problems(400))
def hma_raw_lookup(
    signal_type: str | None = Query(None, max_length=40),
    signal: str | None = Query(None, max_length=4096),
    include_distance: str = Query("false", max_length=10),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.MATCH)),
) -> dict[str, list[Any]]:
    """``{"matches": [content ids]}`` or, with ``include_distance=true``,
    ``{"matches": [{"content_id": id, "distance": "<n>"}]}``."""
    if not signal:
        raise InputError("signal is required")
    if not signal_type:
        raise InputError("signal_type is required")
    known: dict[tuple[str, str], int] = {}
    matches = [m for m in _raw(ctx, who, signal, signal_type, known) if m.suppressed_by is None]
    ids = lookup.entry_pks(ctx, [(m.bank, m.entry_id) for m in matches], known=known)
    if include_distance.lower() in ("true", "1", "yes", "t"):
        return {
            "matches": [
                {"content_id": ids[(m.bank, m.entry_id)], "distance": str(m.distance)}
                for m in matches
                if (m.bank, m.entry_id) in ids
            ]
        }
    return {"matches": [ids[(m.bank, m.entry_id)] for m in matches if (m.bank, m.entry_id) in ids]}


def _bank_names(matches: list[Match]) -> list[str]:
    return sorted({m.bank for m in matches if m.suppressed_by is None})


@router.get("/m/lookup", responses=problems(400, 415))
async def hma_lookup_get(
    url: str | None = Query(None, max_length=4096),
    content_type: str | None = Query(None, max_length=20),
    signal_type: str | None = Query(None, max_length=40),
    signal: str | None = Query(None, max_length=4096),
    seed: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.MATCH)),
) -> Any:
    """With ``url``: ``{signal type: [bank names]}``; with ``signal_type`` and
    ``signal``: ``[bank names]``."""
    if url:
        hashes = await _hash_url(ctx, who, url, content_type, None)
        return await run_in_threadpool(_lookup_map, ctx, who, hashes)
    if not signal or not signal_type:
        raise InputError("signal and signal_type are required (or url)")
    matches = await run_in_threadpool(_raw, ctx, who, signal, signal_type)
    return _bank_names(matches)


def _lookup_map(
    ctx: ServiceContext, who: Principal, hashes: dict[str, str]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, value in hashes.items():
        out[kind] = _bank_names(lookup.match_signals(ctx, who, [Signal(type=kind, value=value)]))
    return out


@router.post("/m/lookup", openapi_extra=_MULTIPART_BODY, responses=problems(400, 415))
async def hma_lookup_post(
    request: Request,
    seed: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.MATCH)),
) -> dict[str, list[str]]:
    """Hash the uploaded file and return ``{signal type: [bank names]}``."""
    hashes = await _hash_form(ctx, who, request, None)
    return await run_in_threadpool(_lookup_map, ctx, who, hashes)


@router.get("/m/index/status", responses=problems(400))
def hma_index_status(
    signal_type: str | None = Query(None, max_length=40),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.MATCH)),
) -> dict[str, dict[str, Any]]:
    """``{signal type: {"present", "built_to", "size"}}`` of this worker's index."""
    stats = lookup.matcher(ctx).stats()
    sizes: dict[str, int] = {"pdq": int(stats["pdq"]) + int(stats.get("pdq_delta", 0))}
    sizes.update({k: int(v) for k, v in dict(stats["exact"]).items()})
    sizes["vpdq"] = int(stats["video"])
    names = ["pdq", "md5", "vpdq", "video_md5"]
    if signal_type is not None:
        if signal_type not in names:
            raise InputError(f"No such signal type '{signal_type}'")
        names = [signal_type]
    built_to = int(time.time())
    return {n: {"present": True, "built_to": built_to, "size": sizes.get(n, 0)} for n in names}


# -- curation -------------------------------------------------------------------------------


def _ratio(enabled: bool) -> float:
    return 1.0 if enabled else 0.0


def _enabled_from(enabled: bool | None, ratio: float | None) -> bool | None:
    if ratio is not None:
        if ratio not in (0.0, 1.0):
            raise InputError("enabled_ratio must be 0 or 1 (partial matching is not supported)")
        return ratio == 1.0
    return enabled


@router.get("/c/banks", response_model=list[HmaBank], responses=problems())
def hma_banks(
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_READ)),
) -> list[HmaBank]:
    """Every bank visible to the key."""
    return [
        HmaBank(name=i.bank.name, matching_enabled_ratio=_ratio(i.bank.enabled))
        for i in banks.list_banks(ctx.db)
        if can_see_tenant(who, i.bank.tenant)
    ]


@router.post("/c/banks", response_model=HmaBank, status_code=201, responses=problems(400, 409))
def hma_bank_create(
    body: HmaBankIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_WRITE)),
) -> HmaBank:
    """Create a bank: ``{"name", "enabled_ratio"?|"enabled"?}``."""
    enabled = _enabled_from(body.enabled, body.enabled_ratio)
    bank = banks.create_bank(
        ctx.db,
        body.name,
        enabled=True if enabled is None else enabled,
        tenant=who.tenant,
        actor=who,
    )
    return HmaBank(name=bank.name, matching_enabled_ratio=_ratio(bank.enabled))


@router.get("/c/bank/{bank_name}", response_model=HmaBank, responses=problems(404))
def hma_bank_get(
    bank_name: str,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_READ)),
) -> HmaBank:
    """One bank."""
    info = banks.visible_bank(ctx.db, who, bank_name)
    return HmaBank(name=info.bank.name, matching_enabled_ratio=_ratio(info.bank.enabled))


@router.put("/c/bank/{bank_name}", response_model=HmaBank, responses=problems(400, 404))
def hma_bank_update(
    bank_name: str,
    body: HmaBankUpdate,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_WRITE)),
) -> HmaBank:
    """Switch a bank on or off (renaming is not supported)."""
    banks.visible_bank(ctx.db, who, bank_name, write=True)
    if body.name is not None and body.name != bank_name:
        raise InputError("renaming a bank is not supported")
    enabled = _enabled_from(body.enabled, body.enabled_ratio)
    bank = banks.update_bank(ctx.db, bank_name, enabled=enabled, actor=who)
    return HmaBank(name=bank.name, matching_enabled_ratio=_ratio(bank.enabled))


@router.delete("/c/bank/{bank_name}", responses=problems(404))
def hma_bank_delete(
    bank_name: str,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_WRITE)),
) -> dict[str, str]:
    """Delete a bank and its content: ``{"message": "Done"}`` (also when it is absent,
    as in HMA)."""
    with contextlib.suppress(NotFoundError):
        banks.delete_bank(ctx.db, bank_name, actor=who)
    return {"message": "Done"}


def _add_signals(
    ctx: ServiceContext, who: Principal, bank_name: str, hashes: dict[str, str], source: str
) -> dict[str, Any]:
    if not hashes:
        raise InputError("No signals given")
    texts = []
    for name, value in hashes.items():
        if not isinstance(value, str):
            raise InputError(f"Invalid {name} signal: expected a string")
        try:
            kind = get_signal_type(str(name).strip().lower())
        except HashFormatError:
            raise InputError(f"No such signal type {name}") from None
        try:
            texts.append(f"{kind.name}:{kind.parse(value)}")
        except HashFormatError as exc:
            raise InputError(f"Invalid {name} signal: {exc.message}") from None
    entry = banks.add_entry(ctx.db, bank_name, texts, source=source, actor=who)
    ids = lookup.entry_pks(ctx, [(bank_name, entry.entry_id)])
    return {
        "id": ids.get((bank_name, entry.entry_id)),
        "signals": {s.type: s.value for s in entry.signals},
    }


@router.post("/c/bank/{bank_name}/content", responses=problems(400, 404, 409, 415))
async def hma_bank_add_content(
    request: Request,
    bank_name: str,
    url: str | None = Query(None, max_length=4096),
    content_type: str | None = Query(None, max_length=20),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_WRITE)),
) -> dict[str, Any]:
    """Add content by ``url`` or multipart upload: ``{"id", "signals": {type: hash}}``."""
    await run_in_threadpool(banks.visible_bank, ctx.db, who, bank_name, write=True)
    # Reference decode: hashes stored in a bank are shared (see services.bank_media).
    if url:
        hashes = await _hash_url(ctx, who, url, content_type, None, DecodeMode.EXACT)
    elif request.headers.get("content-type", "").startswith("multipart/form-data"):
        hashes = await _hash_form(ctx, who, request, None, DecodeMode.EXACT)
    else:
        raise InputError("Neither `url` nor multipart file upload was received")
    return await run_in_threadpool(_add_signals, ctx, who, bank_name, hashes, "hma content")


@router.post("/c/bank/{bank_name}/signal", responses=problems(400, 404, 409))
def hma_bank_add_signal(
    bank_name: str,
    body: dict[str, str] = Body(..., examples=[{"pdq": "f" * 64}]),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.BANK_WRITE)),
) -> dict[str, Any]:
    """Add hashes directly: body ``{signal type: hash}``."""
    banks.visible_bank(ctx.db, who, bank_name, write=True)
    return _add_signals(ctx, who, bank_name, body, "hma signal")


@router.get(
    "/status",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def hma_status(ctx: ServiceContext = Depends(get_ctx)) -> PlainTextResponse:
    """``I-AM-ALIVE`` (200) when the database answers, ``NOT-READY`` (503) otherwise."""
    if ctx.database_ready():
        return PlainTextResponse("I-AM-ALIVE")
    return PlainTextResponse("NOT-READY", status_code=503)
