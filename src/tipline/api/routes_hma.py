"""HMA-compatible endpoints (OpenMediaMatch 1.1's hashing, matching and curation routes).

Same paths, parameters, response keys and types and status codes as HMA 1.1, so an HMA
integration switches by changing its base URL. Differences are listed in docs/api.md:
errors are problem documents that also carry HMA's ``message``; a key is required unless
the HMA compatibility setting (``hma_compat_role``) lets keyless clients in from
``hma_compat_networks``; bank matching ratios are 0 or 1.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from tipline.api import lookup
from tipline.api.audit_log import record_media_access
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require_hma
from tipline.api.media import fetch_media, hash_upload
from tipline.api.schemas import problems
from tipline.errors import (
    ConflictError,
    HashFormatError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TiplineError,
)
from tipline.services import banks, hma
from tipline.services.auth import Permission, Principal, can_see_tenant
from tipline.services.matching.match import Match
from tipline.signals.base import Signal, get_signal_type
from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, HashResult
from tipline.signals.limits import MediaLimits
from tipline.signals.pdq import EXIF_RAW, LOW_QUALITY_THRESHOLD
from tipline.signals.vpdq import to_pytx_json

router = APIRouter(tags=["hma"])

#: HMA content types -> the signals HMA computes for them by default
_DEFAULT_SIGNALS: dict[str, tuple[str, ...]] = {
    "photo": ("pdq",),
    "video": ("vpdq", "video_md5"),
}
#: ... and those a ``types`` selection may also name (md5 of photos: tipline only)
_ALLOWED_SIGNALS: dict[str, tuple[str, ...]] = {
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


class HmaContentMetadata(BaseModel):
    """HMA's BankedContentMetadata (user-supplied part; unknown keys are refused)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    content_id: str | None = None
    content_uri: str | None = None
    json_data: dict[str, Any] | None = Field(None, alias="json")


class MatchWithDistance(BaseModel):
    """One match of ``/m/lookup`` and ``/m/raw_lookup?include_distance=true``."""

    bank_content_id: int
    distance: str


class RawLookupResponse(BaseModel):
    """``/m/raw_lookup``: content ids, or matches with distances."""

    matches: list[int | MatchWithDistance]


def _ratio(enabled: bool) -> float:
    return 1.0 if enabled else 0.0


def _bank_out(bank: Any) -> dict[str, Any]:
    return {"name": bank.name, "matching_enabled_ratio": _ratio(bank.enabled)}


def _types(content_type: str, types: str | None) -> tuple[str, ...]:
    allowed = _ALLOWED_SIGNALS.get(content_type)
    if allowed is None:
        raise InputError(f"no such content_type: '{content_type}'")
    if types is None:
        return _DEFAULT_SIGNALS[content_type]
    chosen = tuple(dict.fromkeys(t.strip() for t in types.split(",") if t.strip()))
    for name in chosen:
        if name not in allowed:
            raise InputError(f"signal type '{name}' doesn't exist or is disabled")
    if not chosen:
        raise InputError("empty signal type selection")
    return chosen


def _hma_value(signal: Signal) -> str:
    """A computed signal as HMA (python-threatexchange) writes it: no PDQ below quality
    50 (an empty string, as pytx's PdqSignal), vPDQ in pytx's JSON form."""
    if signal.type == "pdq" and signal.quality is not None:
        return "" if signal.quality < LOW_QUALITY_THRESHOLD else signal.value
    if signal.type == "vpdq":
        return to_pytx_json(signal.value)
    return signal.value


#: type -> values of one media item: HMA's (python-threatexchange's) value first, then
#: tipline's own when it differs (the PDQ after EXIF orientation)
Hashes = dict[str, list[str]]


