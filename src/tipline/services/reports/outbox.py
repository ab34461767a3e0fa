"""Crash-safe delivery of reports over ISPWS: one outbox row per report in flight.

Each step (submit, upload, fileinfo, finish, retract) is written to the database
before its request leaves (``inflight``, committed) and again with its outcome (one
transaction records a step's outcome and marks the next step in flight), so a process
killed at any instant resumes from the database alone:

* ``inflight`` on ``submit``: the receiver may have opened a report whose id we never
  learnt. It is counted as an orphan (``reports.orphans``), never finished, and the
  submit is repeated: only a report whose id we hold is ever finished, so the receiver
  sees each report finished once.
* ``inflight`` on ``upload``: the file may be attached without us knowing its id. The
  remote report is retracted and the delivery starts again, so no finished report has
  an unknown or duplicate file.
* ``fileinfo``, ``finish`` and ``retract`` are safe to repeat: the same details
  replace the same file's; "already finished" after a lost finish answer and "already
  retracted" after a lost retract answer mean the step is done.

One call is sent without waiting for its in-flight mark to commit: the fileinfo that
follows a successful upload. Its outcome commits with the upload's (one transaction,
both steps' events), and until then the step log holds the upload in flight, so a
runner taking over retracts and starts again exactly as after a crash mid-upload.
Every submit, upload and finish waits for its mark, and a finish for the receiver's
file ids to be recorded.

Timeouts, dropped connections and 5xx answers are treated exactly like a crash
mid-call (outcome unknown); they and explicit server failures retry with exponential
backoff and jitter. A refusal (schema rejection, authentication, a report gone) and
retries that run out move the report to the operator queue with the receiver's message.

Several processes may deliver at once: a runner leases one report at a time; a lease
whose runner died on this host (pid gone) is taken over at once, others when they
expire.

Group commit: a runner drives several reports at once (``workers`` threads, each with
one report and one HTTP call in flight, over the client's connection pool). Their
step records do not get a transaction each: one committer thread applies every step
change queued while the previous transaction was committing in a single transaction
(rows of all its reports read in two queries, changes flushed in a few bulk
statements, the audit records appended together just before COMMIT), and a thread
sends its next request only once the transaction holding its ``inflight`` mark has
committed. The transaction recording a thread's finish also leases that thread's next
report and marks its submit in flight. The guarantees above are per step and
unchanged; a transaction that fails is rolled back and its steps are applied again one
per transaction.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    case,
    func,
    insert,
    inspect,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified
from ulid import ULID

from tipline.errors import TiplineError
from tipline.services import audit
from tipline.services.group_commit import next_batch
from tipline.services.jobs import Backoff
from tipline.services.reports import builder
from tipline.services.reports.client import (
    REPORT_ALREADY_FINISHED,
    REPORT_ALREADY_RETRACTED,
    IspwsClient,
    IspwsError,
    OutcomeUnknownError,
    ReceiverRefusedError,
)
from tipline.services.reports.evidence import EvidenceFiles
from tipline.services.reports.model import file_from_json
from tipline.store.base import utcnow
from tipline.store.db import ids_in
from tipline.store.reports import (
    OperatorItemRow,
    ReportEventRow,
    ReportFileRow,
    ReportOutboxRow,
    ReportRow,
)

log = logging.getLogger("tipline.reports")

#: audit actor of deliveries
DELIVERY_ACTOR = "report-delivery"


class Step(enum.Enum):
    """An ISPWS call the outbox makes."""

    SUBMIT = "submit"
    UPLOAD = "upload"
    FILEINFO = "fileinfo"
    FINISH = "finish"
    RETRACT = "retract"


class ReportStatus(enum.Enum):
    """Where a report stands."""

    QUEUED = "queued"  # built, nothing sent yet
    DELIVERING = "delivering"  # open on the receiver
    FINISHED = "finished"  # finished on the receiver: delivered
    FAILED = "failed"  # in the operator queue
    RETRACTED = "retracted"  # withdrawn before it was finished


#: called with (report id, step, phase) after each change of the step log
StepHook = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry rules: ``max_attempts`` failed attempts in a row before the operator queue;
    ``lease_seconds`` must exceed the longest single call (timeout included): a runner's
    lease on a report is extended each time it marks a step in flight."""

    max_attempts: int = 12
    backoff: Backoff = field(default_factory=lambda: Backoff(base=2.0, maximum=900.0))
    lease_seconds: float = 600.0


