"""Banks and entries (``/v1/banks``): create, list, show, change, add and disable entries.

The use cases are :mod:`tipline.services.banks`; this module adds tenant checks (a
tenant reads its own and shared banks, writes only its own) and the wire models.
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from tipline.api.audit_log import record_media_access
from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.media import RAW_MEDIA_BODY, hash_upload, read_media
from tipline.api.schemas import problems
from tipline.banks.auto_report import AutoReport
from tipline.banks.model import BankEntry
from tipline.services import bank_media, banks, input_limits
from tipline.services.auth import Permission, Principal, can_see_tenant
from tipline.services.database import Database
from tipline.signals.limits import MediaLimits

router = APIRouter(prefix="/v1", tags=["banks"])
_read = require(Permission.BANK_READ)
_write = require(Permission.BANK_WRITE)
BANK_NAME = Path(..., min_length=1, max_length=200, description="bank name")
ENTRY_ID = Path(..., min_length=1, max_length=200, description="entry id")


def bank_db(ctx: ServiceContext) -> Database:
    """The banks service's handle on this app's engine (no second connection pool)."""
    return ctx.db


class BankIn(BaseModel):
    """A new bank."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    thresholds: dict[str, StrictInt] = Field(
        default_factory=dict, description="signal type -> match threshold (bits for pdq)"
    )
    allow: bool = Field(False, description="an allow bank: its entries suppress matches")
    enabled: bool = True
    normalize: bool = Field(
        True,
        description="also match queries without their borders, caption bars and "
        "screenshot frames (the query's normalised PDQ variants)",
    )
    auto_report: AutoReport = Field(
        "default",
        description="auto-report policy at match time: default (exact digest matches "
        "when the settings list the bank in report_auto_banks), off, exact (exact digest "
        "matches) or trusted (exact digest matches and PDQ matches at distance 0)",
    )


class BankPatch(BaseModel):
    """Changes to a bank (omitted fields stay as they are)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=10_000)
    thresholds: dict[str, StrictInt] | None = Field(
        None, description="signal type -> match threshold (JSON integers only)"
    )
    enabled: bool | None = None
    normalize: bool | None = Field(
        None, description="match the query's normalised variants (borders etc. removed)"
    )
    region_matching: bool | None = Field(
        None,
        description="the bank-side robust tier: entries added from media also match "
        "crops (up to 10%) and rotations (up to 5 degrees) of their original",
    )
    auto_report: AutoReport | None = Field(
        None,
        description="auto-report policy at match time: default (exact digest matches "
        "when the settings list the bank in report_auto_banks), off, exact (exact digest "
        "matches) or trusted (exact digest matches and PDQ matches at distance 0)",
    )


class BankOut(BaseModel):
    """A bank with its counts."""

    name: str
    description: str
    enabled: bool
    allow: bool
    thresholds: dict[str, int]
    normalize: bool = Field(description="the query's normalised variants match here too")
    region_matching: bool = Field(
        description="entries added from media also match crops and small rotations"
    )
    auto_report: str = Field(description="auto-report policy at match time")
    tenant: str | None
    entries: int
    disabled_entries: int
    signals: dict[str, int]

    @classmethod
    def of(cls, info: banks.BankInfo) -> BankOut:
        """Wire form of a :class:`BankInfo`."""
        b = info.bank
        return cls(
            name=b.name,
            description=b.description,
            enabled=b.enabled,
            allow=b.is_allow_bank,
            thresholds=dict(b.thresholds),
            normalize=b.normalize,
            region_matching=b.region_matching,
            auto_report=b.auto_report,
            tenant=b.tenant,
            entries=info.entries,
            disabled_entries=info.disabled_entries,
            signals=dict(info.signals),
        )


class EntryIn(BaseModel):
    """A new entry given by its signals (``type:value`` strings)."""

    model_config = ConfigDict(extra="forbid")

    signals: list[str] = Field(..., min_length=1, max_length=64, examples=[["pdq:" + "f" * 64]])
    entry_id: str | None = Field(None, min_length=1, max_length=200)
    labels: list[Annotated[str, Field(max_length=input_limits.MAX_LABEL_CHARS)]] = Field(
        default_factory=list, max_length=input_limits.MAX_LABELS
    )
    source: str | None = Field(None, max_length=2000)


class EntryPatch(BaseModel):
    """Disable (with a reason) or re-enable an entry."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool
    reason: str | None = Field(None, max_length=2000)


class EntryOut(BaseModel):
    """A bank entry."""

    bank: str
    entry_id: str
    signals: list[dict[str, str]]
    labels: list[str]
    source: str | None
    added_at: datetime | None
    disabled: bool
    disabled_reason: str | None

    @classmethod
    def of(cls, entry: BankEntry) -> EntryOut:
        """Wire form of a :class:`BankEntry`."""
        return cls(
            bank=entry.bank,
            entry_id=entry.entry_id,
            signals=[{"type": s.type, "value": s.value} for s in entry.signals],
            labels=list(entry.labels),
            source=entry.source,
            added_at=entry.added_at,
            disabled=entry.disabled,
            disabled_reason=entry.disabled_reason,
        )


def visible_bank(
    ctx: ServiceContext, who: Principal, name: str, *, write: bool = False
) -> banks.BankInfo:
    """The bank ``name`` if ``who``'s tenant may see (or write) it; NotFoundError else."""
    return banks.visible_bank(bank_db(ctx), who, name, write=write)


@router.get("/banks", response_model=list[BankOut], responses=problems())
def list_banks(
    ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_read)
) -> list[BankOut]:
    """Banks visible to the key: its tenant's and shared ones."""
    return [
        BankOut.of(i) for i in banks.list_banks(bank_db(ctx)) if can_see_tenant(who, i.bank.tenant)
    ]