def _as_map(result: HashResult) -> Hashes:
    out: Hashes = {}
    for s in result.signals:
        if s.variant is None:
            out.setdefault(s.type, []).append(_hma_value(s))
    for s in result.signals:  # pytx ignores EXIF orientation: its hash comes first
        if s.variant == EXIF_RAW and s.type in out:
            value = _hma_value(s)
            if value not in out[s.type]:
                out[s.type].insert(0, value)
    return out


def _first(hashes: Hashes) -> dict[str, str]:
    return {kind: values[0] for kind, values in hashes.items()}


def _banks_filter(banks_param: str | None) -> set[str] | None:
    return set(banks_param.split(",")) if banks_param else None


def _photo(result: HashResult, data: bytes) -> bytes | None:
    """The bytes of a photo (kept for a bank's region descriptors), else None."""
    return data if result.media == "photo" else None


async def _hash_url(
    ctx: ServiceContext,
    who: Principal,
    url: str,
    content_type: str | None,
    types: str | None,
    decode: DecodeMode = DecodeMode.FAST,
) -> tuple[Hashes, bytes | None]:
    """The fetched media's hashes, and its bytes when it is a photo."""
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
    options = HashOptions(signals=wanted, decode=decode, exif_raw=True)
    result = await hash_upload(ctx, fetched.data, url, options)
    return _as_map(result), _photo(result, fetched.data)


async def _read_form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("Missing multipart/form-data file upload")
    try:
        return await request.form(max_files=2, max_fields=10)
    except TiplineError:
        raise
    except Exception as exc:  # malformed multipart bodies
        raise InputError(f"malformed multipart/form-data body: {type(exc).__name__}") from None


async def _hash_form(
    ctx: ServiceContext,
    who: Principal,
    form: FormData,
    types: str | None,
    decode: DecodeMode = DecodeMode.FAST,
) -> tuple[Hashes, bytes | None]:
    """Hash the one file of ``form``; its field name (``photo``/``video``) is its HMA
    content type. Returns the hashes, and the bytes when the file is a photo."""
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise InputError("Missing multipart/form-data file upload")
    if len(files) > 1:
        raise InputError("Only one file allowed per request")
    field_name, upload = files[0]
    wanted = _types(field_name, types)
    data = await upload.read()
    await record_media_access(ctx, who, "hma.hash.upload", {"bytes": len(data)})
    options = HashOptions(signals=wanted, decode=decode, exif_raw=True)
    result = await hash_upload(ctx, data, upload.filename or "upload", options)
    return _as_map(result), _photo(result, data)


async def _hash_request(
    ctx: ServiceContext,
    who: Principal,
    request: Request,
    types: str | None,
    decode: DecodeMode = DecodeMode.FAST,
) -> Hashes:
    form = await _read_form(request)
    try:
        return (await _hash_form(ctx, who, form, types, decode))[0]
    finally:
        await form.close()  # spooled temporary files go at once, also on errors


# -- hashing --------------------------------------------------------------------------------


@router.get("/h/hash", responses=problems(400, 413, 415, 422))
async def hma_hash_url(
    url: str = Query(..., max_length=4096),
    content_type: str | None = Query(None, max_length=20),
    types: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.HASH)),
) -> dict[str, str]:
    """Fetch ``url`` and return ``{signal type: hash}`` (PDQ ``""`` below quality 50),
    computed like python-threatexchange (reference decode, EXIF ignored)."""
    return _first((await _hash_url(ctx, who, url, content_type, types, DecodeMode.EXACT))[0])


@router.post("/h/hash", openapi_extra=_MULTIPART_BODY, responses=problems(400, 415))
async def hma_hash_upload(
    request: Request,
    types: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.HASH)),
) -> dict[str, str]:
    """Hash one uploaded file (field ``photo`` or ``video``): ``{signal type: hash}``,
    computed like python-threatexchange (reference decode, EXIF ignored)."""
    return _first(await _hash_request(ctx, who, request, types, DecodeMode.EXACT))


# -- matching -------------------------------------------------------------------------------


def _check_type(signal_type: str) -> str:
    try:
        return get_signal_type(signal_type).name
    except HashFormatError:
        raise InputError(f"No such SignalType '{signal_type}'") from None


