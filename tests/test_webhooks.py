"""Webhooks and actions against a real HTTP receiver on 127.0.0.1; multi-runner delivery."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from _clock import HANG_SECONDS
from conftest import migrated_sqlite
from tipline.config import Settings, get_settings
from tipline.errors import InputError, NotFoundError, PermissionDeniedError
from tipline.services import actions, audit, jobs, webhooks
from tipline.services.actions import MatchEvent, MatchHit, ReviewStatus
from tipline.services.auth import Principal, Role
from tipline.services.jobs import Backoff, JobRunner
from tipline.store.audit import AuditRecord
from tipline.store.base import utcnow
from tipline.store.db import make_engine, session_factory, transaction
from tipline.store.jobs import Job

SECRET = "test-secret-0123456789abcdef"
FAST = Backoff(base=0.01, maximum=0.05)


@dataclass
class Delivery:
    key: str
    body: bytes
    signature: str | None
    timestamp: str | None


@dataclass
class Receiver:
    """A real HTTP server: answers 500 to a ``fail_rate`` share of requests, else 200."""

    fail_rate: float = 0.0
    status: int = 200
    #: when set, each request waits for this event before it is answered
    hold: threading.Event | None = None
    seed: int = 1
    requests: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                delivery = Delivery(
                    key=self.headers.get(webhooks.IDEMPOTENCY_HEADER, ""),
                    body=body,
                    signature=self.headers.get(webhooks.SIGNATURE_HEADER),
                    timestamp=self.headers.get(webhooks.TIMESTAMP_HEADER),
                )
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                with receiver.lock:
                    receiver.requests.append(delivery)
                    fail = receiver.rng.random() < receiver.fail_rate
                    status = 500 if fail else receiver.status
                    if 200 <= status < 300:
                        receiver.accepted.append(delivery)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook?token=url-token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _loopback_receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test receivers listen on 127.0.0.1: allow loopback through the SSRF guard's
    allow-list, as a deployment would for an internal receiver (also for subprocesses)."""
    monkeypatch.setenv("TIPLINE_FETCH_ALLOW_PRIVATE", json.dumps(["127.0.0.0/8"]))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _resolves_to(*addresses: str) -> Any:
    return lambda host, port: [ipaddress.ip_address(a) for a in addresses]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)  # db_url is migrated already
    yield eng
    eng.dispose()


def _event(event_id: str, *banks: str, tenant: str | None = None) -> MatchEvent:
    hits = [MatchHit(bank=b, signal_type="pdq", distance=3, entry_id=f"{b}-1") for b in banks]
    return MatchEvent(event_id=event_id, hits=hits, content_id=f"c-{event_id}", tenant=tenant)


def _runner(engine: Engine, **kwargs: Any) -> tuple[JobRunner, webhooks.WebhookDeliverer]:
    deliverer = webhooks.WebhookDeliverer(engine, timeout=kwargs.pop("timeout", 5.0))
    runner = JobRunner(
        engine, {webhooks.WEBHOOK_JOB_KIND: deliverer}, backoff=FAST, poll_interval=0.05, **kwargs
    )
    return runner, deliverer


