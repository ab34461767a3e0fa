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

Timeouts, dropped connections and 5xx answers are treated exactly like a crash
mid-call (outcome unknown); they and explicit server failures retry with exponential
backoff and jitter. A refusal (schema rejection, authentication, a report gone) and
retries that run out move the report to the operator queue with the receiver's message.

Several processes may deliver at once: a runner leases one report at a time; a lease
whose runner died on this host (pid gone) is taken over at once, others when they
expire.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.errors import TiplineError
from tipline.services import audit
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
    ``lease_seconds`` must exceed the longest single call (timeout included)."""

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
        """Lease one due report; None when nothing is due."""
        with self.sessions() as session, session.begin():
            now = self.clock()
            free = or_(
                ReportOutboxRow.lease_owner.is_(None), ReportOutboxRow.lease_expires_at < now
            )
            query = (
                select(ReportOutboxRow.report_id)
                .where(ReportOutboxRow.next_at <= now, free)
                .order_by(ReportOutboxRow.next_at, ReportOutboxRow.report_id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            report_id = session.execute(query).scalar()
            if report_id is None:
                return None
            taken = session.execute(
                update(ReportOutboxRow)
                .where(ReportOutboxRow.report_id == report_id, free)
                .values(
                    lease_owner=self.owner,
                    lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds),
                ),
                execution_options={"synchronize_session": False},
            )
            return report_id if getattr(taken, "rowcount", 0) == 1 else None

    def _owned(self, session: Session, report_id: str) -> tuple[ReportOutboxRow, ReportRow] | None:
        """The outbox row (if this runner holds its lease) and its report, one query."""
        found = session.execute(
            select(ReportOutboxRow, ReportRow)
            .join(ReportRow, ReportRow.id == ReportOutboxRow.report_id)
            .where(ReportOutboxRow.report_id == report_id)
        ).first()
        if found is None or found[0].lease_owner != self.owner:
            return None
        return found[0], found[1]

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
        """Deliver until the outbox is empty (``until_idle``) or ``stop`` is set.
        Without ``wait_for_retries`` an idle run ends as soon as nothing is due now
        (reports waiting for a retry stay in the outbox for the next run)."""
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
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.stats

    def _worker(self, stop: threading.Event, until_idle: bool, poll_seconds: float) -> None:
        while not stop.is_set():
            report_id = self.claim()
            if report_id is not None:
                self.drive(report_id)
                continue
            wait = self._idle_wait(until_idle, poll_seconds)
            if wait is None:
                return
            stop.wait(wait)

    def _idle_wait(self, until_idle: bool, poll_seconds: float) -> float | None:
        """Seconds to wait for more work; None when idle and ``until_idle``."""
        if self.reclaim_dead():
            return 0.0
        with self.sessions() as session:
            now = self.clock()
            pending = session.execute(
                select(func.count(), func.min(ReportOutboxRow.next_at)).where(
                    or_(
                        ReportOutboxRow.lease_owner.is_(None),
                        ReportOutboxRow.lease_expires_at < now,
                    )
                )
            ).one()
            leased_by_others = session.execute(
                select(func.count()).where(
                    ReportOutboxRow.lease_owner.is_not(None),
                    ReportOutboxRow.lease_owner != self.owner,
                    ReportOutboxRow.lease_expires_at >= now,
                )
            ).scalar_one()
        count, first_due = int(pending[0]), pending[1]
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

    def drive(self, report_id: str) -> None:
        """Run ``report_id``'s steps until it is done, waits for a retry, or fails."""
        call = self._prepare(report_id)
        while call is not None:
            self.stats.add(calls=1)
            try:
                result = self._send(call)
            except IspwsError as exc:
                call = self._prepare(report_id) if self._failed(report_id, call, exc) else None
                continue
            call = self._succeeded(report_id, call, result)

    # -- one step -------------------------------------------------------------------

    def _event(
        self, session: Session, report_id: str, step: str, phase: str, detail: str = ""
    ) -> None:
        session.add(
            ReportEventRow(
                report_id=report_id, at=self.clock(), step=step, phase=phase, detail=detail[:4000]
            )
        )

    def _notify(self, report_id: str, step: str, phase: str) -> None:
        if self.on_step is not None:
            self.on_step(report_id, step, phase)

    def _prepare(self, report_id: str) -> _Call | None:
        """Mark the next step in flight (committed) and read what it sends."""
        recovered = None
        with self.sessions() as session, session.begin():
            owned = self._owned(session, report_id)
            if owned is None:
                return None
            row, report = owned
            if row.inflight:
                # the previous runner died mid-call: its outcome is unknown
                recovered = row.step
                self._on_unknown(session, row, report, "interrupted mid-call (runner stopped)")
                self._event(session, report_id, recovered, "recovered")
                if row.attempts >= self.policy.max_attempts:
                    self._to_operator(session, row, report, None, "retries exhausted")
                    self.stats.add(failed=1)
                    return None
            prepared = self._mark_inflight(
                session, row, report, self._build_call(session, row, report)
            )
        if recovered is not None:
            self._notify(report_id, recovered, "recovered")
        if prepared is not None:
            self._notify(report_id, prepared.step.value, "start")
        return prepared

    def _build_call(self, session: Session, row: ReportOutboxRow, report: ReportRow) -> _Call:
        step = Step(row.step)
        call = _Call(step=step, remote_id=report.remote_id, file_seq=row.file_seq)
        if step is Step.SUBMIT:
            call.xml = report.xml.encode("utf-8")
        elif step in (Step.UPLOAD, Step.FILEINFO):
            file = session.get(ReportFileRow, (report.id, row.file_seq))
            assert file is not None
            if step is Step.UPLOAD:
                call.evidence_id, call.file_name, call.md5 = (
                    file.evidence_id,
                    file.file_name,
                    file.md5,
                )
            else:
                assert report.remote_id is not None and file.remote_file_id is not None
                call.xml = builder.build_file_details(
                    file_from_json(file.details),
                    report_id=report.remote_id,
                    file_id=file.remote_file_id,
                )
        elif step is Step.RETRACT:
            call.final = row.final_retract
        return call

    def _mark_inflight(
        self, session: Session, row: ReportOutboxRow, report: ReportRow, call: _Call
    ) -> _Call | None:
        """Mark ``call`` in flight and, for an upload, read the file (its audited read
        commits with this step). A file that cannot be read as reported goes to the
        operator queue (None)."""
        if call.step is Step.UPLOAD:
            assert call.evidence_id is not None
            try:
                data = self.evidence.read(session, call.evidence_id)
                if hashlib.md5(data, usedforsecurity=False).hexdigest() != call.md5:
                    raise _StoredFileError(
                        f"stored file {call.evidence_id} no longer has MD5 {call.md5}"
                    )
            except (_StoredFileError, TiplineError) as exc:
                row.inflight = False
                message = f"cannot read the file: {exc}"
                self._to_operator(session, row, report, None, message)
                self._event(session, report.id, call.step.value, "rejected", message)
                self.stats.add(failed=1)
                return None
            call.data = data
        row.inflight = True
        self._event(session, report.id, call.step.value, "start")
        return call

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
            assert call.xml is not None
            return client.fileinfo(call.xml)
        if call.step is Step.FINISH:
            return client.finish(call.remote_id)
        return client.retract(call.remote_id)

    def _succeeded(self, report_id: str, call: _Call, result: object) -> _Call | None:
        """Record a successful step and, in the same transaction, mark the next one in
        flight (one commit per step); returns the next call, None when done."""
        done_phase = "ok"
        following: _Call | None = None
        with self.sessions() as session, session.begin():
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
                file = session.get(ReportFileRow, (report_id, call.file_seq))
                assert file is not None
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
                        self.stats.add(failed=1)
                        done_phase = "rejected"
                else:
                    file.remote_file_id = getattr(result, "file_id", None)
                    file.described = False
                    row.step = Step.FILEINFO.value
                    detail = f"fileId {file.remote_file_id}"
            elif call.step is Step.FILEINFO:
                file = session.get(ReportFileRow, (report_id, call.file_seq))
                assert file is not None
                file.described = True
                count = session.execute(
                    select(func.count()).where(ReportFileRow.report_id == report_id)
                ).scalar_one()
                if call.file_seq + 1 < count:
                    row.step, row.file_seq = Step.UPLOAD.value, call.file_seq + 1
                else:
                    row.step = Step.FINISH.value
                detail = f"file {call.file_seq}"
            elif call.step is Step.FINISH:
                listed = set(getattr(result, "files", ()) or ())
                self._finished(session, row, report, listed)
                detail = f"reportId {report.remote_id}"
            else:
                detail = self._retracted(session, row, report)
            self._event(session, report_id, call.step.value, done_phase, detail)
            finished = call.step is Step.FINISH or (call.step is Step.RETRACT and call.final)
            if not finished and done_phase != "rejected":
                following = self._mark_inflight(
                    session, row, report, self._build_call(session, row, report)
                )
        self._notify(report_id, call.step.value, done_phase)
        if following is not None:
            self._notify(report_id, following.step.value, "start")
        return following

    def _finished(
        self, session: Session, row: ReportOutboxRow, report: ReportRow, listed: set[str] | None
    ) -> None:
        report.status = ReportStatus.FINISHED.value
        report.finished_at = self.clock()
        if listed is not None:
            ours = set(
                session.execute(
                    select(ReportFileRow.remote_file_id).where(ReportFileRow.report_id == report.id)
                ).scalars()
            )
            missing = {f for f in ours if f} - listed
            if missing:
                report.last_error = f"receiver's file list lacks {len(missing)} of our files"
        evidence_ids = list(
            session.execute(
                select(ReportFileRow.evidence_id).where(ReportFileRow.report_id == report.id)
            ).scalars()
        )
        self.evidence.mark_reported(session, evidence_ids, report.id, report.finished_at)
        session.delete(row)
        audit.append(
            session,
            actor=DELIVERY_ACTOR,
            action="report.finish",
            target=("report", report.id),
            details={"remote_id": report.remote_id, "orphans": report.orphans},
            tenant=report.tenant,
        )
        self.stats.add(finished=1)

    def _retracted(self, session: Session, row: ReportOutboxRow, report: ReportRow) -> str:
        detail = f"reportId {report.remote_id} retracted"
        if row.final_retract:
            report.status = ReportStatus.RETRACTED.value
            report.retracted_at = self.clock()
            session.delete(row)
            audit.append(
                session,
                actor=DELIVERY_ACTOR,
                action="report.retract",
                target=("report", report.id),
                details={"remote_id": report.remote_id},
                tenant=report.tenant,
            )
            self.stats.add(retracted=1)
            return detail
        # a restart: the next submit opens a fresh remote report
        report.remote_id = None
        report.status = ReportStatus.QUEUED.value
        session.execute(
            update(ReportFileRow)
            .where(ReportFileRow.report_id == report.id)
            .values(remote_file_id=None, described=False)
        )
        row.step, row.file_seq = Step.SUBMIT.value, 0
        return detail + "; starting again"

    def _on_unknown(
        self, session: Session, row: ReportOutboxRow, report: ReportRow, why: str
    ) -> None:
        """The call in flight may or may not have taken effect."""
        row.inflight = False
        row.attempts += 1
        row.last_error = why
        step = Step(row.step)
        if step is Step.SUBMIT:
            report.orphans += 1
            self.stats.add(orphans=1)
        elif step is Step.UPLOAD:
            row.step, row.final_retract = Step.RETRACT.value, False

    def _failed(self, report_id: str, call: _Call, exc: IspwsError) -> bool:
        """Record a failed step; True to go on at once (the step turned out done)."""
        message = str(exc)
        code = exc.response_code
        refused = isinstance(exc, ReceiverRefusedError)
        go_on = False
        with self.sessions() as session, session.begin():
            owned = self._owned(session, report_id)
            if owned is None:
                return False
            row, report = owned
            if refused and call.step is Step.FINISH and code == REPORT_ALREADY_FINISHED:
                # our earlier finish worked; its answer was lost
                phase = "ok"
                self._finished(session, row, report, None)
            elif refused and call.step is Step.RETRACT and code == REPORT_ALREADY_RETRACTED:
                # our earlier retract worked; its answer was lost
                phase = "ok"
                row.inflight = False
                row.attempts = 0
                message = self._retracted(session, row, report)
                go_on = not call.final
            elif refused and call.step is Step.RETRACT and code == REPORT_ALREADY_FINISHED:
                # a finish whose answer was lost had worked: the report is delivered
                phase = "ok"
                self._finished(session, row, report, None)
            elif refused:
                phase = "rejected"
                row.inflight = False
                self._to_operator(session, row, report, code, message)
                self.stats.add(failed=1)
            else:
                if isinstance(exc, OutcomeUnknownError):
                    phase = "unknown"
                    self._on_unknown(session, row, report, message)
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
                    self.stats.add(failed=1)
                else:
                    delay = self.policy.backoff.delay(row.attempts, self.rng)
                    row.next_at = self.clock() + timedelta(seconds=delay)
                    row.lease_owner = None
                    row.lease_expires_at = None
                    self.stats.add(retries=1)
            self._event(session, report_id, call.step.value, phase, message)
        self._notify(report_id, call.step.value, phase)
        return go_on

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
        audit.append(
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