def _query(
    ctx: ServiceContext,
    who: Principal,
    signal: str,
    signal_type: str,
    entry_pks: dict[tuple[str, str], int] | None = None,
) -> list[Match]:
    """Matches of one hash (allow-bank suppressed ones dropped: HMA has none)."""
    kind = _check_type(signal_type)
    if kind == "pdq" and signal == "":
        raise InputError("invalid signal: invalid PDQ hash (no hash: photo quality below 50)")
    try:
        found = lookup.match_hash(ctx, who, kind, signal, entry_pks=entry_pks)
    except HashFormatError as exc:
        raise InputError(f"invalid signal: {exc.message}") from None
    return [m for m in found if m.suppressed_by is None]


def _distance(m: Match) -> str:
    """HMA's distance string (python-threatexchange's ``pretty_str``)."""
    if m.query_match_percent is not None and m.compared_match_percent is not None:
        return f"{m.query_match_percent:.0f}%[{m.compared_match_percent:.0f}%]"
    return str(m.distance)


def _by_bank(
    ctx: ServiceContext,
    who: Principal,
    signals: str | list[str],
    signal_type: str,
    wanted: set[str] | None,
) -> dict[str, list[dict[str, Any]]]:
    """``{bank: [{"bank_content_id", "distance"}]}`` of one hash, or of several values of
    one media item (each content once, at its smallest distance)."""
    values = [signals] if isinstance(signals, str) else signals
    known: dict[tuple[str, str], int] = {}
    best: dict[tuple[str, str], Match] = {}
    for value in values:
        for m in _query(ctx, who, value, signal_type, known):
            if wanted is not None and m.bank not in wanted:
                continue
            key = (m.bank, m.entry_id)
            if key not in best or m.distance < best[key].distance:
                best[key] = m
    matches = list(best.values())
    ids = lookup.entry_pks(ctx, [(m.bank, m.entry_id) for m in matches], known=known)
    out: dict[str, list[dict[str, Any]]] = {}
    for m in matches:
        pk = ids.get((m.bank, m.entry_id))
        if pk is not None:
            out.setdefault(m.bank, []).append({"bank_content_id": pk, "distance": _distance(m)})
    return out


#: Longest signal a GET query may carry. Every GET route's parameters are bounded so that
#: even fully percent-encoded (12 bytes per character) the request line stays under the
#: HTTP server's own limit (~64 KB), beyond which uvicorn answers a plain-text 400 that no
#: route can document; long values (vPDQ of long videos) go in a POST body.
_GET_SIGNAL_CHARS = 2048


@router.get("/m/raw_lookup", response_model=RawLookupResponse, responses=problems(400, 422))
def hma_raw_lookup(
    signal: str = Query(..., max_length=_GET_SIGNAL_CHARS),
    signal_type: str = Query(..., max_length=40),
    banks: str | None = Query(None, max_length=1024),
    include_distance: bool = Query(False),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.MATCH)),
) -> dict[str, list[Any]]:
    """``{"matches": [content ids]}`` or, with ``include_distance``,
    ``{"matches": [{"bank_content_id": id, "distance": "<n>"}]}``; ``banks`` (comma
    separated) keeps only those banks' matches."""
    found = _by_bank(ctx, who, signal, signal_type, _banks_filter(banks))
    matches = [m for per_bank in found.values() for m in per_bank]
    if include_distance:
        return {"matches": matches}
    return {"matches": [m["bank_content_id"] for m in matches]}


