"""The evidence vault (``/v1/vault``): list, show and download preserved items (role
``evidence.read``), legal holds, retention, verify and purge (``evidence.admin``).
Every call is audited by the vault service. Key rotation stays on the command line
(``tipline vault rotate-key``): the new master key must never travel over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services import vault
from tipline.services.auth import Permission, Principal

router = APIRouter(prefix="/v1/vault", tags=["vault"])
_read = require(Permission.EVIDENCE_READ)
_admin = require(Permission.EVIDENCE_ADMIN)
_ID = Path(..., min_length=1, max_length=26, description="vault item id")


class HoldOut(BaseModel):
    """A legal hold; active while ``released_at`` is null."""

    id: str
    item_id: str
    reason: str
    placed_at: datetime
    placed_by: str
    released_at: datetime | None
    released_by: str | None
    active: bool

    @classmethod
    def of(cls, hold: vault.HoldInfo) -> HoldOut:
        """Wire form."""
        return cls(**hold.as_dict())


class EvidenceOut(BaseModel):
    """A preserved item's facts (never its content or keys). ``size`` in bytes;
    ``sha256`` is the digest of the content as stored."""

    id: str
    tenant: str | None
    kind: str = Field(description="media, report_xml or other")
    media_type: str | None
    filename: str | None
    size: int
    sha256: str
    blob_sha256: str = Field(description="SHA-256 of the encrypted file")
    key_id: str = Field(description="fingerprint of the master key wrapping the data key")
    submission_id: str | None
    review_item_id: str | None
    report_id: str | None
    content_id: str | None
    meta: dict[str, Any]
    stored_at: datetime
    stored_by: str
    reported_at: datetime | None
    retain_until: datetime
    purged_at: datetime | None
    purged_by: str | None
    held: bool
    holds: list[HoldOut]

    @classmethod
    def of(cls, info: vault.EvidenceInfo) -> EvidenceOut:
        """Wire form."""
        return cls(**info.as_dict())


class HoldIn(BaseModel):
    """Place a legal hold."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(..., min_length=1, max_length=2000, description="case, request, order")


