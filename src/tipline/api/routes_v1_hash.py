"""Native hashing: ``POST /v1/hash`` (upload bytes), ``GET /v1/hash?url=`` (fetch)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from tipline.api.audit_log import media_access, record_media_access
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.media import RAW_MEDIA_BODY, fetch_media, hash_options, hash_upload, read_media
from tipline.api.schemas import HashOut, problems
from tipline.services.auth import Permission, Principal

router = APIRouter(prefix="/v1", tags=["hashing"])

_SIGNALS = Query(
    None,
    description="Comma-separated signal names (pdq, md5, sha1, sha256, vpdq, ...); "
    "default: pdq, md5, sha256 for photos",
    max_length=200,
)
_DIHEDRAL = Query(False, description="Also hash the 7 rotations/flips (PDQ)")


@router.post(
    "/hash",
    response_model=HashOut,
    openapi_extra=RAW_MEDIA_BODY,
    responses=problems(400, 415),
)
async def hash_upload_route(
    request: Request,
    signals: str | None = _SIGNALS,
    dihedral: bool = _DIHEDRAL,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.HASH)),
) -> HashOut:
    """Hash the uploaded media; the bytes are not stored."""
    options = hash_options(signals, dihedral)
    data = await read_media(request)
    access = media_access(ctx, who, "hash.upload", {"bytes": len(data)})
    try:
        result = await hash_upload(ctx, data, "upload", options)
    finally:
        await access
    return HashOut.of(result)


@router.get("/hash", response_model=HashOut, responses=problems(400, 415))
async def hash_url_route(
    url: str = Query(..., description="http(s) URL of the media", max_length=4096),
    signals: str | None = _SIGNALS,
    dihedral: bool = _DIHEDRAL,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(require(Permission.HASH)),
) -> HashOut:
    """Fetch ``url`` (SSRF-guarded: public addresses only, size and time limits), hash it."""
    options = hash_options(signals, dihedral)
    await record_media_access(ctx, who, "hash.url", {"url": url})
    fetched = await fetch_media(ctx, url)
    result = await hash_upload(ctx, fetched.data, url, options)
    return HashOut.of(result)