def _lookup_map(
    ctx: ServiceContext, who: Principal, hashes: Hashes, wanted: set[str] | None
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {kind: _by_bank(ctx, who, values, kind, wanted) for kind, values in hashes.items()}


@router.get("/m/lookup", responses=problems(400, 415, 422))
async def hma_lookup_get(
    url: str | None = Query(None, max_length=2048),
    content_type: str | None = Query(None, max_length=20),
    types: str | None = Query(None, max_length=200),
    signal_type: str | None = Query(None, max_length=40),
    signal: str | None = Query(None, max_length=1024),
    banks: str | None = Query(None, max_length=512),
    seed: str | None = Query(None, max_length=200),
    bypass_coinflip: bool = Query(False),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.MATCH)),
) -> Any:
    """With ``signal_type`` and ``signal``: ``{bank: [{"bank_content_id", "distance"}]}``;
    with ``url``: that keyed by signal type (the inner map alone when ``signal_type`` is
    also given). ``banks`` (comma separated) keeps only those banks."""
    wanted = _banks_filter(banks)
    if url:
        who.require(Permission.HASH)
        hashes, _ = await _hash_url(ctx, who, url, content_type, types)
        result = await run_in_threadpool(_lookup_map, ctx, who, hashes, wanted)
        if signal_type is not None:
            return result.get(signal_type, {})
        return result
    if not signal or not signal_type:
        raise InputError("Either url or both signal and signal_type are required")
    return await run_in_threadpool(_by_bank, ctx, who, signal, signal_type, wanted)