def _drain(runner: JobRunner, seconds: float = 60.0) -> None:
    """Run until idle; ``seconds`` only bounds a failure (normally well under 1 s)."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        runner.run(stop, exit_when_idle=True)
    finally:
        timer.cancel()


# --- signatures -------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    body = b'{"sent_at":1700000000,"x":1}'
    sig = webhooks.sign(SECRET, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert webhooks.verify_signature(SECRET, body, sig)
    assert not webhooks.verify_signature(SECRET, body + b" ", sig)
    assert not webhooks.verify_signature("another-secret-0123456789", body, sig)
    assert not webhooks.verify_signature(SECRET, body, None)
    assert not webhooks.verify_signature(SECRET, body, sig.removeprefix("sha256="))
    ts = "1700000000"
    assert webhooks.verify_signature(SECRET, body, sig, timestamp=ts, now=1700000100)
    assert not webhooks.verify_signature(SECRET, body, sig, timestamp=ts, now=1700001000)
    assert not webhooks.verify_signature(SECRET, body, sig, timestamp="1700000001", now=1700000100)
    assert not webhooks.verify_signature(SECRET, body, sig, timestamp="nope")


def test_webhook_config_validation(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        for url in ("ftp://x/", "/relative", "http://", "javascript:alert(1)"):
            with pytest.raises(InputError):
                webhooks.create_webhook(session, url=url)
        with pytest.raises(InputError):
            webhooks.create_webhook(session, url="http://127.0.0.1/", secret="short")
        with pytest.raises(PermissionDeniedError):
            webhooks.create_webhook(
                session, url="http://127.0.0.1/", actor=Principal("k", Role.CURATOR)
            )
        hook, secret = webhooks.create_webhook(session, url="http://127.0.0.1/", banks=["a"])
        assert len(secret) >= 32
        listed = webhooks.list_webhooks(session)
        assert listed[0]["banks"] == ["a"] and "secret" not in listed[0]
        assert secret not in repr(hook)
        details = session.execute(select(AuditRecord.details)).scalars().all()
        assert all(secret not in d for d in details)
        other_tenant = Principal("k", Role.ADMIN, "acme")
        with pytest.raises(NotFoundError):
            webhooks.get_webhook(session, hook.id, actor=other_tenant)


# --- delivery ---------------------------------------------------------------------------


def test_match_rule_delivers_signed_webhook(engine: Engine, receiver: Receiver) -> None:
    with transaction(session_factory(engine)) as session:
        hook, secret = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
        actions.add_rule(session, action="webhook", bank="known", webhook_id=hook.id)
        outcome = actions.on_match(session, _event("e1", "known"))
    assert len(outcome.deliveries) == 1 and outcome.review_items == []
    runner, deliverer = _runner(engine)
    try:
        assert runner.run_once() == 1
    finally:
        deliverer.close()
    (delivery,) = receiver.requests
    assert delivery.key == webhooks.idempotency_key(hook.id, "e1")
    assert webhooks.verify_signature(
        secret, delivery.body, delivery.signature, timestamp=delivery.timestamp
    )
    document = json.loads(delivery.body)
    assert document["event"]["matches"][0]["bank"] == "known"
    assert document["event"]["content_id"] == "c-e1" and document["attempt"] == 1
    with transaction(session_factory(engine)) as session:
        assert jobs.counts(session)["done"] == 1
        actions_logged = session.execute(select(AuditRecord.action)).scalars().all()
        assert "match" in actions_logged and audit.verify(session).ok
        errors = session.execute(select(Job.last_error)).scalars().all()
    assert errors == [None]


def test_failures_are_retried_until_2xx(engine: Engine, receiver: Receiver) -> None:
    receiver.status = 503
    with transaction(session_factory(engine)) as session:
        hook, _ = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
        (job_id,) = [webhooks.enqueue_delivery(session, hook, "e1", {"x": 1}, max_attempts=10)]
    runner, deliverer = _runner(engine)
    try:
        runner.run_once()
        runner.run_once()  # still backing off or failing again
        with transaction(session_factory(engine)) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "pending"
            assert job.last_error is not None and "HTTP 503" in job.last_error
            assert "url-token" not in job.last_error
        receiver.status = 200
        _drain(runner)
    finally:
        deliverer.close()
    assert len(receiver.accepted) == 1 and len(receiver.requests) >= 2
    assert {d.key for d in receiver.requests} == {webhooks.idempotency_key(hook.id, "e1")}


def test_dead_letter_after_max_attempts(engine: Engine, receiver: Receiver) -> None:
    receiver.status = 500
    with transaction(session_factory(engine)) as session:
        hook, _ = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
        job_id = webhooks.enqueue_delivery(session, hook, "e1", {"x": 1}, max_attempts=3)
    runner, deliverer = _runner(engine)
    try:
        _drain(runner)
    finally:
        deliverer.close()
    assert len(receiver.requests) == 3 and not receiver.accepted
    with transaction(session_factory(engine)) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "dead" and job.attempts == 3


def test_timeout_and_unreachable_are_retried(engine: Engine, receiver: Receiver) -> None:
    receiver.hold = threading.Event()  # never answers within the client's time limit
    with transaction(session_factory(engine)) as session:
        slow, _ = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
        gone, _ = webhooks.create_webhook(session, url="http://127.0.0.1:9/x", secret=SECRET)
        slow_job = webhooks.enqueue_delivery(session, slow, "e1", {}, max_attempts=5)
        gone_job = webhooks.enqueue_delivery(session, gone, "e1", {}, max_attempts=5)
    runner, deliverer = _runner(engine, timeout=0.1)
    try:
        assert runner.run_once() == 2
    finally:
        receiver.hold.set()
        deliverer.close()
    with transaction(session_factory(engine)) as session:
        errors = {j: session.get(Job, j).last_error for j in (slow_job, gone_job)}  # type: ignore[union-attr]
    assert "timed out" in str(errors[slow_job])
    assert "unreachable" in str(errors[gone_job])


def test_injectable_transport(engine: Engine) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with transaction(session_factory(engine)) as session:
        hook, _ = webhooks.create_webhook(
            session,
            url="https://hooks.example/x?t=1",
            secret=SECRET,
            resolver=_resolves_to("93.184.215.14"),
        )
        webhooks.enqueue_delivery(session, hook, "e1", {"x": 1})
    deliverer = webhooks.WebhookDeliverer(
        engine, transport=httpx.MockTransport(handle), resolver=_resolves_to("93.184.215.14")
    )
    runner = JobRunner(engine, {webhooks.WEBHOOK_JOB_KIND: deliverer})
    try:
        assert runner.run_once() == 1
    finally:
        deliverer.close()
    (request,) = seen
    assert webhooks.verify_signature(
        SECRET, request.content, request.headers[webhooks.SIGNATURE_HEADER]
    )
    # sent to the checked address, naming the host
    assert str(request.url) == "https://93.184.215.14/x?t=1"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.0.1]/x",
        "http://user:pw@127.0.0.1/x",
    ],
)
def test_private_receivers_are_refused_at_config(engine: Engine, url: str) -> None:
    with transaction(session_factory(engine)) as session, pytest.raises(InputError):
        webhooks.create_webhook(session, url=url)


def test_receiver_resolving_to_private_is_refused(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        with pytest.raises(InputError, match="non-public"):
            webhooks.create_webhook(
                session, url="https://hooks.example/", resolver=_resolves_to("1.1.1.1", "10.0.0.5")
            )
        # the allow-list covers loopback, never the metadata endpoints
        strict = Settings(fetch_allow_private=["169.254.0.0/16"])
        with pytest.raises(InputError):
            webhooks.create_webhook(session, url="http://169.254.169.254/", settings=strict)


def test_dns_change_after_config_is_refused_at_delivery(engine: Engine) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with transaction(session_factory(engine)) as session:
        hook, _ = webhooks.create_webhook(
            session, url="https://hooks.example/x", resolver=_resolves_to("93.184.215.14")
        )
        job_id = webhooks.enqueue_delivery(session, hook, "e1", {"x": 1})
    deliverer = webhooks.WebhookDeliverer(
        engine, transport=httpx.MockTransport(handle), resolver=_resolves_to("169.254.169.254")
    )
    runner = JobRunner(engine, {webhooks.WEBHOOK_JOB_KIND: deliverer})
    try:
        assert runner.run_once() == 1
    finally:
        deliverer.close()
    assert seen == []
    with transaction(session_factory(engine)) as session:
        job = session.get(Job, job_id)
        assert job is not None and "non-public" in (job.last_error or "")


# --- rules and filters ------------------------------------------------------------------


def test_bank_filters_rules_and_disabled_hooks(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        only_a, _ = webhooks.create_webhook(session, url="http://127.0.0.1:1/a", banks=["a"])
        every, _ = webhooks.create_webhook(session, url="http://127.0.0.1:1/all")
        off, _ = webhooks.create_webhook(session, url="http://127.0.0.1:1/off", enabled=False)
        acme, _ = webhooks.create_webhook(session, url="http://127.0.0.1:1/t", tenant="acme")
        actions.add_rule(session, action="webhook")  # any bank -> every enabled hook
        actions.add_rule(session, action="enqueue_review", bank="b")
        out_a = actions.on_match(session, _event("ea", "a"))
        out_b = actions.on_match(session, _event("eb", "b"))
        out_c = actions.on_match(session, _event("ec", "c", tenant="acme"))  # no acme rules
        again = actions.on_match(session, _event("eb", "b"))
        hooks_by_job = dict(session.execute(select(Job.id, Job.idempotency_key)).all())

    def targets(ids: list[str]) -> set[str]:
        return {hooks_by_job[i].split(":")[1] for i in ids}

    assert targets(out_a.deliveries) == {only_a.id, every.id}
    assert targets(out_b.deliveries) == {every.id}
    assert out_a.review_items == [] and len(out_b.review_items) == 1
    assert out_c.deliveries == [] and out_c.review_items == []
    assert again.review_items == [] and again.deliveries == out_b.deliveries
    assert off.id not in targets(out_a.deliveries + out_b.deliveries)
    assert acme.id not in targets(out_a.deliveries + out_b.deliveries)


def test_disabled_after_enqueue_is_dropped(engine: Engine, receiver: Receiver) -> None:
    with transaction(session_factory(engine)) as session:
        hook, _ = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
        webhooks.enqueue_delivery(session, hook, "e1", {})
        webhooks.set_enabled(session, hook.id, False)
    runner, deliverer = _runner(engine)
    try:
        assert runner.run_once() == 1
    finally:
        deliverer.close()
    assert receiver.requests == []


def test_review_queue_and_decisions(engine: Engine) -> None:
    reviewer = Principal("rev1", Role.REVIEWER, "acme")
    with transaction(session_factory(engine)) as session:
        actions.add_rule(session, action="enqueue_review", tenant="acme")
        actions.on_match(session, _event("e1", "x", "y", tenant="acme"), actor="key1")
        actions.on_match(session, _event("e2", "x", tenant=None))  # no rule for untenanted
        items = actions.review_queue(session, actor=reviewer)
        assert [(i["bank"], i["content_id"]) for i in items] == [("x", "c-e1"), ("y", "c-e1")]
        assert items[0]["details"]["matches"][0]["distance"] == 3
        actions.decide(session, items[0]["id"], ReviewStatus.CONFIRMED, actor=reviewer)
        with pytest.raises(Exception, match="already confirmed"):
            actions.decide(session, items[0]["id"], ReviewStatus.REJECTED, actor=reviewer)
        with pytest.raises(PermissionDeniedError):
            actions.review_queue(session, actor=Principal("m", Role.MATCHER, "acme"))
        with pytest.raises(NotFoundError):
            actions.decide(
                session, items[1]["id"], ReviewStatus.REJECTED,
                actor=Principal("r2", Role.REVIEWER, "other"),
            )  # fmt: skip
        assert len(actions.review_queue(session, actor=reviewer)) == 1
        assert audit.verify(session).ok


# --- several runner processes -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_two_worker_processes_deliver_each_exactly_once(
    _postgres_schemas: Any, _postgres_migration: Any
) -> None:
    """400 deliveries (~570 requests), 2 ``tipline worker`` processes, a receiver failing
    30% at random: 40 batches of 10 claimed by two processes racing for them."""
    total = 400
    schema = _postgres_schemas.create(_postgres_migration)  # a migrated schema (conftest)
    postgres_url = _postgres_schemas.url(schema)
    engine = make_engine(postgres_url)
    receiver = Receiver(fail_rate=0.3, seed=12345)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with transaction(session_factory(engine)) as session:
            hook, secret = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
            for i in range(total):
                webhooks.enqueue_delivery(session, hook, f"ev{i}", {"n": i}, max_attempts=30)
            # not due until both workers run, so neither can finish before the other starts
            session.execute(update(Job).values(run_at=utcnow() + timedelta(days=1)))
        env = dict(os.environ, TIPLINE_DATABASE_URL=postgres_url)
        # generous time limits: a request that timed out but was delivered would count twice
        args = [
            sys.executable, "-m", "tipline.cli.main", "worker", "--exit-when-idle",
            "--poll-interval", "0.05", "--backoff-base", "0.02", "--backoff-max", "0.2",
            "--batch-size", "10", "--lease-seconds", "120", "--webhook-timeout", "60",
        ]  # fmt: skip
        started = time.monotonic()
        workers = [
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        for w in workers:
            assert w.stderr is not None
            assert b"started" in w.stderr.readline()
        with transaction(session_factory(engine)) as session:
            session.execute(update(Job).values(run_at=utcnow()))
        outputs = [w.communicate(timeout=HANG_SECONDS) for w in workers]
        elapsed = time.monotonic() - started
        for w, (_, err) in zip(workers, outputs, strict=True):
            assert w.returncode == 0, err.decode()
        with transaction(session_factory(engine)) as session:
            counts = jobs.counts(session)
            owners_done = session.execute(select(Job.attempts)).scalars().all()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        receiver.close()
        engine.dispose()
        _postgres_schemas.drop(schema)
    accepted = Counter(d.key for d in receiver.accepted)
    expected = {webhooks.idempotency_key(hook.id, f"ev{i}") for i in range(total)}
    assert counts == {"pending": 0, "running": 0, "done": total, "dead": 0}
    assert set(accepted) == expected  # none lost
    assert max(accepted.values()) == 1  # none delivered successfully twice
    assert all(
        webhooks.verify_signature(secret, d.body, d.signature, timestamp=d.timestamp)
        for d in receiver.accepted
    )
    failed = len(receiver.requests) - total
    assert failed == sum(owners_done) - total  # every retry was caused by a 500
    assert 0.2 < failed / len(receiver.requests) < 0.4
    # both processes took part
    ran = [int(err.decode().rsplit(": ", 1)[1].split()[0]) for _, err in outputs]
    assert all(n > 0 for n in ran) and sum(ran) == len(receiver.requests)
    print(f"\n{total} deliveries, {len(receiver.requests)} requests, {elapsed:.1f} s, runs {ran}")


def test_worker_logs_never_show_secrets_or_url_tokens(tmp_path: Path, receiver: Receiver) -> None:
    # one database (SQLite): what the worker logs does not depend on the backend
    db_url = migrated_sqlite(tmp_path / "tipline.db")
    engine = make_engine(db_url)
    receiver.status = 500
    try:
        with transaction(session_factory(engine)) as session:
            hook, secret = webhooks.create_webhook(session, url=receiver.url, secret=SECRET)
            webhooks.enqueue_delivery(session, hook, "e1", {"x": 1})
    finally:
        engine.dispose()
    env = dict(os.environ, TIPLINE_DATABASE_URL=db_url)
    done = subprocess.run(
        [sys.executable, "-m", "tipline.cli.main", "worker", "--once", "--verbose"],
        env=env, capture_output=True, text=True, timeout=HANG_SECONDS, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(receiver.requests) == 1
    output = done.stdout + done.stderr
    assert "HTTP 500" in output  # the failure is logged ...
    assert "url-token" not in output and secret not in output  # ... without secrets


def test_a_variant_match_says_so_in_the_event_and_the_review_item(engine: Engine) -> None:
    reviewer = Principal("rev1", Role.REVIEWER, None)
    hit = MatchHit(bank="x", signal_type="pdq", distance=12, entry_id="x-1", variant="trim")
    event = MatchEvent(event_id="e9", hits=[hit], content_id="c-e9")
    assert event.as_json()["matches"][0]["variant"] == "trim"
    assert _event("e8", "x").as_json()["matches"][0]["variant"] is None
    with transaction(session_factory(engine)) as session:
        actions.add_rule(session, action="enqueue_review", bank="x")
        actions.on_match(session, event, actor="key1")
        items = actions.review_queue(session, actor=reviewer)
    assert [i["details"]["matches"][0]["variant"] for i in items] == ["trim"]
