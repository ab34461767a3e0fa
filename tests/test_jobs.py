"""Job runner: idempotent enqueue, leases, expiry, fencing, retries, dead letters."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from _clock import HANG_SECONDS, ManualClock
from tipline.services import jobs
from tipline.services.jobs import Backoff, JobContext, JobRunner
from tipline.store.base import utcnow
from tipline.store.db import make_engine, session_factory, transaction
from tipline.store.jobs import Job

FAST = Backoff(base=0.01, maximum=0.05)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)  # db_url is migrated already
    yield eng
    eng.dispose()


def _enqueue(engine: Engine, n: int, kind: str = "t", **kwargs: object) -> list[str]:
    with transaction(session_factory(engine)) as session:
        return [jobs.enqueue(session, kind, {"i": i}, **kwargs) for i in range(n)]  # type: ignore[arg-type]


def _counts(engine: Engine) -> dict[str, int]:
    with transaction(session_factory(engine)) as session:
        return jobs.counts(session)


def _job(engine: Engine, job_id: str) -> Job:
    with transaction(session_factory(engine)) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_enqueue_with_idempotency_key_adds_once(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        first = jobs.enqueue(session, "t", {"a": 1}, idempotency_key="k1")
        again = jobs.enqueue(session, "t", {"a": 2}, idempotency_key="k1")
        other = jobs.enqueue(session, "t", {"a": 3}, idempotency_key="k2")
    with transaction(session_factory(engine)) as session:
        third = jobs.enqueue(session, "t", {"a": 4}, idempotency_key="k1")
        assert jobs.counts(session)["pending"] == 2
    assert first == again == third != other


def test_success_marks_done(engine: Engine) -> None:
    seen: list[JobContext] = []
    ids = _enqueue(engine, 3)
    runner = JobRunner(engine, {"t": seen.append}, backoff=FAST)
    assert runner.run_once() == 3
    assert sorted(c.payload["i"] for c in seen) == [0, 1, 2]
    assert all(c.attempt == 1 for c in seen)
    for job_id in ids:
        job = _job(engine, job_id)
        assert job.status == "done" and job.lease_owner is None and job.finished_at is not None
    assert runner.run_once() == 0


def test_unknown_kinds_and_future_jobs_are_not_claimed(engine: Engine) -> None:
    _enqueue(engine, 1, kind="other")
    with transaction(session_factory(engine)) as session:
        jobs.enqueue(session, "t", {}, run_at=utcnow() + timedelta(hours=1))
    assert JobRunner(engine, {"t": lambda c: None}).run_once() == 0


def test_failures_retry_with_backoff_then_dead_letter(engine: Engine) -> None:
    (job_id,) = _enqueue(engine, 1, max_attempts=3)
    clock = ManualClock()
    attempts: list[int] = []

    def fail(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise jobs.JobFailedError(f"boom {ctx.attempt}")

    backoff = Backoff(base=20.0, maximum=20.0, jitter=0.0)
    runner = JobRunner(engine, {"t": fail}, backoff=backoff, clock=clock)
    assert runner.run_once() == 1
    job = _job(engine, job_id)
    assert job.status == "pending" and job.last_error == "JobFailedError: boom 1"
    assert job.run_at == clock.now() + timedelta(seconds=20)
    clock.advance(19.9)
    assert runner.run_once() == 0  # backing off
    clock.advance(0.2)
    assert runner.run_once() == 1
    clock.advance(20.1)
    assert runner.run_once() == 1
    job = _job(engine, job_id)
    assert attempts == [1, 2, 3]
    assert job.status == "dead" and job.dead_lettered_at is not None and job.attempts == 3
    clock.advance(3600)
    assert runner.run_once() == 0


def test_expired_lease_is_reclaimed_and_old_owner_is_fenced(engine: Engine) -> None:
    (job_id,) = _enqueue(engine, 1)
    clock = ManualClock()
    done: list[str] = []
    slow = JobRunner(engine, {"t": lambda c: None}, owner="slow", lease_seconds=30, clock=clock)
    fast = JobRunner(engine, {"t": lambda c: done.append(c.id)}, owner="fast", clock=clock)
    (claimed,) = slow.claim()  # the slow runner "hangs" with the job
    clock.advance(29.9)
    assert fast.run_once() == 0  # lease still valid
    clock.advance(0.2)
    assert fast.run_once() == 1 and done == [job_id]
    # the slow runner wakes up and fails: its late outcome must not overwrite "done"
    slow._finish(claimed, "late failure")
    job = _job(engine, job_id)
    assert job.status == "done" and job.attempts == 2 and job.last_error is None


def test_crashed_runner_job_is_retried(engine: Engine) -> None:
    (job_id,) = _enqueue(engine, 1, max_attempts=2)
    clock = ManualClock()
    JobRunner(engine, {"t": lambda c: None}, owner="dies", lease_seconds=30, clock=clock).claim()
    seen: list[int] = []
    JobRunner(engine, {"t": lambda c: seen.append(c.attempt)}, clock=clock).run_once()
    assert seen == []  # lease still valid
    clock.advance(31)
    JobRunner(engine, {"t": lambda c: seen.append(c.attempt)}, clock=clock).run_once()
    assert seen == [2] and _job(engine, job_id).status == "done"


def test_handler_exception_types_do_not_stop_the_runner(engine: Engine) -> None:
    _enqueue(engine, 4, max_attempts=1)

    def flaky(ctx: JobContext) -> None:
        if ctx.payload["i"] % 2:
            raise ValueError("odd")

    assert JobRunner(engine, {"t": flaky}).run_once() == 4
    with transaction(session_factory(engine)) as session:
        assert jobs.counts(session) == {"pending": 0, "running": 0, "done": 2, "dead": 2}


def test_concurrent_runners_claim_each_job_once(engine: Engine) -> None:
    """Brute-force twin: every job id appears exactly once across all runners' claims."""
    ids = _enqueue(engine, 120)
    claims: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def record(ctx: JobContext) -> None:
        with lock:
            claims.append(ctx.id)

    def work(n: int) -> None:
        try:
            runner = JobRunner(engine, {"t": record}, owner=f"r{n}", batch_size=7)
            stop = threading.Event()
            runner.run(stop, exit_when_idle=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=HANG_SECONDS)
    assert not errors
    assert Counter(claims) == Counter(ids)
    with transaction(session_factory(engine)) as session:
        statuses = set(session.execute(select(Job.status)).scalars())
    assert statuses == {"done"}