@router.post("/banks", response_model=BankOut, status_code=201, responses=problems(400, 409))
def create_bank(
    body: BankIn, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_write)
) -> BankOut:
    """Create a bank owned by the key's tenant (audited)."""
    banks.create_bank(
        bank_db(ctx),
        body.name,
        description=body.description,
        thresholds=body.thresholds,
        allow=body.allow,
        enabled=body.enabled,
        tenant=who.tenant,
        actor=who,
        normalize=body.normalize,
        auto_report=body.auto_report,
    )
    return BankOut.of(banks.show_bank(bank_db(ctx), body.name.strip()))


@router.get("/banks/{name}", response_model=BankOut, responses=problems(404))
def get_bank(
    name: str = BANK_NAME, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_read)
) -> BankOut:
    """One bank with its counts."""
    return BankOut.of(visible_bank(ctx, who, name))


@router.patch("/banks/{name}", response_model=BankOut, responses=problems(400, 404))
def patch_bank(
    body: BankPatch,
    name: str = BANK_NAME,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_write),
) -> BankOut:
    """Switch a bank on or off, change thresholds or description, switch normalised or
    region matching, set the auto-report policy (audited)."""
    visible_bank(ctx, who, name, write=True)
    banks.update_bank(
        bank_db(ctx),
        name,
        enabled=body.enabled,
        thresholds=body.thresholds,
        description=body.description,
        actor=who,
        normalize=body.normalize,
        region_matching=body.region_matching,
        auto_report=body.auto_report,
    )
    return BankOut.of(banks.show_bank(bank_db(ctx), name))


@router.get("/banks/{name}/entries", response_model=list[EntryOut], responses=problems(404))
def list_entries(
    name: str = BANK_NAME,
    offset: int = Query(0, ge=0, le=10**9),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> list[EntryOut]:
    """Entries of a bank, ``limit`` from ``offset``."""
    visible_bank(ctx, who, name)
    entries = banks.iter_bank_entries(bank_db(ctx), name)
    try:
        return [EntryOut.of(e) for e in islice(entries, offset, offset + limit)]
    finally:
        close = getattr(entries, "close", None)
        if close is not None:
            close()


@router.post(
    "/banks/{name}/entries",
    response_model=EntryOut,
    status_code=201,
    responses=problems(400, 404, 409),
)
def add_entry(
    body: EntryIn,
    name: str = BANK_NAME,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_write),
) -> EntryOut:
    """Add an entry by its signals; matchable within a second (audited)."""
    visible_bank(ctx, who, name, write=True)
    entry = banks.add_entry(
        bank_db(ctx),
        name,
        body.signals,
        entry_id=body.entry_id,
        labels=body.labels,
        source=body.source,
        actor=who,
    )
    return EntryOut.of(entry)


@router.post(
    "/banks/{name}/media",
    response_model=EntryOut,
    status_code=201,
    openapi_extra=RAW_MEDIA_BODY,
    responses=problems(400, 404, 409, 415),
)
async def add_media(
    request: Request,
    name: str = BANK_NAME,
    entry_id: str | None = Query(None, min_length=1, max_length=200),
    labels: str | None = Query(None, max_length=2000, description="comma-separated"),
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_write),
) -> EntryOut:
    """Hash the uploaded media and add its signals as a new entry (audited). Photos are
    hashed with the reference decode (full resolution, as pdqhash and HMA decode), so
    banks hold the PDQ other implementations compute; a photo also gets its region
    descriptors (PDQ of crops and small rotations, kept apart from the entry's
    signals) so crops up to 10% and rotations up to 5 degrees of it match."""
    visible_bank(ctx, who, name, write=True)
    data = await read_media(request)
    await record_media_access(ctx, who, "bank.media.upload", {"bank": name, "bytes": len(data)})
    # Reference decode: hashes stored in a bank are shared (see services.bank_media).
    result = await hash_upload(ctx, data, "upload", bank_media.BANK_HASH_OPTIONS)
    entry = await run_in_threadpool(
        bank_media.add_media_bytes,
        bank_db(ctx),
        name,
        data,
        result,
        entry_id=entry_id,
        labels=[x for x in (labels or "").split(",") if x.strip()],
        source="upload",
        actor=who,
        limits=MediaLimits.of(ctx.settings),
    )
    return EntryOut.of(entry)


@router.get("/banks/{name}/entries/{entry_id}", response_model=EntryOut, responses=problems(404))
def get_entry(
    name: str = BANK_NAME,
    entry_id: str = ENTRY_ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_read),
) -> EntryOut:
    """One entry with its signals."""
    visible_bank(ctx, who, name)
    return EntryOut.of(banks.get_entry(bank_db(ctx), name, entry_id))


@router.patch(
    "/banks/{name}/entries/{entry_id}", response_model=EntryOut, responses=problems(400, 404)
)
def patch_entry(
    body: EntryPatch,
    name: str = BANK_NAME,
    entry_id: str = ENTRY_ID,
    ctx: ServiceContext = Depends(get_ctx),
    who: Principal = Depends(_write),
) -> EntryOut:
    """Disable an entry (a reason is required) or enable it again (audited)."""
    visible_bank(ctx, who, name, write=True)
    (entry,) = banks.set_entries_disabled(
        bank_db(ctx),
        name,
        [entry_id],
        disabled=body.disabled,
        reason=body.reason,
        actor=who,
    )
    return EntryOut.of(entry)


@router.delete("/banks/{name}", status_code=204, responses=problems(404))
def delete_bank_route(
    name: str = BANK_NAME, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_write)
) -> None:
    """Delete a bank and all its entries (audited)."""
    banks.delete_bank(bank_db(ctx), name, actor=who)
