"""A job queue in the database, leased by any number of runner processes on any hosts.

A runner claims due jobs by writing a lease (owner + expiry) on them: with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and one atomic
``UPDATE ... WHERE id IN (SELECT ...) RETURNING`` on SQLite (whose writes are serialized).
A job whose lease expired (its runner died) is claimed again. Failures are retried with
exponential backoff and jitter; after ``max_attempts`` the job is dead-lettered.
Completion is fenced by (owner, attempt), so a runner that lost its lease cannot
overwrite the newer attempt's outcome.

Delivery is at-least-once: a handler whose runner dies mid-way runs again, so handlers
pass an idempotency key to whatever they call (webhooks send ``Idempotency-Key``).
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Engine, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import InputError, NotFoundError
from tipline.store.base import utcnow
from tipline.store.jobs import Job

log = logging.getLogger(__name__)
_JOBS = cast(Table, Job.__table__)

DEFAULT_MAX_ATTEMPTS = 8
_MAX_ERROR_CHARS = 2_000


class JobStatus(enum.Enum):
    """Life cycle: pending -> running -> done, or back to pending, or dead."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler gets: the job's identity, payload and attempt number (1-based)."""

    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    idempotency_key: str | None


#: A handler returns normally on success and raises on failure (the job is retried).
Handler = Callable[[JobContext], None]


class JobFailedError(Exception):
    """Raised by a handler for an expected failure; the message is stored as last_error."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delay: ``base * 2**(attempt-1)`` seconds capped at ``maximum``, times jitter.

    The jitter multiplies by a uniform factor in [1 - jitter, 1], so runners that failed
    together do not retry together.
    """

    base: float = 2.0
    maximum: float = 3600.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.maximum, self.base * (2.0 ** max(0, attempt - 1)))
        factor = 1.0 - self.jitter * (rng or random).random()
        return raw * factor


def enqueue(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    run_at: datetime | None = None,
    tenant: str | None = None,
) -> str:
    """Add a job inside the caller's transaction; returns its id.

    With an ``idempotency_key`` already used, nothing is added and the existing job's id
    is returned (safe to call again after a retry of the caller's request).
    """
    if not kind:
        raise InputError("job kind must not be empty")
    if run_at is not None and run_at.tzinfo is None:
        raise InputError("run_at must be an aware datetime")
    if max_attempts < 1:
        raise InputError("max_attempts must be at least 1")
    now = utcnow()
    job_id = str(ULID())
    values = {
        "id": job_id,
        "kind": kind,
        "payload": json.dumps(dict(payload), separators=(",", ":"), sort_keys=True),
        "idempotency_key": idempotency_key,
        "tenant": tenant,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_at": run_at or now,
        "created_at": now,
    }
    if idempotency_key is None:
        session.execute(_add_statement(), values)
        return job_id
    # one statement when the key is new (the usual case): the row's id comes back;
    # nothing comes back when a job already has the key, which is then read
    added = session.execute(_add_once_statement(session.get_bind().dialect.name), values).first()
    if added is not None:
        return str(added[0])
    existing = session.execute(_by_key_statement(), {"key": idempotency_key}).scalar_one()
    return str(existing)


@functools.cache
def _add_statement() -> Any:
    """:func:`enqueue`'s INSERT of a job with no key, built once (values bound)."""
    return insert(_JOBS)