@router.post("/m/lookup", openapi_extra=_MULTIPART_BODY, responses=problems(400, 415))
async def hma_lookup_post(
    request: Request,
    types: str | None = Query(None, max_length=200),
    banks: str | None = Query(None, max_length=4096),
    seed: str | None = Query(None, max_length=200),
    bypass_coinflip: bool = Query(False),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.MATCH)),
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Hash the uploaded file; ``{signal type: {bank: [{"bank_content_id",
    "distance"}]}}``."""
    hashes = await _hash_request(ctx, who, request, types)
    return await run_in_threadpool(_lookup_map, ctx, who, hashes, _banks_filter(banks))


@router.post("/m/compare", responses=problems(400))
def hma_compare(
    body: Any = Body(..., examples=[{"pdq": ["f" * 64, "f" * 63 + "e"]}]),
    who: Principal = Depends(require_hma(Permission.MATCH)),
) -> dict[str, list[Any]]:
    """Compare pairs of hashes: ``{type: [h1, h2]}`` -> ``{type: [match, {"distance":
    n}]}`` (vPDQ: the two match percentages)."""
    if not isinstance(body, dict):
        raise InputError("Request input was not a dict")
    out: dict[str, list[Any]] = {}
    for kind, pair in body.items():
        if not isinstance(pair, list):
            raise InputError(f"Comparison hashes for {kind} was not a list")
        if len(pair) != 2:
            raise InputError("Comparison hash list length must be exactly 2")
        if not all(isinstance(x, str) for x in pair):
            raise InputError(f"Invalid {kind} hash: expected strings")
        matched, similarity = hma.compare(str(kind), pair[0], pair[1])
        out[str(kind)] = [matched, similarity]
    return out


@router.get("/m/index/status", responses=problems(400))
def hma_index_status(
    signal_type: str | None = Query(None, max_length=40),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.MATCH)),
) -> dict[str, dict[str, Any]]:
    """``{signal type: {"present", "built_to", "size"}}`` of this worker's index:
    ``built_to`` is the unix time the index last caught up with the database (-1 and
    ``present: false`` while it holds no hash of the type), ``size`` its hashes."""
    matcher = lookup.matcher(ctx)
    matcher.refresh()
    sizes = matcher.sizes()
    built_to = int(matcher.synced_at)
    names = ["pdq", "md5", "vpdq", "video_md5"]
    names += sorted(n for n in sizes if n not in names)
    if signal_type is not None:
        if signal_type not in names:
            raise InputError(f"No such signal type '{signal_type}'")
        names = [signal_type]
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        size = sizes.get(n, 0)
        out[n] = (
            {"present": True, "built_to": built_to, "size": size}
            if size
            else {"present": False, "built_to": -1, "size": 0}
        )
    return out


# -- curation: banks ------------------------------------------------------------------------


def _enabled_from(enabled: bool | None, ratio: float | None) -> bool | None:
    if ratio is not None:
        if ratio not in (0.0, 1.0):
            raise InputError("enabled_ratio must be 0 or 1 (partial matching is not supported)")
        return ratio == 1.0
    return enabled


@router.get("/c/banks", response_model=list[HmaBank], responses=problems())
def hma_banks(
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_READ)),
) -> list[HmaBank]:
    """Every bank visible to the caller."""
    return [
        HmaBank(**_bank_out(i.bank))
        for i in banks.list_banks(ctx.db)
        if can_see_tenant(who, i.bank.tenant)
    ]


@router.post("/c/banks", response_model=HmaBank, status_code=201, responses=problems(400, 403))
def hma_bank_create(
    body: HmaBankIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> HmaBank:
    """Create a bank named ``[A-Z_][A-Z0-9_]*`` (else 400; taken: 403 as in HMA)."""
    enabled = _enabled_from(body.enabled, body.enabled_ratio)
    try:
        bank = hma.create_hma_bank(
            ctx.db, who, body.name, enabled=True if enabled is None else enabled
        )
    except ConflictError as exc:
        # HMA's status; a tenant is told the native, non-disclosing words (see banks)
        raise PermissionDeniedError(exc.message if who.tenant else "Bank already exists") from None
    return HmaBank(**_bank_out(bank))


def _bank_404(_exc: NotFoundError, name: str) -> NotFoundError:
    return NotFoundError(f"bank '{name}' not found")


@router.get("/c/bank/{bank_name}", response_model=HmaBank, responses=problems(404))
def hma_bank_get(
    bank_name: str,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_READ)),
) -> HmaBank:
    """One bank."""
    try:
        info = banks.visible_bank(ctx.db, who, bank_name)
    except NotFoundError as exc:
        raise _bank_404(exc, bank_name) from None
    return HmaBank(**_bank_out(info.bank))


@router.put("/c/bank/{bank_name}", response_model=HmaBank, responses=problems(400, 404))
def hma_bank_update(
    bank_name: str,
    body: HmaBankUpdate,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> HmaBank:
    """Switch a bank on or off (renaming is not supported: 400)."""
    try:
        banks.visible_bank(ctx.db, who, bank_name, write=True)
    except NotFoundError:
        raise NotFoundError("Bank not found") from None
    if body.name is not None and body.name != bank_name:
        hma.check_bank_name(body.name)
        raise InputError("renaming a bank is not supported")
    enabled = _enabled_from(body.enabled, body.enabled_ratio)
    bank = banks.update_bank(ctx.db, bank_name, enabled=enabled, actor=who)
    return HmaBank(**_bank_out(bank))


@router.delete("/c/bank/{bank_name}", responses=problems())
def hma_bank_delete(
    bank_name: str,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> dict[str, str]:
    """Delete a bank and its content: ``{"message": "Done"}`` (also when it is absent,
    as in HMA)."""
    with contextlib.suppress(NotFoundError):
        banks.delete_bank(ctx.db, bank_name, actor=who)
    return {"message": "Done"}


# -- curation: content ----------------------------------------------------------------------


def _signals_out(content: hma.Content) -> dict[str, str]:
    """HMA's one value per type: the first stored (python-threatexchange's hash; a photo
    with an EXIF orientation also holds tipline's oriented PDQ, matched but not shown)."""
    out: dict[str, str] = {}
    for s in content.entry.signals:
        out.setdefault(s.type, to_pytx_json(s.value) if s.type == "vpdq" else s.value)
    return out


