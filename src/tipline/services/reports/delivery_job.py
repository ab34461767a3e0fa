"""Report delivery as a job of the database-leased job runner (``tipline worker``).

Queueing a report enqueues a ``report.deliver`` job in the same transaction (one job
per report, so every report has a job that starts after it committed), and so do an
operator's retry and retract. The job's handler delivers every report due now, not only the one
that queued it, with several in flight, through the crash-safe outbox; the outbox's
per-report leases keep several workers (or a worker and ``tipline report deliver``) from
driving one report at once, so each report is finished once however many jobs run.

A handler stops taking new reports after ``budget_seconds`` (well inside the job's
lease) and, when work is left (reports still due, waiting for a retry, or leased by a
runner that may have died), enqueues a follow-up job for the moment it is due, unless
a pending delivery job already covers that moment.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.services import jobs
from tipline.services.reports.evidence import EvidenceFiles
from tipline.services.reports.outbox import Deliverer, DeliveryPolicy, DeliveryStats
from tipline.store.base import utcnow
from tipline.store.db import transaction
from tipline.store.jobs import Job
from tipline.store.reports import ReportOutboxRow

log = logging.getLogger("tipline.reports")

DELIVERY_JOB_KIND = "report.deliver"

#: reports in flight at once in one worker (each with one HTTP call and one step open)
DEFAULT_IN_FLIGHT = 8


def enqueue_delivery(session: Session, *, key: str | None = None) -> str:
    """Queue a delivery job due now in the caller's transaction (``key``: at most one
    job per key, e.g. per report); returns its id."""
    return jobs.enqueue(
        session,
        DELIVERY_JOB_KIND,
        {},
        idempotency_key=f"{DELIVERY_JOB_KIND}:{key}" if key is not None else None,
    )


def next_delivery_time(session: Session, now: datetime) -> datetime | None:
    """When the outbox next has a report someone must pick up: the earliest retry time
    of a free report, or the earliest lease expiry of a leased one (its runner may be
    gone); None when the outbox is empty."""
    free_due = session.execute(
        select(func.min(ReportOutboxRow.next_at)).where(
            (ReportOutboxRow.lease_owner.is_(None)) | (ReportOutboxRow.lease_expires_at < now)
        )
    ).scalar()
    lease_end = session.execute(
        select(func.min(ReportOutboxRow.lease_expires_at)).where(
            ReportOutboxRow.lease_owner.is_not(None), ReportOutboxRow.lease_expires_at >= now
        )
    ).scalar()
    times = [t for t in (free_due, lease_end) if t is not None]
    return min(times) if times else None


def schedule_follow_up(session: Session, *, now: datetime) -> str | None:
    """Enqueue a delivery job for :func:`next_delivery_time` unless a pending one is
    due by then; returns the new job's id (None: nothing left, or already covered)."""
    at = next_delivery_time(session, now)
    if at is None:
        return None
    at = max(at, now)
    covered = session.execute(
        select(Job.id)
        .where(
            Job.kind == DELIVERY_JOB_KIND,
            Job.status == jobs.JobStatus.PENDING.value,
            Job.run_at <= at,
        )
        .limit(1)
    ).scalar()
    if covered is not None:
        return None
    return jobs.enqueue(session, DELIVERY_JOB_KIND, {}, run_at=at)


def ensure_delivery_scheduled(sessions: sessionmaker[Session]) -> str | None:
    """Make sure a delivery job exists for whatever the outbox holds (``tipline worker``
    calls this when it starts: reports queued before jobs existed, or whose follow-up
    was lost)."""
    with transaction(sessions) as session:
        return schedule_follow_up(session, now=utcnow())


@dataclass
class DeliveryJob:
    """The ``report.deliver`` handler: one ISPWS client (connection pool) for the
    worker's lifetime, a fresh outbox runner per job."""

    sessions: sessionmaker[Session]
    client: Any
    evidence: EvidenceFiles
    policy: DeliveryPolicy
    in_flight: int = DEFAULT_IN_FLIGHT
    budget_seconds: float = 20.0
    #: totals over every job this handler ran
    totals: DeliveryStats = field(default_factory=DeliveryStats)

    def __call__(self, job: jobs.JobContext) -> None:
        stop = threading.Event()
        timer = threading.Timer(self.budget_seconds, stop.set)
        timer.daemon = True
        timer.start()
        try:
            deliverer = Deliverer(self.sessions, self.client, self.evidence, policy=self.policy)
            stats = deliverer.run(
                workers=self.in_flight,
                until_idle=True,
                stop=stop,
                poll_seconds=0.5,
                wait_for_retries=False,
            )
        finally:
            timer.cancel()
            # also when the run failed: the job's own retry waits for the job runner's
            # backoff (minutes after a few failures), the outbox's work must not
            with transaction(self.sessions) as session:
                schedule_follow_up(session, now=utcnow())
        self.totals.add(
            finished=stats.finished,
            failed=stats.failed,
            retracted=stats.retracted,
            orphans=stats.orphans,
            calls=stats.calls,
            retries=stats.retries,
            transactions=stats.transactions,
            errors=stats.errors,
        )
        if stats.finished or stats.failed:
            log.info(
                "report delivery job %s: %d finished, %d to the operator queue",
                job.id,
                stats.finished,
                stats.failed,
            )

    def close(self) -> None:
        """Close the client's pooled connections."""
        self.client.close()