@functools.cache
def _add_once_statement(dialect: str) -> Any:
    """:func:`enqueue`'s INSERT of a keyed job that adds nothing when the key is taken
    and returns the new row's id, built once per dialect (values bound)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    return (
        dialect_insert(_JOBS)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_JOBS.c.id)
    )


@functools.cache
def _by_key_statement() -> Any:
    """The id of the job with a key (bound ``key``), built once."""
    return select(Job.id).where(Job.idempotency_key == bindparam("key"))


def settle(session: Session, idempotency_key: str) -> bool:
    """Mark the pending job with ``idempotency_key`` done inside the caller's transaction,
    because its work was just done another way (e.g. at once by the process that queued
    it); True when there was one. A job a runner already claimed is left to it."""
    result = session.execute(
        _settle_statement(),
        {"key": idempotency_key, "now": utcnow()},
        execution_options={"synchronize_session": False},
    )
    return bool(getattr(result, "rowcount", 0))


@functools.cache
def _settle_statement() -> Any:
    """:func:`settle`'s UPDATE, built once (bound key and time)."""
    return (
        update(Job)
        .where(Job.idempotency_key == bindparam("key"), Job.status == JobStatus.PENDING.value)
        .values(
            status=JobStatus.DONE.value,
            finished_at=bindparam("now", type_=Job.__table__.c.finished_at.type),
        )
    )


def settle_cte() -> Any:
    """:func:`settle`'s UPDATE as a CTE (binds ``:key`` and ``:now``), for a caller that
    folds it into a statement it sends anyway (PostgreSQL; SQLite has no UPDATE in WITH)."""
    return _settle_statement().cte("settled_job")


def _due(now: datetime) -> Any:
    return or_(
        and_(Job.status == JobStatus.PENDING.value, Job.run_at <= now),
        and_(
            Job.status == JobStatus.RUNNING.value,
            Job.lease_expires_at < now,
            Job.attempts < Job.max_attempts,
        ),
    )


def counts(session: Session) -> dict[str, int]:
    """Number of jobs in each status (every :class:`JobStatus` present as a key)."""
    result = {status.value: 0 for status in JobStatus}
    for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        result[str(status)] = int(n)
    return result


def dead_letters(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered jobs, newest first (id, kind, attempts, last error, times)."""
    if not 1 <= limit <= 1000:
        raise InputError("limit must be between 1 and 1000")
    rows = session.execute(
        select(Job)
        .where(Job.status == JobStatus.DEAD.value)
        .order_by(Job.dead_lettered_at.desc(), Job.id)
        .limit(limit)
    ).scalars()
    return [
        {
            "id": job.id,
            "kind": job.kind,
            "tenant": job.tenant,
            "idempotency_key": job.idempotency_key,
            "attempts": job.attempts,
            "last_error": job.last_error,
            "created_at": job.created_at.isoformat(),
            "dead_lettered_at": job.dead_lettered_at.isoformat() if job.dead_lettered_at else None,
        }
        for job in rows
    ]


def retry_dead(session: Session, job_id: str, *, extra_attempts: int | None = None) -> None:
    """Put a dead-lettered job back in the queue, due now, with ``extra_attempts`` more
    tries (default: as many as it had). :class:`NotFoundError` when no such dead job."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.DEAD.value:
        raise NotFoundError(f"no dead-lettered job {job_id!r}")
    more = job.max_attempts if extra_attempts is None else extra_attempts
    if more < 1:
        raise InputError("extra_attempts must be at least 1")
    job.status = JobStatus.PENDING.value
    job.max_attempts = job.attempts + more
    job.run_at = utcnow()
    job.dead_lettered_at = None
    job.finished_at = None
    session.flush()


def db_now(session: Session) -> datetime:
    """The database server's clock on PostgreSQL (one clock for every host), else ours.

    Leases compare times written by different hosts; taking them from one clock keeps a
    host whose clock runs ahead from stealing leases that have not expired.
    """
    if session.get_bind().dialect.name == "postgresql":
        value = session.execute(select(func.now())).scalar_one()
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC)
    return utcnow()


class Clock(Protocol):
    """Where a runner reads time: lease instants, and elapsed seconds within a batch."""

    def now(self, session: Session) -> datetime:
        """The current instant (aware, UTC) for lease and retry times."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go backwards."""
        ...


class SystemClock:
    """Real time: :func:`db_now` for lease instants, :func:`time.monotonic` for elapsed."""

    def now(self, session: Session) -> datetime:
        return db_now(session)

    def monotonic(self) -> float:
        return time.monotonic()