def _metadata(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InputError("metadata should be a json object")
    raw = {k: v for k, v in raw.items() if k != "collab"}
    try:
        model = HmaContentMetadata(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InputError(f"Invalid metadata: {where}: {first['msg']}") from None
    dumped = model.model_dump(by_alias=True, exclude_none=True)
    return dumped or None


@router.get("/c/bank/{bank_name}/content/{content_id}", responses=problems(404, 422))
def hma_content_get(
    bank_name: str,
    content_id: int,
    include_signals: str = Query("false", max_length=10),
    include_metadata: str = Query("true", max_length=10),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_READ)),
) -> dict[str, Any]:
    """One content: ``id``, ``disable_until_ts``, ``original_media_uri``, ``bank``, and
    ``signals`` (``include_signals=true``), ``metadata``, ``note`` when present."""
    content = hma.get_content(ctx.db, who, bank_name, content_id)
    out: dict[str, Any] = {
        "id": content.id,
        "disable_until_ts": content.disable_until_ts,
        "original_media_uri": None,
        "bank": _bank_out(content.bank),
    }
    if include_signals.lower() == "true":
        out["signals"] = _signals_out(content)
    if include_metadata.lower() == "true" and content.metadata:
        md = content.metadata
        out["metadata"] = {
            "content_id": md.get("content_id"),
            "content_uri": md.get("content_uri"),
            "json": md.get("json"),
            "collab": None,
        }
    if content.note is not None:
        out["note"] = content.note
    return out


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return int(value.lower() == "true")
        try:
            return int(value)
        except ValueError:
            pass
    raise InputError(f"Invalid int: '{value}'")


@router.put("/c/bank/{bank_name}/content/{content_id}", responses=problems(400, 404, 422))
def hma_content_update(
    bank_name: str,
    content_id: int,
    body: dict[str, Any] = Body(..., examples=[{"disable_until_ts": 0, "note": "reviewed"}]),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> dict[str, Any]:
    """Set ``disable_until_ts`` (1 enabled, 0 disabled, else the unix time matching
    resumes; at most 5 years ahead) and/or ``note``; returns the content."""
    until = _as_int(body["disable_until_ts"]) if "disable_until_ts" in body else None
    now = time.time()
    max_until = int((datetime.now(UTC) + timedelta(days=365 * 5)).timestamp())
    kwargs: dict[str, Any] = {"disable_until_ts": until, "now": now, "max_until": max_until}
    if "note" in body:
        kwargs["note"] = body["note"]
    content = hma.update_content(ctx.db, who, bank_name, content_id, **kwargs)
    return {
        "id": content.id,
        "disable_until_ts": content.disable_until_ts,
        "collab_metadata": {},
        "original_media_uri": None,
        "bank": _bank_out(content.bank),
        "user_metadata": content.metadata,
        "note": content.note,
    }


@router.delete("/c/bank/{bank_name}/content/{content_id}", responses=problems(404, 422))
def hma_content_delete(
    bank_name: str,
    content_id: int,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> dict[str, int]:
    """Remove a content: ``{"deleted": 1}`` (0 when the bank has no such content)."""
    return {"deleted": hma.delete_content(ctx.db, who, bank_name, content_id)}


def _added(content: hma.Content) -> dict[str, Any]:
    return {"id": content.id, "signals": _signals_out(content)}


@router.post(
    "/c/bank/{bank_name}/content",
    openapi_extra=_MULTIPART_BODY,
    responses=problems(400, 404, 415),
)
async def hma_bank_add_content(
    request: Request,
    bank_name: str,
    url: str | None = Query(None, max_length=4096),
    content_type: str | None = Query(None, max_length=20),
    types: str | None = Query(None, max_length=200),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> dict[str, Any]:
    """Add content by ``url`` or multipart upload (field ``photo``/``video``), with
    optional ``metadata`` (``content_id``, ``content_uri``, ``json``) and ``note`` in a
    JSON body or form fields: ``{"id", "signals": {type: hash}}``; a new id every time."""
    try:
        await run_in_threadpool(banks.visible_bank, ctx.db, who, bank_name, write=True)
    except NotFoundError as exc:
        raise _bank_404(exc, bank_name) from None
    declared = request.headers.get("content-type", "")
    form: FormData | None = None
    raw_meta: Any = None
    raw_note: Any = None
    try:
        if declared.startswith("application/json"):
            try:
                payload = json.loads(await request.body() or b"null")
            except ValueError:
                raise InputError("request body is not valid JSON") from None
            if isinstance(payload, dict):
                raw_meta, raw_note = payload.get("metadata"), payload.get("note")
        elif declared.startswith("multipart/form-data"):
            form = await _read_form(request)
            if "metadata" in form:
                try:
                    raw_meta = json.loads(str(form["metadata"]))
                except ValueError:
                    raise InputError("metadata form field must be valid JSON") from None
            raw_note = form.get("note")
        metadata = _metadata(raw_meta)
        note = hma.check_note(raw_note)
        # Reference decode: hashes stored in a bank are shared (see services.bank_media).
        if url:
            hashes, photo = await _hash_url(ctx, who, url, content_type, types, DecodeMode.EXACT)
        elif form is not None and any(isinstance(v, UploadFile) for _, v in form.multi_items()):
            hashes, photo = await _hash_form(ctx, who, form, types, DecodeMode.EXACT)
        else:
            raise InputError("Neither `url` nor multipart file upload was received")
    finally:
        if form is not None:
            await form.close()
    content = await run_in_threadpool(
        lambda: hma.add_content(
            ctx.db,
            who,
            bank_name,
            hashes,
            note=note,
            metadata=metadata,
            source=hma.SOURCE_CONTENT,
            photo=photo,
            limits=MediaLimits.of(ctx.settings),
        )
    )
    return _added(content)


@router.post("/c/bank/{bank_name}/signal", responses=problems(400, 404))
def hma_bank_add_signal(
    bank_name: str,
    body: dict[str, Any] = Body(..., examples=[{"pdq": "f" * 64, "note": "from campaign"}]),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require_hma(Permission.BANK_WRITE)),
) -> dict[str, Any]:
    """Add hashes directly: body ``{signal type: hash, "note"?: text}``."""
    try:
        banks.visible_bank(ctx.db, who, bank_name, write=True)
    except NotFoundError as exc:
        raise _bank_404(exc, bank_name) from None
    data = dict(body)
    note = hma.check_note(data.pop("note", None))
    content = hma.add_content(ctx.db, who, bank_name, data, note=note, source=hma.SOURCE_SIGNAL)
    return _added(content)


# -- system ---------------------------------------------------------------------------------


_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}}
}