class RetentionIn(BaseModel):
    """Keep an item until a later time (retention never shrinks)."""

    model_config = ConfigDict(extra="forbid")

    retain_until: datetime = Field(..., description="aware ISO 8601 time")

    @field_validator("retain_until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("retain_until needs a time zone (e.g. 2028-01-01T00:00:00Z)")
        if not 2000 <= value.year <= 9000:
            raise ValueError("retain_until must be between the years 2000 and 9000")
        return value


class VerifyIn(BaseModel):
    """Which items to check: ``item_ids``, or every live item of the key's tenant (all
    items for a key of no tenant) page by page (``after``, ``limit``)."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[str] | None = Field(
        None, min_length=1, max_length=1000, description="check only these items"
    )
    after: str | None = Field(
        None, min_length=1, max_length=26, description="id cursor (exclusive): next_after"
    )
    limit: int = Field(200, ge=1, le=1000, description="items checked by this call")

    @field_validator("item_ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not 1 <= len(i) <= 26 for i in value):
            raise ValueError("item ids are 1-26 characters")
        return value


class VerifyFailureOut(BaseModel):
    """An item that failed its check, and why."""

    item_id: str
    error: str


class VerifyOut(BaseModel):
    """What a verify call found. ``ok`` is false when any item failed or a stray file
    (no live item owns it; looked for on a full first page by a key of no tenant) was
    found; ``next_after`` is set when more items remain."""

    ok: bool
    checked: int
    bytes_checked: int = Field(description="plaintext bytes decrypted and checked")
    failures: list[VerifyFailureOut]
    stray_files: list[str]
    next_after: str | None


class PurgeOut(BaseModel):
    """What a purge did: items erased, expired items kept on legal hold, stray files
    removed (only by a key of no tenant)."""

    purged: list[str]
    held: int
    files_removed: int


@router.get("/items", response_model=list[EvidenceOut], responses=problems())
def list_items(
    submission_id: str | None = Query(None, max_length=26),
    review_item_id: str | None = Query(None, max_length=26),
    report_id: str | None = Query(None, max_length=64),
    include_purged: bool = Query(False, description="also list purged items"),
    before: str | None = Query(None, max_length=26, description="id cursor (exclusive)"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> list[EvidenceOut]:
    """The tenant's preserved items, newest first."""
    items = vault.list_items(
        ctx.sessions,
        actor=who,
        submission_id=submission_id,
        review_item_id=review_item_id,
        report_id=report_id,
        include_purged=include_purged,
        before=before,
        limit=limit,
    )
    return [EvidenceOut.of(i) for i in items]


@router.get("/items/{item_id}", response_model=EvidenceOut, responses=problems(404))
def show_item(
    item_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> EvidenceOut:
    """One item: digests, links, retention, holds."""
    return EvidenceOut.of(vault.show(ctx.sessions, item_id, actor=who))


@router.get(
    "/items/{item_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The item's bytes exactly as stored",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **problems(404, 409, 503),
    },
)
def download_item(
    item_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> StreamingResponse:
    """Download an item (audited before any byte is decrypted). Every chunk is
    authenticated before it is sent; damage found mid-way aborts the response, so a
    client that got the whole body (``Content-Length`` bytes matching the
    ``X-Content-SHA256`` header) got the original."""
    info, chunks = vault.open_content(ctx.sessions, ctx.vault(), item_id, actor=who)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(info.size),
            "X-Content-SHA256": info.sha256,
            "Content-Disposition": f'attachment; filename="{info.id}"',
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/items/{item_id}/holds",
    response_model=HoldOut,
    status_code=201,
    responses=problems(404, 409),
)
def place_hold(
    body: HoldIn,
    item_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> HoldOut:
    """Place a legal hold: the item is never purged while it is active."""
    return HoldOut.of(vault.place_hold(ctx.sessions, item_id, reason=body.reason, actor=who))


@router.post(
    "/items/{item_id}/holds/{hold_id}/release",
    response_model=list[HoldOut],
    responses=problems(404, 409),
)
def release_hold(
    item_id: str = _ID,
    hold_id: str = Path(..., min_length=1, max_length=26),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> list[HoldOut]:
    """Release one legal hold."""
    released = vault.release_hold(ctx.sessions, item_id, hold_id=hold_id, actor=who)
    return [HoldOut.of(h) for h in released]


@router.post("/items/{item_id}/retention", response_model=EvidenceOut, responses=problems(404, 409))
def extend_retention(
    body: RetentionIn,
    item_id: str = _ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> EvidenceOut:
    """Keep an item until ``retain_until`` (later than its current date)."""
    info = vault.extend_retention(ctx.sessions, item_id, until=body.retain_until, actor=who)
    return EvidenceOut.of(info)


@router.post("/verify", response_model=VerifyOut, responses=problems(503))
def verify_items(
    body: VerifyIn,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> VerifyOut:
    """Decrypt and check items (wrapped key, file size, every chunk's tag, both SHA-256
    digests) without returning any content; audited as ``vault.verify``. Damage is
    reported in the body (``ok`` false), not as an error status."""
    report = vault.verify(
        ctx.sessions,
        ctx.vault(),
        actor=who,
        item_ids=body.item_ids,
        after=body.after,
        limit=body.limit,
    )
    return VerifyOut(
        ok=report.ok,
        checked=report.checked,
        bytes_checked=report.bytes_checked,
        failures=[VerifyFailureOut(item_id=i, error=e) for i, e in report.failures],
        stray_files=report.stray_files,
        next_after=report.next_after,
    )


@router.post("/purge", response_model=PurgeOut, responses=problems())
def purge_items(
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_admin),
) -> PurgeOut:
    """Erase now the items past their retention that have no active legal hold (each
    audited as ``vault.purge``); a tenant's key purges only its tenant's items. The
    daily purge job of ``tipline worker`` does the same."""
    report = vault.purge(ctx.sessions, ctx.vault(), actor=who)
    return PurgeOut(purged=report.purged, held=report.held, files_removed=report.files_removed)