def default_owner() -> str:
    """``host:pid:random``: unique per runner, readable in the jobs table."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{os.urandom(3).hex()}"


@dataclass
class JobRunner:
    """Claims and runs due jobs; run one per process (several processes are safe).

    ``lease_seconds`` must exceed the longest handler run (webhook timeout included);
    a job still running when its lease expires may run twice. ``clock`` is real time
    unless a test passes one it controls.
    """

    engine: Engine
    handlers: Mapping[str, Handler]
    owner: str = field(default_factory=default_owner)
    lease_seconds: float = 60.0
    batch_size: int = 10
    poll_interval: float = 1.0
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0 or self.batch_size < 1 or self.poll_interval < 0:
            raise InputError("lease_seconds and batch_size must be positive")
        self._factory: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self._kinds = sorted(self.handlers)

    def claim(self) -> list[JobContext]:
        """Lease up to ``batch_size`` due jobs of known kinds; commits before returning."""
        columns = (
            Job.id,
            Job.kind,
            Job.payload,
            Job.attempts,
            Job.max_attempts,
            Job.idempotency_key,
        )
        with self._factory() as session, session.begin():
            now = self.clock.now(session)
            due = select(Job.id).where(_due(now), Job.kind.in_(self._kinds))
            due = due.order_by(Job.run_at).limit(self.batch_size)
            changes = {
                "status": JobStatus.RUNNING.value,
                "lease_owner": self.owner,
                "lease_expires_at": now + timedelta(seconds=self.lease_seconds),
                "attempts": Job.attempts + 1,
            }
            if session.get_bind().dialect.name == "postgresql":
                ids = list(session.execute(due.with_for_update(skip_locked=True)).scalars())
                if not ids:
                    return []
                statement = update(Job).where(Job.id.in_(ids))
            else:
                # one statement: SQLite runs it under its single write lock
                statement = update(Job).where(Job.id.in_(due), _due(now))
            rows = session.execute(
                statement.values(**changes).returning(*columns),
                execution_options={"synchronize_session": False},
            ).all()
        return [
            JobContext(
                id=row.id,
                kind=row.kind,
                payload=json.loads(row.payload),
                attempt=int(row.attempts),
                max_attempts=int(row.max_attempts),
                idempotency_key=row.idempotency_key,
            )
            for row in rows
        ]

    def _finish(self, job: JobContext, error: str | None) -> JobStatus:
        fence = and_(
            Job.id == job.id,
            Job.lease_owner == self.owner,
            Job.attempts == job.attempt,
            Job.status == JobStatus.RUNNING.value,
        )
        with self._factory() as session, session.begin():
            now = self.clock.now(session)
            if error is None:
                status = JobStatus.DONE
                values: dict[str, Any] = {"status": status.value, "finished_at": now}
            elif job.attempt >= job.max_attempts:
                status = JobStatus.DEAD
                values = {"status": status.value, "finished_at": now, "dead_lettered_at": now}
            else:
                status = JobStatus.PENDING
                delay = self.backoff.delay(job.attempt, self.rng)
                values = {"status": status.value, "run_at": now + timedelta(seconds=delay)}
            values |= {"lease_owner": None, "lease_expires_at": None}
            if error is not None:
                values["last_error"] = error[:_MAX_ERROR_CHARS]
            result = session.execute(
                update(Job).where(fence).values(**values),
                execution_options={"synchronize_session": False},
            )
        if getattr(result, "rowcount", 1) == 0:
            log.warning("job %s: lease lost before completion (another runner owns it)", job.id)
        return status

    def run_job(self, job: JobContext) -> JobStatus:
        """Run one claimed job and record the outcome."""
        handler = self.handlers[job.kind]
        try:
            handler(job)
        except Exception as exc:  # a handler failure must never stop the runner
            message = f"{type(exc).__name__}: {exc}"
            log.info("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, message)
            return self._finish(job, message)
        return self._finish(job, None)

    def renew(self, batch: list[JobContext]) -> list[JobContext]:
        """Extend the leases of ``batch``; returns the jobs this runner still owns."""
        if not batch:
            return []
        by_id = {job.id: job for job in batch}
        with self._factory() as session, session.begin():
            lease_until = self.clock.now(session) + timedelta(seconds=self.lease_seconds)
            kept = session.execute(
                update(Job)
                .where(
                    Job.id.in_(list(by_id)),
                    Job.lease_owner == self.owner,
                    Job.status == JobStatus.RUNNING.value,
                )
                .values(lease_expires_at=lease_until)
                .returning(Job.id, Job.attempts),
                execution_options={"synchronize_session": False},
            ).all()
        owned = {row.id for row in kept if int(row.attempts) == by_id[row.id].attempt}
        lost = len(batch) - len(owned)
        if lost:
            log.warning("%d leased jobs were taken over by another runner; skipped", lost)
        return [job for job in batch if job.id in owned]

    def reap(self) -> int:
        """Dead-letter jobs whose lease expired on their last attempt; returns how many.

        Such a job's runner died mid-way (crash, OOM, kill) as many times as the job may
        be tried: running it again could crash-loop every runner.
        """
        with self._factory() as session, session.begin():
            now = self.clock.now(session)
            result = session.execute(
                update(Job)
                .where(
                    Job.status == JobStatus.RUNNING.value,
                    Job.lease_expires_at < now,
                    Job.attempts >= Job.max_attempts,
                    Job.kind.in_(self._kinds),
                )
                .values(
                    status=JobStatus.DEAD.value,
                    finished_at=now,
                    dead_lettered_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error="lease expired during the last attempt (runner died?)",
                ),
                execution_options={"synchronize_session": False},
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def run_once(self) -> int:
        """Claim one batch and run it; returns the number of jobs run.

        Jobs of a batch run one after another; once a quarter of the lease has passed
        the remaining jobs' leases are renewed, so a slow batch never outlives its lease.
        """
        pending = self.claim()
        if not pending:
            self.reap()
            return 0
        leased_at = self.clock.monotonic()
        ran = 0
        while pending:
            if self.clock.monotonic() - leased_at > self.lease_seconds / 4:
                pending = self.renew(pending)
                leased_at = self.clock.monotonic()
                if not pending:
                    break
            self.run_job(pending.pop(0))
            ran += 1
        return ran

    def run(self, stop: threading.Event, *, exit_when_idle: bool = False) -> int:
        """Loop until ``stop`` is set (or, with ``exit_when_idle``, nothing is left to do).

        Returns the number of jobs run. Idle polls sleep ``poll_interval`` seconds.
        """
        total = 0
        failures = 0
        while not stop.is_set():
            try:
                ran = self.run_once()
            except OperationalError as exc:  # database restarting or unreachable: wait
                failures += 1
                delay = min(30.0, self.poll_interval * 2.0**failures + 0.1)
                log.warning(
                    "job runner: database error (%s); retrying in %.1f s",
                    type(exc.orig).__name__,
                    delay,
                )
                stop.wait(delay)
                continue
            failures = 0
            total += ran
            if ran:
                continue
            if exit_when_idle and self._nothing_left():
                break
            stop.wait(self.poll_interval)
        return total

    def _nothing_left(self) -> bool:
        with self._factory() as session:
            pending = session.execute(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.kind.in_(self._kinds),
                    Job.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]),
                )
            ).scalar_one()
        return int(pending) == 0


def wait_until_settled(engine: Engine, *, timeout: float, interval: float = 0.2) -> dict[str, int]:
    """Poll until no job is pending or running (or ``timeout`` seconds pass); the counts."""
    deadline = time.monotonic() + timeout
    factory = sessionmaker(engine)
    while True:
        with factory() as session:
            now_counts = counts(session)
        busy = now_counts[JobStatus.PENDING.value] + now_counts[JobStatus.RUNNING.value]
        if busy == 0 or time.monotonic() > deadline:
            return now_counts
        time.sleep(interval)