@router.get("/status", response_class=PlainTextResponse, responses=_TEXT)
def hma_status(ctx: ServiceContext = Depends(get_ctx)) -> PlainTextResponse:
    """``I-AM-ALIVE`` (200) when the database answers, ``NOT-READY`` (503) otherwise."""
    if ctx.database_ready():
        return PlainTextResponse("I-AM-ALIVE")
    return PlainTextResponse("NOT-READY", status_code=503)


@router.get("/status/live", response_class=PlainTextResponse, responses=_TEXT)
def hma_status_live() -> PlainTextResponse:
    """``I-AM-ALIVE`` whenever the process serves HTTP (no database or index check)."""
    return PlainTextResponse("I-AM-ALIVE")


@router.get("/site-map")
def hma_site_map(request: Request) -> list[str]:
    """Every route path, sorted (path parameters written ``<name>`` as in HMA)."""
    found = {str(getattr(r, "path", "") or "") for r in request.app.routes}
    found.update(request.app.openapi().get("paths", {}))
    found.add("/openapi/openapi.json")
    paths = {p.replace("{", "<").replace("}", ">") for p in found}
    return sorted(p for p in paths if p)


@router.get("/openapi/openapi.json", include_in_schema=False)
def hma_openapi(request: Request) -> dict[str, Any]:
    """The OpenAPI document at HMA's path (also served at ``/openapi.json``)."""
    doc: dict[str, Any] = request.app.openapi()
    return doc
