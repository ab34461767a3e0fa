"""Liveness of report delivery: no report is left leased (and so untouched) for a whole
lease after an error, and a runner's lease on a report lasts as long as it drives it.

Each case forces its interleaving (a fault on a chosen call, a hook at a chosen step, a
clock moved by hand) and decides on database state, never on elapsed time.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from _clock import ManualClock
from _ispws_server import Faults, ispws_server
from _report_fixtures import FAST_RETRY, deliverer, open_db, queue_reports, run
from tipline.services import jobs
from tipline.services.jobs import Backoff
from tipline.services.reports import delivery_job
from tipline.services.reports.client import IspwsClient
from tipline.services.reports.evidence import DirectoryEvidence
from tipline.services.reports.outbox import Deliverer, outbox_size
from tipline.store.base import utcnow
from tipline.store.jobs import Job
from tipline.store.reports import ReportEventRow, ReportOutboxRow, ReportRow

#: a lease far longer than any test: a report left leased would sit there for the test's life
LONG_LEASE = replace(FAST_RETRY, lease_seconds=3600.0)


class _FirstUpload(Faults):
    """``kind`` on the first ``/upload`` only."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.uploads = 0

    def pick(self, path: str = "") -> str | None:
        if path != "/upload":
            return None
        self.uploads += 1
        return self.kind if self.uploads == 1 else None


def _context(job_id: str) -> jobs.JobContext:
    return jobs.JobContext(
        id=job_id,
        kind=delivery_job.DELIVERY_JOB_KIND,
        payload={},
        attempt=1,
        max_attempts=8,
        idempotency_key=None,
    )


def test_undecodable_answer_is_an_unknown_outcome_not_a_lost_thread(
    db_url: str, tmp_path: Path
) -> None:
    """A receiver whose answer claims gzip and is not: the worker's delivery job used to
    lose the thread driving the report (httpx's DecodingError is no transport error),
    leaving the report leased by nobody alive for the whole lease, with its follow-up
    job queued for the lease's end."""
    engine, sessions = open_db(db_url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1, max_files=1)
    faults = _FirstUpload("bad_encoding_after")
    with ispws_server(faults=faults) as rx:
        client = IspwsClient(rx.url, rx.username, rx.password, timeout=5.0)
        handler = delivery_job.DeliveryJob(
            sessions, client, evidence, LONG_LEASE, in_flight=1, budget_seconds=2.0
        )
        try:
            handler(_context("job-1"))
            with sessions() as session:
                row = session.get(ReportOutboxRow, report_id)
                if row is not None:
                    # waiting for a retry, not leased, and a job queued for it
                    assert row.lease_owner is None
                    due = delivery_job.next_delivery_time(session, utcnow())
                    assert due is not None and due == row.next_at
                    pending = session.scalars(
                        select(Job.run_at).where(Job.status == "pending")
                    ).all()
                    assert any(at <= row.next_at for at in pending)
            for n in range(50):  # the follow-ups the worker would run, one at a time
                with sessions() as session:
                    if outbox_size(session) == 0:
                        break
                handler(_context(f"job-{n + 2}"))
        finally:
            handler.close()
        finished = rx.receiver.finished_by_ref()
        reports = list(rx.receiver.reports.values())
    assert faults.uploads >= 2 and handler.totals.errors == 0
    assert len(finished[report_id]) == 1 and finished[report_id][0].finished == 1
    # the upload whose answer could not be read was retracted and delivery started again
    assert any(r.retracted and r.files for r in reports)
    with sessions() as session:
        assert outbox_size(session) == 0
        assert session.get(ReportRow, report_id).status == "finished"
    engine.dispose()


