"""tipline's signed hash feed (``/v1/feeds``): the pages another tipline service's
exchange of kind ``tipline-feed`` syncs. Only banks listed in ``TIPLINE_FEED_BANKS`` are
published; every page is signed with the service's Ed25519 key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services import exchanges
from tipline.services.auth import Permission, Principal

router = APIRouter(prefix="/v1/feeds", tags=["exchanges"])
_read = require(Permission.BANK_READ)


class FeedItemOut(BaseModel):
    """One entry's current state (``removed``: disabled at the publisher)."""

    id: str
    seq: int
    removed: bool
    labels: list[str]
    signals: list[str] = Field(description="TYPE:VALUE strings")


class FeedPageBody(BaseModel):
    """The signed part of a page."""

    format: str = Field(description="tipline-feed/1")
    feed: str
    instance: str = Field(description="the publisher's database instance id")
    after: int = Field(description="the change sequence this page answers")
    next: int = Field(description="ask for after=next for the following page")
    more: bool
    issued_at: str
    items: list[FeedItemOut]


class FeedPageOut(BaseModel):
    """A page and its Ed25519 signature over the canonical JSON of ``page``."""

    page: FeedPageBody
    key_id: str
    signature: str = Field(description="base64 Ed25519 signature")


def _publisher(ctx: ServiceContext) -> exchanges.Publisher:
    found = ctx.services.get("feed_publisher")
    if not isinstance(found, exchanges.Publisher):
        found = exchanges.Publisher.from_settings(ctx.settings)
        ctx.services["feed_publisher"] = found
    return found


@router.get(
    "/{bank}",
    response_model=FeedPageOut,
    responses=problems(404),
    summary="A signed page of a published bank's changes",
)
def feed_page(
    bank: str = Path(..., min_length=1, max_length=200),
    after: int = Query(0, ge=0, description="change sequence already applied"),
    limit: int = Query(1000, ge=1, le=5000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> Any:
    """Entries of ``bank`` changed after ``after``, oldest first, signed."""
    document = exchanges.page_of(ctx.db, _publisher(ctx), bank, after=after, limit=limit)
    return JSONResponse(document)