def test_run_stops_on_event(engine: Engine) -> None:
    stop = threading.Event()
    runner = JobRunner(engine, {"t": lambda c: None}, poll_interval=0.05)
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    _enqueue(engine, 2)
    deadline = time.monotonic() + HANG_SECONDS  # a failure bound only: normally ~0.1 s
    while _counts(engine)["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=HANG_SECONDS)
    assert not thread.is_alive()
    with transaction(session_factory(engine)) as session:
        assert jobs.counts(session)["done"] == 2


@given(
    attempt=st.integers(1, 40),
    base=st.floats(0.001, 100),
    maximum=st.floats(0.001, 10_000),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_backoff_bounds(
    attempt: int, base: float, maximum: float, jitter: float, seed: int
) -> None:
    backoff = Backoff(base=base, maximum=maximum, jitter=jitter)
    raw = min(maximum, base * 2 ** (attempt - 1))
    delay = backoff.delay(attempt, random.Random(seed))
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw + 1e-9


def test_backoff_grows_exponentially_without_jitter() -> None:
    backoff = Backoff(base=1.0, maximum=10.0, jitter=0.0)
    assert [backoff.delay(a) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_slow_batch_renews_its_leases(engine: Engine) -> None:
    """A batch that runs longer than one lease keeps its jobs: no second runner gets them.

    Each job "takes" 25 s of a 60 s lease on a controlled clock, and a second runner
    tries to claim while it runs; without renewal it takes the third job (at 75 s).
    """
    _enqueue(engine, 3)
    clock = ManualClock()
    runs: Counter[str] = Counter()
    stolen: list[str] = []
    thief = JobRunner(engine, {"t": lambda c: stolen.append(c.id)}, owner="b", clock=clock)

    def slow(ctx: JobContext) -> None:
        runs[ctx.id] += 1
        clock.advance(25)
        thief.run_once()

    owner = JobRunner(engine, {"t": slow}, owner="a", lease_seconds=60, batch_size=3, clock=clock)
    assert owner.run_once() == 3
    assert stolen == [] and sorted(runs.values()) == [1, 1, 1]
    assert _counts(engine)["done"] == 3


def test_worker_cli_exits_cleanly_on_sigterm(db_url: str, engine: Engine) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, TIPLINE_DATABASE_URL=db_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tipline.cli.main", "worker", "--poll-interval", "0.05"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()  # signal handlers are installed by now
        assert "started" in first, first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=HANG_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "0 jobs run" in err.decode()


def test_job_whose_runner_died_on_the_last_attempt_is_dead_lettered(engine: Engine) -> None:
    (job_id,) = _enqueue(engine, 1, max_attempts=1)
    clock = ManualClock()
    JobRunner(engine, {"t": lambda c: None}, owner="dies", lease_seconds=30, clock=clock).claim()
    clock.advance(31)
    seen: list[int] = []
    runner = JobRunner(engine, {"t": lambda c: seen.append(c.attempt)}, clock=clock)
    assert runner.run_once() == 0
    job = _job(engine, job_id)
    assert seen == [] and job.status == "dead" and "lease expired" in str(job.last_error)


def test_naive_run_at_is_refused(engine: Engine) -> None:
    from datetime import datetime

    from tipline.errors import InputError

    with transaction(session_factory(engine)) as session, pytest.raises(InputError):
        jobs.enqueue(session, "t", {}, run_at=datetime(2030, 1, 1))


def test_dead_letters_can_be_listed_and_retried(engine: Engine) -> None:
    from tipline.errors import NotFoundError

    (job_id,) = _enqueue(engine, 1, max_attempts=1)
    calls: list[int] = []

    def fail_once(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("receiver down")

    runner = JobRunner(engine, {"t": fail_once})
    runner.run_once()
    with transaction(session_factory(engine)) as session:
        (dead,) = jobs.dead_letters(session)
        assert dead["id"] == job_id and dead["last_error"] == "RuntimeError: receiver down"
        jobs.retry_dead(session, job_id, extra_attempts=2)
        with pytest.raises(NotFoundError):
            jobs.retry_dead(session, job_id)  # pending now, not dead
    assert runner.run_once() == 1 and calls == [1, 2]
    job = _job(engine, job_id)
    assert job.status == "done" and job.attempts == 2 and job.max_attempts == 3
    with transaction(session_factory(engine)) as session:
        assert jobs.dead_letters(session) == []
