"""Media in request handlers: read an upload, hash it off the event loop, fetch a URL."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tipline.api.context import ServiceContext
from tipline.errors import InputError, MediaError
from tipline.services.fetch import Fetched, fetch_url
from tipline.signals.budget import PixelBudget
from tipline.signals.hashing import HashOptions, HashResult, check_signal_names, hash_bytes
from tipline.signals.limits import MediaLimits

#: OpenAPI request body of endpoints that take the raw media bytes.
RAW_MEDIA_BODY = {
    "requestBody": {
        "required": True,
        "description": "The media file's bytes (any supported photo or video format)",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def hash_options(
    signals: str | None, dihedral: bool = False, *, normalize: bool = False
) -> HashOptions:
    """Options from a comma-separated ``signals`` query value (InputError if unknown);
    ``normalize`` adds the PDQ variants without borders, captions and frames."""
    names: tuple[str, ...] = ()
    if signals:
        names = check_signal_names(s for s in signals.split(",") if s.strip())
    return HashOptions(signals=names, dihedral=dihedral, normalize=normalize)


async def read_media(request: Request) -> bytes:
    """The request body (the body-limit middleware has bounded it); InputError if empty."""
    data = await request.body()
    if not data:
        raise MediaError("empty body: send the media file's bytes")
    return data


def decode_budget(ctx: ServiceContext) -> PixelBudget:
    """This worker's budget of decoded pixels (``decode_budget_pixels``), shared by all
    its requests."""
    found = ctx.services.get("decode_budget")
    if isinstance(found, PixelBudget):
        return found
    made = PixelBudget(ctx.settings.decode_budget_pixels, retry_after=1)
    found = ctx.services.setdefault("decode_budget", made)
    assert isinstance(found, PixelBudget)
    return found


def hash_or_raise(ctx: ServiceContext, data: bytes, name: str, options: HashOptions) -> HashResult:
    """Hash ``data``; the result's error (bad media, unsupported, too big, BusyError when
    the worker's decoded-pixel budget is full) is raised."""
    result = hash_bytes(
        data, name, options, limits=MediaLimits.of(ctx.settings), budget=decode_budget(ctx)
    )
    if result.error is not None:
        raise result.error
    ctx.metrics.hashed.labels(result.media or "unknown").inc()
    return result


async def hash_upload(
    ctx: ServiceContext, data: bytes, name: str, options: HashOptions
) -> HashResult:
    """:func:`hash_or_raise` on a worker thread, so the event loop keeps serving."""
    return await run_in_threadpool(hash_or_raise, ctx, data, name, options)


async def fetch_media(ctx: ServiceContext, url: str) -> Fetched:
    """Fetch ``url`` through the SSRF guard on a worker thread."""
    if not url.strip():
        raise InputError("url is empty")
    return await run_in_threadpool(fetch_url, url, settings=ctx.settings)