@dataclass
class DeliveryStats:
    """What one :meth:`Deliverer.run` did."""

    finished: int = 0
    failed: int = 0
    retracted: int = 0
    orphans: int = 0
    calls: int = 0
    retries: int = 0
    #: database transactions that recorded steps (each holds the steps of many reports)
    transactions: int = 0
    #: unexpected errors in a delivery thread (logged; the report was let go for a retry)
    errors: int = 0
    #: CPU seconds of the thread that commits the steps' records
    commit_cpu_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to the counters (thread-safe)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def default_owner() -> str:
    """``host:pid:random``: names one runner; the pid lets this host spot dead ones."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{os.urandom(3).hex()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _StoredFileError(Exception):
    """The stored bytes of a file are missing or changed since the report was built."""


@dataclass
class _Call:
    """A prepared request: what to send, read inside the transaction that marks it."""

    step: Step
    remote_id: int | None
    file_seq: int
    xml: bytes | None = None
    data: bytes | None = None
    evidence_id: str | None = None
    file_name: str | None = None
    md5: str | None = None
    final: bool = False
    #: a fileinfo's file (as stored) and the receiver's id for it; an upload carries
    #: its file's details too, for the fileinfo that follows it
    details: dict[str, Any] | None = None
    file_id: str | None = None
    #: reads an upload's bytes (after the transaction that audited the read committed)
    load: Callable[[], bytes] | None = None
    #: this runner's lease on the report, as last committed
    lease_until: datetime | None = None
    #: a call sent and answered before its record committed: the receiver's answer
    result: object = None


T = TypeVar("T")


@dataclass
class _Effects:
    """What a step transaction did beyond the database: counters and step-hook calls,
    applied once it committed (a transaction applied again starts with fresh ones)."""

    counts: dict[str, int] = field(default_factory=dict)
    notes: list[tuple[str, str, str]] = field(default_factory=list)

    def count(self, **counts: int) -> None:
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value

    def note(self, report_id: str, step: str, phase: str) -> None:
        self.notes.append((report_id, step, phase))


#: one step change, run inside the shared transaction with the report it is about
#: (for a claim: the report leased for it in that transaction, or None)
_Work = Callable[[Session, _Effects, str | None], Any]

_FILES = "tipline.reports.outbox.files"
_ROWS = "tipline.reports.outbox.rows"
_EVENTS = "tipline.reports.outbox.events"


@dataclass
class _Queued:
    report_id: str | None
    work: _Work
    #: lease a due report for this step (``report_id`` is None)
    claim: bool = False
    future: Future[tuple[Any, _Effects]] = field(default_factory=Future)


def _uniform_updates(session: Session) -> None:
    """Give every changed row of one class the same SET columns (the union of what
    changed in any of them), so the flush sends one bulk UPDATE per table instead of
    one per combination of changed columns."""
    changed: dict[type, tuple[set[str], list[Any]]] = {}
    for obj in session.dirty:
        state = inspect(obj)
        # the attributes set since load (their loaded values are kept there): no
        # history is computed per column
        keys = _column_keys(state.mapper).intersection(state.committed_state)
        if keys:
            entry = changed.setdefault(type(obj), (set(), []))
            entry[0].update(keys)
            entry[1].append(obj)
    for union, objs in changed.values():
        for obj in objs:
            for key in union:
                flag_modified(obj, key)


_COLUMN_KEYS: dict[Any, frozenset[str]] = {}


def _column_keys(mapper: Any) -> frozenset[str]:
    keys = _COLUMN_KEYS.get(mapper)
    if keys is None:
        keys = _COLUMN_KEYS[mapper] = frozenset(attr.key for attr in mapper.column_attrs)
    return keys


def _insert_events(session: Session) -> None:
    """The step-log rows the transaction's steps queued, in one executemany (Core: the
    log is append-only and nothing in the transaction reads its own rows back)."""
    events = session.info.pop(_EVENTS, None)
    if events:
        session.execute(insert(ReportEventRow.__table__), events)  # type: ignore[arg-type]


class _GroupCommit:
    """One thread that applies queued step changes, as many as are waiting, per
    transaction (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        preload: Callable[[Session, list[str]], None],
        lease: Callable[[Session, int], list[str]],
        *,
        max_batch: int = 64,
    ) -> None:
        self._sessions = sessions
        self._preload = preload
        self._lease = lease
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: transactions committed, steps applied and this thread's CPU seconds in them
        #: (for the benchmark)
        self.transactions = 0
        self.steps = 0
        self.cpu_seconds = 0.0

    def run(
        self, report_id: str | None, work: _Work, *, claim: bool = False
    ) -> tuple[Any, _Effects]:
        """Apply ``work`` in the next transaction; returns once it committed."""
        item = _Queued(report_id, work, claim)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="report-outbox-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(item)
        return item.future.result()

    def close(self) -> None:
        """Stop the thread once the queue is empty."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = next_batch(self._queue, self._max_batch)
            live = [q for q in batch if q.future.set_running_or_notify_cancel()]
            if live:
                self._apply(live)

    def _transact(self, batch: list[_Queued]) -> list[tuple[Any, _Effects]]:
        started = time.thread_time()
        try:
            return self._transact_timed(batch)
        finally:
            self.cpu_seconds += time.thread_time() - started

    def _transact_timed(self, batch: list[_Queued]) -> list[tuple[Any, _Effects]]:
        results: list[tuple[Any, _Effects]] = []
        with self._sessions() as session, session.begin(), session.no_autoflush:
            # no autoflush: every step's changes go out in one flush at COMMIT (bulk
            # statements), not one flush per step that reads something
            claims = sum(1 for q in batch if q.claim)
            leased = self._lease(session, claims) if claims else []
            ids = {q.report_id for q in batch if q.report_id is not None} | set(leased)
            if ids:
                self._preload(session, sorted(ids))
            session.info[_EVENTS] = []
            for q in batch:
                effects = _Effects()
                report_id = (leased.pop(0) if leased else None) if q.claim else q.report_id
                results.append((q.work(session, effects, report_id), effects))
            _insert_events(session)
            _uniform_updates(session)
        self.transactions += 1
        self.steps += len(batch)
        return results

    def _apply(self, batch: list[_Queued]) -> None:
        try:
            results = self._transact(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning(
                "report outbox: a transaction of %d steps failed (%s); applying them one by one",
                len(batch),
                type(exc).__name__,
            )
            for q in batch:
                self._apply([q])
            return
        except BaseException as exc:
            for q in batch:
                q.future.set_exception(exc)
            raise
        for q, result in zip(batch, results, strict=True):
            q.future.set_result(result)


class Deliverer:
    """Delivers queued reports through ``client``; see the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: IspwsClient,
        evidence: EvidenceFiles,
        *,
        policy: DeliveryPolicy | None = None,
        owner: str | None = None,
        rng: random.Random | None = None,
        on_step: StepHook | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_batch: int = 64,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.evidence = evidence
        self.policy = policy or DeliveryPolicy()
        self.owner = owner or default_owner()
        self.rng = rng or random.Random()
        self.on_step = on_step
        self.clock = clock
        self.stats = DeliveryStats()
        self._wait_for_retries = True
        self._host = self.owner.split(":", 1)[0]
        self._reclaim_lock = threading.Lock()
        self._next_reclaim = 0.0
        # the idle threads' look at the outbox, shared (see _outbox_state)
        self._idle_cond = threading.Condition()
        self._idle_looking = False
        self._idle_seen: tuple[float, tuple[int, datetime | None, int, datetime]] | None = None
        self.commits = _GroupCommit(sessions, self._preload, self._lease_many, max_batch=max_batch)

    # -- leases ---------------------------------------------------------------------

    def reclaim_dead(self) -> int:
        """Free leases held by runners on this host whose process is gone."""
        freed = 0
        with self.sessions() as session, session.begin():
            rows = session.execute(
                select(ReportOutboxRow.report_id, ReportOutboxRow.lease_owner).where(
                    ReportOutboxRow.lease_owner.like(f"{self._host}:%"),
                    ReportOutboxRow.lease_owner != self.owner,
                )
            ).all()
            for report_id, owner in rows:
                if owner is None:
                    continue
                try:
                    pid = int(owner.split(":")[1])
                except (IndexError, ValueError):
                    continue
                if pid != os.getpid() and not _pid_alive(pid):
                    session.execute(
                        update(ReportOutboxRow)
                        .where(
                            ReportOutboxRow.report_id == report_id,
                            ReportOutboxRow.lease_owner == owner,
                        )
                        .values(lease_owner=None, lease_expires_at=None)
                    )
                    freed += 1
        return freed

    def claim(self) -> str | None:
        """Lease one due report (in a transaction of its own); None when nothing is due."""
        with self.sessions() as session, session.begin():
            return self._lease_one(session)

    def _lease_one(self, session: Session) -> str | None:
        leased = self._lease_many(session, 1)
        return leased[0] if leased else None

    def _lease_many(self, session: Session, count: int) -> list[str]:
        """Lease up to ``count`` due reports (one statement), soonest due first."""
        now = self.clock()
        free = or_(ReportOutboxRow.lease_owner.is_(None), ReportOutboxRow.lease_expires_at < now)
        due = (
            select(ReportOutboxRow.report_id)
            .where(ReportOutboxRow.next_at <= now, free)
            .order_by(ReportOutboxRow.next_at, ReportOutboxRow.report_id)
            .limit(count)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        taken = session.execute(
            update(ReportOutboxRow)
            .where(ReportOutboxRow.report_id.in_(due), free)
            .values(
                lease_owner=self.owner,
                lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds),
            )
            .returning(ReportOutboxRow.report_id, ReportOutboxRow.next_at),
            execution_options={"synchronize_session": False},
        ).all()
        return [report_id for report_id, _ in sorted(taken, key=lambda r: (r[1], r[0]))]

    def _preload(self, session: Session, report_ids: list[str]) -> None:
        """Load the outbox rows, reports and files of ``report_ids`` in one query, and
        the stored files' records (the steps of a transaction then find them in the
        session without a round trip)."""
        loaded = session.execute(
            select(ReportOutboxRow, ReportRow, ReportFileRow)
            .join(ReportRow, ReportRow.id == ReportOutboxRow.report_id)
            .outerjoin(ReportFileRow, ReportFileRow.report_id == ReportOutboxRow.report_id)
            .where(ids_in(session, ReportOutboxRow.report_id, report_ids))
            .order_by(ReportOutboxRow.report_id, ReportFileRow.seq)
        ).all()
        # the session's identity map holds unchanged rows weakly: keep them alive
        session.info.setdefault(_ROWS, []).extend(loaded)
        files: dict[str, list[ReportFileRow]] = session.info.setdefault(_FILES, {})
        for report_id in report_ids:
            files[report_id] = []
        for _, _, file in loaded:
            if file is not None:
                files[file.report_id].append(file)
        self.evidence.prefetch(
            session, [file.evidence_id for _, _, file in loaded if file is not None]
        )

    def _files(self, session: Session, report_id: str) -> list[ReportFileRow]:
        files: dict[str, list[ReportFileRow]] = session.info.setdefault(_FILES, {})
        if report_id not in files:
            self._preload(session, [report_id])
        return files[report_id]

    def _owned(self, session: Session, report_id: str) -> tuple[ReportOutboxRow, ReportRow] | None:
        """The outbox row (if this runner holds its lease) and its report."""
        row = session.get(ReportOutboxRow, report_id)
        if row is None or row.lease_owner != self.owner:
            return None
        report = session.get(ReportRow, report_id)
        if report is None:
            return None
        return row, report

    # -- the loop -------------------------------------------------------------------

    def run(
        self,
        *,
        workers: int = 1,
        until_idle: bool = True,
        stop: threading.Event | None = None,
        poll_seconds: float = 1.0,
        wait_for_retries: bool = True,
    ) -> DeliveryStats:
        """Deliver until the outbox is empty (``until_idle``) or ``stop`` is set, with
        ``workers`` reports in flight at once. Without ``wait_for_retries`` an idle run
        ends as soon as nothing is due now (reports waiting for a retry stay in the
        outbox for the next run)."""
        self._wait_for_retries = wait_for_retries
        stop = stop or threading.Event()
        self.reclaim_dead()
        threads = [
            threading.Thread(
                target=self._worker,
                args=(stop, until_idle, poll_seconds),
                name=f"report-delivery-{i}",
                daemon=True,
            )
            for i in range(max(1, workers))
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            self.commits.close()
            self.stats.transactions = self.commits.transactions
            self.stats.commit_cpu_seconds = self.commits.cpu_seconds
            self.release_held()
        return self.stats

    def release_held(self) -> int:
        """Free every lease this runner still holds (its threads are done: a report still
        leased was dropped by an error), so the next runner takes it at once instead of
        when the lease expires. A step left in flight is recovered by that runner."""
        try:
            with self.sessions() as session, session.begin():
                result = session.execute(
                    update(ReportOutboxRow)
                    .where(ReportOutboxRow.lease_owner == self.owner)
                    .values(lease_owner=None, lease_expires_at=None),
                    execution_options={"synchronize_session": False},
                )
        except Exception as exc:  # the database is gone: the leases expire instead
            log.error("report delivery: could not free this runner's leases (%s)", exc)
            return 0
        return int(getattr(result, "rowcount", 0) or 0)

    def _worker(self, stop: threading.Event, until_idle: bool, poll_seconds: float) -> None:
        while not stop.is_set():
            report_id: str | None = None
            tried = time.monotonic()
            try:
                claimed = self._in_transaction(None, self._prepare_claimed, claim=True)
                if claimed is not None:
                    while claimed is not None:
                        report_id, call = claimed
                        # the transaction recording a finish leases the next report
                        claimed = self._drive(report_id, call, stop=stop)
                    continue
                wait = self._idle_wait(until_idle, poll_seconds, tried)
            except Exception as exc:
                # a thread that died here would keep its report leased until the lease
                # expired, and nothing would look at it before then
                self._after_error(report_id, exc)
                wait = poll_seconds
            if wait is None:
                return
            stop.wait(wait)

    def _after_error(self, report_id: str | None, exc: Exception) -> None:
        """An unexpected error while driving ``report_id`` (or looking for work): log it
        and let the report go with a retry counted, so the next runner takes it."""
        self.stats.add(errors=1)
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        log.error("report delivery: %s (report %s)", message, report_id or "-")
        if report_id is None:
            return
        try:
            self._in_transaction(report_id, self._errored, message[:2000])
        except Exception as again:  # freed when this run ends (release_held), or expires
            log.error("report delivery: could not let report %s go (%s)", report_id, again)

    def _in_transaction(
        self, report_id: str | None, work: Callable[..., T], *args: Any, claim: bool = False
    ) -> T:
        """Run ``work(session, effects, report_id, *args)`` in the next group transaction
        (``claim``: with a report leased in it, or None); once it committed, count its
        effects and tell the step hook."""
        result, effects = self.commits.run(
            report_id, lambda s, fx, rid: work(s, fx, rid, *args), claim=claim
        )
        if effects.counts:
            self.stats.add(**effects.counts)
        for note in effects.notes:
            self._notify(*note)
        return result  # type: ignore[no-any-return]

    def _reclaim_due(self, poll_seconds: float) -> bool:
        """True for one idle thread per ``poll_seconds``: the runner's threads share the
        look for dead runners' leases (run() always looks once at its start)."""
        now = time.monotonic()
        with self._reclaim_lock:
            if now < self._next_reclaim:
                return False
            self._next_reclaim = now + poll_seconds
            return True

    def _idle_wait(
        self, until_idle: bool, poll_seconds: float, tried: float | None = None
    ) -> float | None:
        """Seconds to wait for more work; None when idle and ``until_idle``. ``tried``:
        when (``time.monotonic()``) the caller's failed claim began (default: now)."""
        if self._reclaim_due(poll_seconds) and self.reclaim_dead():
            return 0.0
        since = time.monotonic() if tried is None else tried
        count, first_due, leased_by_others, now = self._outbox_state(since)
        if count == 0:
            if until_idle and not leased_by_others:
                return None
            return poll_seconds
        if first_due is None:
            return poll_seconds
        wait = (first_due - now).total_seconds()
        if until_idle and wait > 0 and not self._wait_for_retries:
            return None
        return max(0.0, min(poll_seconds, wait))

    def _outbox_state(self, since: float) -> tuple[int, datetime | None, int, datetime]:
        """(free reports, the first of them due, reports leased by other runners, the
        clock's time of the look), read by one statement begun after ``since``: the
        runner's idle threads share one look (a thread whose claim failed takes the
        answer of a look begun after its claim, or waits for the one in progress,
        instead of each running its own: 128 idle threads cost one query, not 128)."""
        with self._idle_cond:
            while True:
                seen = self._idle_seen
                if seen is not None and seen[0] >= since:
                    return seen[1]
                if not self._idle_looking:
                    self._idle_looking = True
                    break
                self._idle_cond.wait()
        began = time.monotonic()
        state = None
        try:
            state = self._look_at_outbox()
        finally:
            with self._idle_cond:
                self._idle_looking = False
                if state is not None:
                    self._idle_seen = (began, state)
                self._idle_cond.notify_all()
        assert state is not None
        return state

    def _look_at_outbox(self) -> tuple[int, datetime | None, int, datetime]:
        with self.sessions() as session:
            now = self.clock()
            free = or_(
                ReportOutboxRow.lease_owner.is_(None),
                ReportOutboxRow.lease_expires_at < now,
            )
            others = and_(
                ReportOutboxRow.lease_owner.is_not(None),
                ReportOutboxRow.lease_owner != self.owner,
                ReportOutboxRow.lease_expires_at >= now,
            )
            # one statement: (free reports, the first of them due, leased by others)
            pending = session.execute(
                select(
                    func.coalesce(func.sum(case((free, 1), else_=0)), 0),
                    type_coerce(  # the column's own type (aware datetimes on SQLite too)
                        func.min(case((free, ReportOutboxRow.next_at), else_=None)),
                        ReportOutboxRow.next_at.type,
                    ),
                    func.coalesce(func.sum(case((others, 1), else_=0)), 0),
                )
            ).one()
        return int(pending[0]), pending[1], int(pending[2]), now

    def drive(self, report_id: str) -> None:
        """Run ``report_id``'s steps (its lease held) until it is done, waits for a
        retry, or fails."""
        self._drive(report_id, self._in_transaction(report_id, self._prepare))

    def _drive(
        self, report_id: str, call: _Call | None, *, stop: threading.Event | None = None
    ) -> tuple[str, _Call | None] | None:
        """Run the calls of ``report_id`` until it is done, waits or fails. With
        ``stop`` (not set), the transaction that records a finish also leases the next
        due report and marks its first call in flight: returns that report and call."""
        # calls sent without a committed in-flight mark (see _follow_on), whose outcomes
        # are recorded together with the next call's outcome
        chained: list[_Call] = []
        while call is not None:
            self.stats.add(calls=1)
            if call.step is Step.UPLOAD and not self._load(report_id, call):
                return None
            try:
                result = self._send(call)
            except IspwsError as exc:
                call = self._in_transaction(report_id, self._failed, call, exc, chained)
                chained = []
                continue
            following = self._follow_on(call, result)
            if following is not None:
                call.result = result
                chained.append(call)
                self._notify(report_id, following.step.value, "start")
                call = following
                continue
            if call.step is Step.FINISH and stop is not None and not stop.is_set():
                return self._in_transaction(
                    report_id,
                    self._finished_then_claim,
                    report_id,
                    call,
                    result,
                    chained,
                    claim=True,
                )
            call = self._in_transaction(report_id, self._succeeded, call, result, chained)
            chained = []
        return None

    def _finished_then_claim(
        self,
        session: Session,
        fx: _Effects,
        claimed: str | None,
        report_id: str,
        call: _Call,
        result: object,
        chained: list[_Call],
    ) -> tuple[str, _Call | None] | None:
        """Record a finish, then prepare the report leased in the same transaction."""
        self._succeeded(session, fx, report_id, call, result, chained)
        return self._prepare_claimed(session, fx, claimed)

    def _follow_on(self, call: _Call, result: object) -> _Call | None:
        """The call that follows a successful ``call`` when it may be sent before the
        outcome of ``call`` is committed, else None.

        That is the fileinfo after its upload: until the upload's outcome commits, the
        step log holds the upload in flight, and a runner that takes the report over
        from there retracts the remote report and starts again, so a crash between the
        two leaves no file unknown on a finished report; repeating a fileinfo is
        harmless. Submits, uploads and finishes wait for their in-flight mark (with the
        receiver's file ids, before a finish) to commit, and nothing is chained once
        less than half of the lease is left (the next commit extends it)."""
        if call.lease_until is None or call.remote_id is None:
            return None
        if self.clock() + timedelta(seconds=self.policy.lease_seconds / 2) > call.lease_until:
            return None
        if call.step is Step.UPLOAD:
            file_id = getattr(result, "file_id", None)
            if getattr(result, "md5", None) != call.md5 or not file_id or call.details is None:
                return None  # recorded first: a wrong MD5 retracts
            following = _Call(
                step=Step.FILEINFO,
                remote_id=call.remote_id,
                file_seq=call.file_seq,
                details=call.details,
                file_id=file_id,
            )
        else:
            return None
        following.lease_until = call.lease_until
        return following

    def _record_chained(
        self, session: Session, fx: _Effects, report_id: str, chained: list[_Call]
    ) -> bool:
        """Record the outcomes of chained calls, in order (False: the report is no
        longer this runner's)."""
        for done in chained:
            if self._succeeded(session, fx, report_id, done, done.result) is None:
                return False
            # the call that followed was announced to the step hook when it was sent
            if fx.notes and fx.notes[-1][2] == "start":
                fx.notes.pop()
        return True

    def _load(self, report_id: str, call: _Call) -> bool:
        """Read an upload's bytes (its read audited in the committed step); a file that
        cannot be read as reported goes to the operator queue (False)."""
        assert call.load is not None
        try:
            data = call.load()
            if not self.evidence.verifies_content and (
                hashlib.md5(data, usedforsecurity=False).hexdigest() != call.md5
            ):
                raise _StoredFileError(
                    f"stored file {call.evidence_id} no longer has MD5 {call.md5}"
                )
        except (_StoredFileError, TiplineError, OSError) as exc:
            self._in_transaction(
                report_id, self._unreadable, report_id, call, f"cannot read the file: {exc}"
            )
            return False
        call.data = data
        return True

    # -- one step (each runs inside a group transaction) --------------------------------

    def _event(
        self, session: Session, report_id: str, step: str, phase: str, detail: str = ""
    ) -> None:
        row = {
            "report_id": report_id,
            "at": self.clock(),
            "step": step,
            "phase": phase,
            "detail": detail[:4000],
        }
        queued: list[dict[str, Any]] | None = session.info.get(_EVENTS)
        if queued is not None:  # a group transaction: inserted together before COMMIT
            queued.append(row)
        else:
            session.add(ReportEventRow(**row))

    def _notify(self, report_id: str, step: str, phase: str) -> None:
        if self.on_step is not None:
            self.on_step(report_id, step, phase)

    def _prepare_claimed(
        self, session: Session, fx: _Effects, report_id: str | None
    ) -> tuple[str, _Call | None] | None:
        """A report leased for this thread: mark its next step in flight."""
        if report_id is None:
            return None
        return report_id, self._prepare(session, fx, report_id)

    def _prepare(self, session: Session, fx: _Effects, report_id: str) -> _Call | None:
        """Mark the next step in flight and read what it sends."""
        owned = self._owned(session, report_id)
        if owned is None:
            return None
        row, report = owned
        if row.inflight:
            # the previous runner died mid-call: its outcome is unknown
            recovered = row.step
            self._on_unknown(session, fx, row, report, "interrupted mid-call (runner stopped)")
            self._event(session, report_id, recovered, "recovered")
            fx.note(report_id, recovered, "recovered")
            if row.attempts >= self.policy.max_attempts:
                self._to_operator(session, row, report, None, "retries exhausted")
                fx.count(failed=1)
                return None
        return self._mark_inflight(session, fx, row, report, self._build_call(session, row, report))

    def _build_call(self, session: Session, row: ReportOutboxRow, report: ReportRow) -> _Call:
        step = Step(row.step)
        call = _Call(step=step, remote_id=report.remote_id, file_seq=row.file_seq)
        if step is Step.SUBMIT:
            call.xml = report.xml.encode("utf-8")
        elif step in (Step.UPLOAD, Step.FILEINFO):
            file = self._files(session, report.id)[row.file_seq]
            if step is Step.UPLOAD:
                call.evidence_id, call.file_name, call.md5 = (
                    file.evidence_id,
                    file.file_name,
                    file.md5,
                )
                call.details = file.details
            else:
                # the document is built (and validated) by the sending thread, not
                # inside the group transaction
                assert report.remote_id is not None and file.remote_file_id is not None
                call.details, call.file_id = file.details, file.remote_file_id
        elif step is Step.RETRACT:
            call.final = row.final_retract
        return call

    def _mark_inflight(
        self,
        session: Session,
        fx: _Effects,
        row: ReportOutboxRow,
        report: ReportRow,
        call: _Call,
    ) -> _Call | None:
        """Mark ``call`` in flight; for an upload, audit the file's read (it commits
        with this step; the bytes are read once it committed). A file that is gone goes
        to the operator queue (None)."""
        if call.step is Step.UPLOAD:
            assert call.evidence_id is not None
            try:
                call.load = self.evidence.opener(session, call.evidence_id)
            except TiplineError as exc:
                message = f"cannot read the file: {exc}"
                self._to_operator(session, row, report, None, message)
                self._event(session, report.id, call.step.value, "rejected", message)
                fx.note(report.id, call.step.value, "rejected")
                fx.count(failed=1)
                return None
        row.inflight = True
        # the lease covers this call from now (a long drive of many files keeps it)
        row.lease_expires_at = self.clock() + timedelta(seconds=self.policy.lease_seconds)
        call.lease_until = row.lease_expires_at
        self._event(session, report.id, call.step.value, "start")
        fx.note(report.id, call.step.value, "start")
        return call

    def _errored(self, session: Session, fx: _Effects, report_id: str, message: str) -> None:
        """Count a failed attempt for an unexpected error and free the lease for a retry
        after the backoff (the operator queue once attempts run out). A step left in
        flight stays so: whoever takes the report next treats its outcome as unknown."""
        owned = self._owned(session, report_id)
        if owned is None:
            return
        row, report = owned
        row.attempts += 1
        row.last_error = message
        self._event(session, report_id, row.step, "error", message)
        fx.note(report_id, row.step, "error")
        if row.attempts >= self.policy.max_attempts:
            self._to_operator(session, row, report, None, f"gave up: {message}")
            fx.count(failed=1)
            return
        delay = self.policy.backoff.delay(row.attempts, self.rng)
        row.next_at = self.clock() + timedelta(seconds=delay)
        row.lease_owner = None
        row.lease_expires_at = None
        fx.count(retries=1)

    def _unreadable(
        self, session: Session, fx: _Effects, report_id: str, call: _Call, message: str
    ) -> None:
        """An upload marked in flight whose bytes could not be read: nothing was sent."""
        owned = self._owned(session, report_id)
        if owned is None:
            return
        row, report = owned
        row.inflight = False
        self._to_operator(session, row, report, None, message)
        self._event(session, report_id, call.step.value, "rejected", message)
        fx.note(report_id, call.step.value, "rejected")
        fx.count(failed=1)

    def _send(self, call: _Call) -> object:
        client = self.client
        if call.step is Step.SUBMIT:
            assert call.xml is not None
            return client.submit(call.xml)
        assert call.remote_id is not None
        if call.step is Step.UPLOAD:
            assert call.data is not None and call.file_name is not None
            return client.upload(call.remote_id, call.file_name, call.data)
        if call.step is Step.FILEINFO:
            assert call.details is not None and call.file_id is not None
            xml = builder.build_file_details(
                file_from_json(call.details), report_id=call.remote_id, file_id=call.file_id
            )
            return client.fileinfo(xml)
        if call.step is Step.FINISH:
            return client.finish(call.remote_id)
        return client.retract(call.remote_id)

    def _succeeded(
        self,
        session: Session,
        fx: _Effects,
        report_id: str,
        call: _Call,
        result: object,
        chained: list[_Call] | None = None,
    ) -> _Call | None:
        """Record a successful step (after the chained calls before it) and, in the same
        transaction, mark the next one in flight; returns the next call, None when done."""
        if chained and not self._record_chained(session, fx, report_id, chained):
            return None
        done_phase = "ok"
        owned = self._owned(session, report_id)
        if owned is None:
            return None
        row, report = owned
        row.inflight = False
        row.attempts = 0
        row.last_error = None
        if call.step is Step.SUBMIT:
            assert isinstance(result, int)
            report.remote_id = result
            report.status = ReportStatus.DELIVERING.value
            row.step, row.file_seq = Step.UPLOAD.value, 0
            detail = f"reportId {result}"
        elif call.step is Step.UPLOAD:
            file = self._files(session, report_id)[call.file_seq]
            md5 = getattr(result, "md5", None)
            if md5 != file.md5:
                # the receiver holds other bytes than ours: start again cleanly,
                # a bounded number of times (each restart resets the attempts)
                detail = f"receiver MD5 {md5} differs from {file.md5}"
                before = session.execute(
                    select(func.count()).where(
                        ReportEventRow.report_id == report_id,
                        ReportEventRow.phase == "retry",
                        ReportEventRow.detail.like("receiver MD5 %"),
                    )
                ).scalar_one()
                row.step = Step.RETRACT.value
                row.final_retract = False
                row.attempts = 1
                row.last_error = detail
                done_phase = "retry"
                if before + 1 >= self.policy.max_attempts:
                    # the open remote report is named in the message for the operator
                    self._to_operator(
                        session,
                        row,
                        report,
                        None,
                        f"{detail} on {before + 1} uploads; report {report.remote_id} is "
                        "still open on the receiver",
                    )
                    fx.count(failed=1)
                    done_phase = "rejected"
            else:
                file.remote_file_id = getattr(result, "file_id", None)
                file.described = False
                row.step = Step.FILEINFO.value
                detail = f"fileId {file.remote_file_id}"
        elif call.step is Step.FILEINFO:
            files = self._files(session, report_id)
            files[call.file_seq].described = True
            if call.file_seq + 1 < len(files):
                row.step, row.file_seq = Step.UPLOAD.value, call.file_seq + 1
            else:
                row.step = Step.FINISH.value
            detail = f"file {call.file_seq}"
        elif call.step is Step.FINISH:
            listed = set(getattr(result, "files", ()) or ())
            self._finished(session, fx, row, report, listed)
            detail = f"reportId {report.remote_id}"
        else:
            detail = self._retracted(session, fx, row, report)
        self._event(session, report_id, call.step.value, done_phase, detail)
        fx.note(report_id, call.step.value, done_phase)
        finished = call.step is Step.FINISH or (call.step is Step.RETRACT and call.final)
        if finished or done_phase == "rejected":
            return None
        return self._mark_inflight(session, fx, row, report, self._build_call(session, row, report))

    def _finished(
        self,
        session: Session,
        fx: _Effects,
        row: ReportOutboxRow,
        report: ReportRow,
        listed: set[str] | None,
    ) -> None:
        report.status = ReportStatus.FINISHED.value
        report.finished_at = self.clock()
        files = self._files(session, report.id)
        if listed is not None:
            ours = {f.remote_file_id for f in files if f.remote_file_id}
            missing = ours - listed
            if missing:
                report.last_error = f"receiver's file list lacks {len(missing)} of our files"
        self.evidence.mark_reported(
            session, [f.evidence_id for f in files], report.id, report.finished_at
        )
        session.delete(row)
        audit.defer(
            session,
            actor=DELIVERY_ACTOR,
            action="report.finish",
            target=("report", report.id),
            details={"remote_id": report.remote_id, "orphans": report.orphans},
            tenant=report.tenant,
        )
        fx.count(finished=1)

    def _retracted(
        self, session: Session, fx: _Effects, row: ReportOutboxRow, report: ReportRow
    ) -> str:
        detail = f"reportId {report.remote_id} retracted"
        if row.final_retract:
            report.status = ReportStatus.RETRACTED.value
            report.retracted_at = self.clock()
            session.delete(row)
            audit.defer(
                session,
                actor=DELIVERY_ACTOR,
                action="report.retract",
                target=("report", report.id),
                details={"remote_id": report.remote_id},
                tenant=report.tenant,
            )
            fx.count(retracted=1)
            return detail
        # a restart: the next submit opens a fresh remote report
        report.remote_id = None
        report.status = ReportStatus.QUEUED.value
        for file in self._files(session, report.id):
            file.remote_file_id = None
            file.described = False
        row.step, row.file_seq = Step.SUBMIT.value, 0
        return detail + "; starting again"

    def _on_unknown(
        self,
        session: Session,
        fx: _Effects,
        row: ReportOutboxRow,
        report: ReportRow,
        why: str,
    ) -> None:
        """The call in flight may or may not have taken effect."""
        row.inflight = False
        row.attempts += 1
        row.last_error = why
        step = Step(row.step)
        if step is Step.SUBMIT:
            report.orphans += 1
            fx.count(orphans=1)
        elif step is Step.UPLOAD:
            row.step, row.final_retract = Step.RETRACT.value, False

    def _failed(
        self,
        session: Session,
        fx: _Effects,
        report_id: str,
        call: _Call,
        exc: IspwsError,
        chained: list[_Call] | None = None,
    ) -> _Call | None:
        """Record a failed step (after the chained calls before it); when the step
        turned out done and more follow, mark the next one in flight in the same
        transaction and return it."""
        if chained and not self._record_chained(session, fx, report_id, chained):
            return None
        message = str(exc)
        code = exc.response_code
        refused = isinstance(exc, ReceiverRefusedError)
        go_on = False
        owned = self._owned(session, report_id)
        if owned is None:
            return None
        row, report = owned
        if refused and call.step is Step.FINISH and code == REPORT_ALREADY_FINISHED:
            # our earlier finish worked; its answer was lost
            phase = "ok"
            self._finished(session, fx, row, report, None)
        elif refused and call.step is Step.RETRACT and code == REPORT_ALREADY_RETRACTED:
            # our earlier retract worked; its answer was lost
            phase = "ok"
            row.inflight = False
            row.attempts = 0
            message = self._retracted(session, fx, row, report)
            go_on = not call.final
        elif refused and call.step is Step.RETRACT and code == REPORT_ALREADY_FINISHED:
            # a finish whose answer was lost had worked: the report is delivered
            phase = "ok"
            self._finished(session, fx, row, report, None)
        elif refused:
            phase = "rejected"
            row.inflight = False
            self._to_operator(session, row, report, code, message)
            fx.count(failed=1)
        else:
            if isinstance(exc, OutcomeUnknownError):
                phase = "unknown"
                self._on_unknown(session, fx, row, report, message)
            else:
                phase = "retry"
                row.inflight = False
                row.attempts += 1
                row.last_error = message
            if row.attempts >= self.policy.max_attempts:
                phase = "rejected"
                self._to_operator(
                    session,
                    row,
                    report,
                    code,
                    f"gave up after {row.attempts} attempts: {message}",
                )
                fx.count(failed=1)
            else:
                delay = self.policy.backoff.delay(row.attempts, self.rng)
                row.next_at = self.clock() + timedelta(seconds=delay)
                row.lease_owner = None
                row.lease_expires_at = None
                fx.count(retries=1)
        self._event(session, report_id, call.step.value, phase, message)
        fx.note(report_id, call.step.value, phase)
        if not go_on:
            return None
        return self._mark_inflight(session, fx, row, report, self._build_call(session, row, report))

    def _to_operator(
        self,
        session: Session,
        row: ReportOutboxRow,
        report: ReportRow,
        code: int | None,
        message: str,
    ) -> None:
        session.add(
            OperatorItemRow(
                id=str(ULID()),
                report_id=report.id,
                tenant=report.tenant,
                step=row.step,
                file_seq=row.file_seq,
                response_code=code,
                message=message[:8000],
                created_at=self.clock(),
            )
        )
        report.status = ReportStatus.FAILED.value
        report.last_error = message[:8000]
        session.delete(row)
        audit.defer(
            session,
            actor=DELIVERY_ACTOR,
            action="report.failed",
            target=("report", report.id),
            details={"step": row.step, "response_code": code},
            tenant=report.tenant,
        )


def outbox_size(session: Session) -> int:
    """Reports with delivery work left."""
    return int(session.execute(select(func.count()).select_from(ReportOutboxRow)).scalar_one())
