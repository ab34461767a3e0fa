"""Hash exchanges this service syncs (``/v1/exchanges``): status of each, and a way to
ask for a sync now (run by ``tipline worker``). Exchanges are configured with
``tipline exchange add``; they are service-wide, so tenant-bound keys see none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from tipline.api.context import ServiceContext, get_ctx
from tipline.api.deps import require
from tipline.api.schemas import problems
from tipline.services import exchanges
from tipline.services.auth import Permission, Principal

router = APIRouter(prefix="/v1/exchanges", tags=["exchanges"])
_read = require(Permission.BANK_READ)
_write = require(Permission.BANK_WRITE)
_NAME = Path(..., min_length=1, max_length=64, description="exchange name")


class ExchangeOut(BaseModel):
    """An exchange and where its syncs stand. ``credential`` names where the secret is
    read from (``env:VAR`` or ``file:PATH``), never the secret."""

    name: str
    kind: str
    bank: str
    enabled: bool
    interval_seconds: int
    config: dict[str, Any]
    credential: str
    checkpoint: dict[str, Any] | None
    totals: dict[str, Any] = Field(
        description="pages, added, updated, unchanged, removed, removed_unknown, "
        "no_signal, unsupported {type: count}"
    )
    created_at: datetime
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lag_seconds: float | None = Field(description="now minus the source's newest data time")
    feedback: dict[str, int] = Field(
        description="votes owed to the source (NCMEC) by status: pending, sent, failed"
    )

    @classmethod
    def of(cls, status: exchanges.ExchangeStatus) -> ExchangeOut:
        """Wire form."""
        return cls(**status.as_dict())


class SyncQueuedOut(BaseModel):
    """A queued sync job."""

    job_id: str


@router.get("", response_model=list[ExchangeOut], responses=problems())
def list_exchanges(
    ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_read)
) -> list[ExchangeOut]:
    """Every exchange with its status."""
    return [ExchangeOut.of(x) for x in exchanges.list_exchanges(ctx.db, actor=who)]


@router.get("/{name}", response_model=ExchangeOut, responses=problems(404))
def show_exchange(
    name: str = _NAME, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_read)
) -> ExchangeOut:
    """One exchange's status."""
    return ExchangeOut.of(exchanges.exchange_status(ctx.db, name, actor=who))


@router.post("/{name}/sync", response_model=SyncQueuedOut, status_code=202, responses=problems(404))
def sync_now(
    name: str = _NAME, ctx: ServiceContext = Depends(get_ctx), who: Principal = Depends(_write)
) -> SyncQueuedOut:
    """Queue a sync to run now on a worker (asking again within a minute returns the
    same job)."""
    return SyncQueuedOut(job_id=exchanges.request_sync(ctx.db, name, actor=who))