def test_a_thread_that_fails_mid_report_lets_the_report_go(db_url: str, tmp_path: Path) -> None:
    """An unexpected error in a delivery thread after it marked a call in flight (here
    raised by the step hook): the report is let go at once with the attempt counted, the
    next runner treats the call as interrupted, and the report is finished once."""
    engine, sessions = open_db(db_url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1, max_files=1)
    raised: list[str] = []

    def fail_once(rid: str, step: str, phase: str) -> None:
        if step == "upload" and phase == "start" and not raised:
            raised.append(rid)
            raise RuntimeError("thread lost after marking the upload in flight")

    # the retry waits an hour of a clock moved by hand: the first run ends with the
    # report let go, whatever the machine's speed
    policy = replace(LONG_LEASE, backoff=Backoff(base=3600.0, maximum=3600.0))
    clock = ManualClock()
    with ispws_server() as rx:
        first = deliverer(
            sessions, tmp_path / "ev", rx.url, rx.username, rx.password, policy=policy
        )
        first.on_step, first.clock = fail_once, clock.now
        stats = run(first, wait_for_retries=False)
        assert raised == [report_id] and stats.errors == 1
        with sessions() as session:
            row = session.get(ReportOutboxRow, report_id)
            assert row is not None and row.lease_owner is None and row.attempts == 1
            assert row.step == "upload" and row.inflight
        clock.advance(3600.0)
        second = deliverer(
            sessions, tmp_path / "ev", rx.url, rx.username, rx.password, policy=policy
        )
        second.clock = clock.now
        stats = run(second)
        finished = rx.receiver.finished_by_ref()
        reports = list(rx.receiver.reports.values())
    assert stats.finished == 1 and stats.errors == 0
    assert len(finished[report_id]) == 1
    # the interrupted upload may have attached a file: that remote report was retracted
    assert [r.retracted for r in reports] == [True, False]
    with sessions() as session:
        phases = session.scalars(
            select(ReportEventRow.phase).where(ReportEventRow.report_id == report_id)
        ).all()
        assert "error" in phases and "recovered" in phases
        assert outbox_size(session) == 0
    engine.dispose()


def test_lease_lasts_as_long_as_the_runner_drives_the_report(db_url: str, tmp_path: Path) -> None:
    """A report whose steps together outlast the lease: each step in flight extends it,
    so the report is never free for a second runner while a live one drives it (the
    second would count a false orphan and submit it again)."""
    engine, sessions = open_db(db_url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    [report_id] = queue_reports(sessions, evidence, 1, max_files=1)
    lease = 60.0
    policy = replace(FAST_RETRY, lease_seconds=lease)
    clock = ManualClock()
    taken: list[str] = []
    with ispws_server() as rx:

        def slow_steps(rid: str, step: str, phase: str) -> None:
            if phase == "start":
                clock.advance(0.75 * lease)  # each call takes most of a lease
                with sessions() as session:
                    row = session.get(ReportOutboxRow, rid)
                    assert row is not None and row.lease_expires_at is not None
                    if row.lease_expires_at < clock.now():
                        # free for any runner (Deliverer._lease_many) while this one drives
                        taken.append(step)

        driver = Deliverer(
            sessions,
            IspwsClient(rx.url, rx.username, rx.password),
            DirectoryEvidence(tmp_path / "ev"),
            policy=policy,
            clock=clock.now,
            on_step=slow_steps,
            rng=random.Random(0),
        )
        try:
            stats = driver.run()
        finally:
            driver.client.close()
        finished = rx.receiver.finished_by_ref()
    assert taken == []
    assert stats.finished == 1 and stats.orphans == 0
    assert len(finished[report_id]) == 1
    assert len(rx.receiver.reports) == 1  # one submit: nobody took it over
    engine.dispose()


def test_idle_threads_share_one_look_at_the_outbox(db_url: str, tmp_path: Path) -> None:
    """A runner's idle threads take the answer of one look at the outbox begun after
    their failed claims (not one query each), and never an answer older than their
    claim."""
    import threading
    import time

    engine, sessions = open_db(db_url)
    evidence = DirectoryEvidence(tmp_path / "ev")
    client = IspwsClient("http://127.0.0.1:9", "u", "p")
    runner = Deliverer(sessions, client, evidence)
    looks = []
    real = runner._look_at_outbox

    def look() -> tuple[int, object, int, object]:
        looks.append(1)
        return real()  # type: ignore[return-value]

    runner._look_at_outbox = look  # type: ignore[method-assign]
    tried = time.monotonic()  # every thread's claim failed before any look began
    answers: list[float | None] = []
    threads = [
        threading.Thread(target=lambda: answers.append(runner._idle_wait(True, 1.0, tried)))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [None] * 16 and len(looks) == 1  # idle: every thread may end
    # a claim that failed after that look began gets a look of its own, which sees new work
    queue_reports(sessions, evidence, 1, max_files=1)
    assert runner._idle_wait(True, 1.0, time.monotonic()) == 0.0 and len(looks) == 2
    client.close()
    engine.dispose()
