"""Scheduled syncs, run by ``tipline worker`` through the database-leased job runner.

Each enabled exchange has one job per interval slot: its idempotency key names the
exchange and the slot, so any number of workers scheduling at once add it once, and the
job's lease lets only one of them run it. The handler syncs and queues the next slot.
A failed sync is retried by the runner with backoff (and its error shown in the
exchange's status).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tipline.errors import ExchangeError, NotFoundError, TiplineError
from tipline.services import audit, jobs
from tipline.services.database import Database
from tipline.services.exchanges.configure import exchange_status, get_row
from tipline.services.exchanges.sync import AdapterFactory, sync_exchange
from tipline.store.db import transaction
from tipline.store.exchanges import ExchangeRow

#: the job kind of a scheduled sync
SYNC_JOB_KIND = "exchange.sync"
#: the actor scheduled syncs are audited as
WORKER = "worker"


def slot_start(now: datetime, interval_seconds: int) -> datetime:
    """The start of the interval slot ``now`` falls in (slots count from the epoch)."""
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_seconds, UTC)


def _enqueue(db: Database, name: str, at: datetime) -> str:
    with transaction(db.sessions) as s:
        return jobs.enqueue(
            s,
            SYNC_JOB_KIND,
            {"exchange": name},
            idempotency_key=f"{SYNC_JOB_KIND}:{name}:{int(at.timestamp())}",
            run_at=at,
        )


def request_sync(
    db: Database,
    name: str,
    *,
    actor: audit.ActorLike | str = audit.CLI_ACTOR,
    now: datetime | None = None,
) -> str:
    """Queue a sync of ``name`` to run now (for the API); returns the job id. Asking
    again within the same minute returns the same job. Audited as ``exchange.request``."""
    exchange_status(db, name, actor=actor)  # NotFoundError, also for tenant keys
    now = now or datetime.now(UTC)
    at = slot_start(now, 60)
    with transaction(db.sessions) as s:
        job = jobs.enqueue(
            s,
            SYNC_JOB_KIND,
            {"exchange": name},
            idempotency_key=f"{SYNC_JOB_KIND}:{name}:{int(at.timestamp())}",
            run_at=now,
        )
        audit.append(
            s,
            actor=actor,
            action="exchange.request",
            target=("exchange", name),
            details={"job": job},
        )
    return job


def ensure_scheduled(db: Database, *, now: datetime | None = None) -> list[str]:
    """Queue the current slot's sync of every enabled exchange (idempotent)."""
    now = now or datetime.now(UTC)
    with db.sessions() as s:
        rows = s.execute(
            select(ExchangeRow.name, ExchangeRow.interval_seconds).where(ExchangeRow.enabled)
        ).all()
    return [_enqueue(db, n, slot_start(now, int(i))) for n, i in rows]


def sync_handler(
    db: Database, *, reschedule: bool = True, factory: AdapterFactory | None = None
) -> jobs.Handler:
    """The job handler: sync, and with ``reschedule`` queue the next slot first (so a
    source that is down is tried again next slot even when this job dies). A worker
    run with ``--once`` or ``--exit-when-idle`` does not reschedule."""

    def handle(job: jobs.JobContext) -> None:
        name = str(job.payload.get("exchange", ""))
        try:
            with db.sessions() as s:
                row = get_row(s, name)
                enabled, interval = row.enabled, row.interval_seconds
        except NotFoundError:
            return  # removed since it was queued
        if not enabled:
            return
        if reschedule:
            nxt = slot_start(datetime.now(UTC), interval) + timedelta(seconds=interval)
            _enqueue(db, name, nxt)
        try:
            sync_exchange(db, name, actor=WORKER, factory=factory)
        except ExchangeError as exc:
            raise jobs.JobFailedError(exc.message) from None
        except TiplineError as exc:
            raise jobs.JobFailedError(exc.message) from None

    return handle
