"""Audit log: hash chain, tamper detection (edit, delete, reorder), concurrency, CLI."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import sessionmaker

from _cli import run_tipline
from _clock import HANG_SECONDS
from tipline.errors import AuditChainError, InputError
from tipline.services import audit
from tipline.store.audit import GENESIS_HASH, AuditRecord
from tipline.store.db import make_engine, session_factory, transaction, upgrade


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)  # db_url is migrated already
    yield eng
    eng.dispose()


def _append_n(engine: Engine, n: int, *, start: int = 0) -> None:
    with transaction(session_factory(engine)) as session:
        for i in range(start, start + n):
            audit.append(
                session,
                actor="cli",
                action="bank.create",
                target=("bank", f"bank-{i}"),
                details={"i": i, "note": "ünïcode ✓"},
            )


def _verify(engine: Engine) -> audit.AuditReport:
    with transaction(session_factory(engine)) as session:
        return audit.verify(session)


def _allow_tampering(engine: Engine) -> None:
    """Drop the append-only guard the way an attacker with DDL rights would."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def _raw(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_chain_links_and_verifies(engine: Engine) -> None:
    _append_n(engine, 10)
    report = _verify(engine)
    assert report.ok and report.records == 10 and report.first_bad_seq is None
    with transaction(session_factory(engine)) as session:
        rows = session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
    assert [r.seq for r in rows] == list(range(1, 11))
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    assert report.head_hash == rows[-1].hash
    assert "OK: 10 records" in report.describe()


def test_empty_log_verifies(engine: Engine) -> None:
    report = _verify(engine)
    assert report.ok and report.records == 0 and report.head_hash == GENESIS_HASH


def test_secrets_are_redacted(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        record = audit.append(
            session,
            actor="cli",
            action="webhook.create",
            details={"url_host": "h", "secret": "s3cr3t", "nested": [{"api_key": "k"}]},
        )
    stored = json.loads(record.details)
    assert stored == {
        "url_host": "h",
        "secret": "[redacted]",
        "nested": [{"api_key": "[redacted]"}],
    }
    assert "s3cr3t" not in record.details


def test_database_refuses_update_and_delete(engine: Engine) -> None:
    _append_n(engine, 2)
    for sql in ("UPDATE audit_log SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            _raw(engine, sql)
    assert _verify(engine).ok


def test_edited_record_is_named(engine: Engine) -> None:
    _append_n(engine, 8)
    _allow_tampering(engine)
    _raw(engine, "UPDATE audit_log SET details = :d WHERE seq = 5", d='{"i":999}')
    report = _verify(engine)
    assert not report.ok and report.first_bad_seq == 5 and report.records == 4
    assert "does not match its hash" in (report.reason or "")


@pytest.mark.parametrize("column", ["actor", "action", "target_id", "tenant"])
def test_any_field_edit_is_detected(engine: Engine, column: str) -> None:
    _append_n(engine, 4)
    _allow_tampering(engine)
    _raw(engine, f"UPDATE audit_log SET {column} = 'forged' WHERE seq = 2")
    assert _verify(engine).first_bad_seq == 2


def test_edit_with_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    _append_n(engine, 6)
    _allow_tampering(engine)
    with transaction(session_factory(engine)) as session:
        rec = session.get(AuditRecord, 3)
        assert rec is not None
        forged = audit.record_hash(
            seq=rec.seq, at=rec.at, actor="forger", tenant=rec.tenant, action=rec.action,
            target_type=rec.target_type, target_id=rec.target_id, details=rec.details,
            prev_hash=rec.prev_hash,
        )  # fmt: skip
    _raw(engine, "UPDATE audit_log SET actor = 'forger', hash = :h WHERE seq = 3", h=forged)
    report = _verify(engine)
    assert report.first_bad_seq == 4 and "prev_hash" in (report.reason or "")


def test_deleted_middle_record_is_named(engine: Engine) -> None:
    _append_n(engine, 8)
    _allow_tampering(engine)
    _raw(engine, "DELETE FROM audit_log WHERE seq = 4")
    report = _verify(engine)
    assert not report.ok and report.first_bad_seq == 4
    assert "record 4 is missing" in (report.reason or "")


def test_deleted_tail_is_detected(engine: Engine) -> None:
    _append_n(engine, 8)
    _allow_tampering(engine)
    _raw(engine, "DELETE FROM audit_log WHERE seq >= 7")
    report = _verify(engine)
    assert not report.ok and report.first_bad_seq == 7 and report.records == 6


def test_reordered_records_are_detected(engine: Engine) -> None:
    _append_n(engine, 6)
    _allow_tampering(engine)
    _raw(engine, "UPDATE audit_log SET seq = 100 WHERE seq = 3")
    _raw(engine, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    _raw(engine, "UPDATE audit_log SET seq = 4 WHERE seq = 100")
    report = _verify(engine)
    assert not report.ok and report.first_bad_seq == 3


def test_verify_pages_through_batches(engine: Engine) -> None:
    _append_n(engine, 25)
    with transaction(session_factory(engine)) as session:
        assert audit.verify(session, batch=4).records == 25
    _allow_tampering(engine)
    _raw(engine, "DELETE FROM audit_log WHERE seq = 13")
    with transaction(session_factory(engine)) as session:
        assert audit.verify(session, batch=4).first_bad_seq == 13


def test_append_rolls_back_with_the_callers_transaction(engine: Engine) -> None:
    _append_n(engine, 2)
    with pytest.raises(RuntimeError), transaction(session_factory(engine)) as session:
        audit.append(session, actor="cli", action="bank.delete")
        raise RuntimeError("caller failed")
    _append_n(engine, 1, start=2)
    report = _verify(engine)
    assert report.ok and report.records == 3


def test_concurrent_appenders_never_fork_the_chain(engine: Engine) -> None:
    threads, per_thread = 4, 15
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            factory = session_factory(engine)
            for i in range(per_thread):
                with transaction(factory) as session:
                    audit.append(session, actor=f"t{n}", action="match", details={"i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    report = _verify(engine)
    assert report.ok and report.records == threads * per_thread


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(details=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_any_json_details_round_trip_through_the_database(
    engine: Engine, details: dict[str, Any]
) -> None:
    with transaction(session_factory(engine)) as session:
        audit.append(session, actor="cli", action="prop", details=details)
    assert _verify(engine).ok


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` in-process, through the console script's ``main``."""
    return run_tipline(args, env=dict(os.environ, TIPLINE_DATABASE_URL=url))


def test_cli_verify_and_show(engine: Engine, db_url: str) -> None:
    _append_n(engine, 5)
    ok = _cli(db_url, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "audit log OK: 5 records" in ok.stdout
    shown = _cli(db_url, "audit", "show", "--limit", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["seq"] for r in lines] == [4, 5]
    _allow_tampering(engine)
    _raw(engine, "DELETE FROM audit_log WHERE seq = 2")
    bad = _cli(db_url, "audit", "verify")
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken at seq 2" in lines[0]


def test_verify_while_others_append(engine: Engine) -> None:
    """Concurrent appends (committed between verify's queries) never read as damage."""
    _append_n(engine, 3)
    stop = threading.Event()
    # the writer appends up to 10 records per verify, while it runs (free-running, it
    # appended as fast as a loaded machine let it: thousands of records, each verify
    # slower than the last)
    allowed = threading.Semaphore(0)

    def writer() -> None:
        factory = session_factory(engine)
        while not stop.is_set():
            if allowed.acquire(timeout=0.05):
                with transaction(factory) as session:
                    audit.append(session, actor="w", action="match")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reports = []
        for _ in range(15):
            allowed.release(10)
            with session_factory(engine)() as session:
                reports.append(audit.verify(session, batch=2))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert all(r.ok for r in reports), [r.describe() for r in reports if not r.ok]
    assert reports[-1].records >= reports[0].records >= 3


def test_missing_head_row_is_reported(engine: Engine) -> None:
    _append_n(engine, 2)
    _raw(engine, "DELETE FROM audit_head")
    report = _verify(engine)
    assert not report.ok and "head row is missing" in (report.reason or "")
    with pytest.raises(AuditChainError), transaction(session_factory(engine)) as session:
        audit.append(session, actor="cli", action="x")


def test_recent_filters_by_tenant(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        for i, tenant in enumerate(["a", "b", None, "a"]):
            audit.append(session, actor="k", action="match", tenant=tenant, details={"i": i})
    with transaction(session_factory(engine)) as session:
        assert [r.seq for r in audit.recent(session, limit=10)] == [1, 2, 3, 4]
        assert [r.seq for r in audit.recent(session, limit=10, tenant="a")] == [1, 4]
        assert [r.seq for r in audit.recent(session, limit=1, tenant="a")] == [4]
        with pytest.raises(InputError):
            audit.recent(session, limit=0)


def test_service_migration_downgrades_and_upgrades_again(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    from tipline.store.db import _MIGRATIONS

    _append_n(engine, 2)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "service@base")
    assert "audit_log" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert _verify(engine).ok and _verify(engine).records == 0
    _append_n(engine, 1)
    assert _verify(engine).records == 1


def test_appends_from_several_processes(engine: Engine, db_url: str) -> None:
    """Real processes (``tipline apikey create``) append at the same time; one chain."""
    env = dict(os.environ, TIPLINE_DATABASE_URL=db_url)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tipline.cli.main",
                "apikey",
                "create",
                "--name",
                f"p{i}",
                "--role",
                "hasher",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)  # two are enough to race (each is ~1 s of CPU of imports)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=HANG_SECONDS)
        assert proc.returncode == 0, err.decode()
    report = _verify(engine)
    assert report.ok and report.records == 2


def test_append_many_links_like_single_appends(engine: Engine) -> None:
    items = [audit.pending(actor="cli", action="many", details={"i": i}) for i in range(5)]
    with transaction(session_factory(engine)) as session:
        first = audit.append_many(session, items[:2])
        audit.append(session, actor="cli", action="one")
        rest = audit.append_many(session, items[2:])
        assert audit.append_many(session, []) == []
    assert [r.seq for r in first + rest] == [1, 2, 4, 5, 6]
    report = _verify(engine)
    assert report.ok and report.records == 6 and report.head_hash == rest[-1].hash
    with transaction(session_factory(engine)) as session:
        rows = session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
    assert [json.loads(r.details).get("i") for r in rows] == [0, 1, None, 2, 3, 4]
    assert [r.hash for r in rows] == [r.hash for r in (*first, rows[2], *rest)]


def test_batcher_commits_every_acknowledged_record(engine: Engine) -> None:
    batcher = audit.Batcher(engine)
    threads, per_thread = 6, 30
    futures: dict[tuple[int, int], Any] = {}
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(per_thread):
            f = batcher.submit(actor=f"t{n}", action="media", details={"n": n, "i": i})
            with lock:
                futures[(n, i)] = f

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seqs = {key: f.result(timeout=HANG_SECONDS) for key, f in futures.items()}
    batcher.close()
    assert sorted(seqs.values()) == list(range(1, threads * per_thread + 1))
    report = _verify(engine)
    assert report.ok and report.records == threads * per_thread
    with transaction(session_factory(engine)) as session:
        rows = session.execute(select(AuditRecord)).scalars().all()
    stored = {(r.seq): (r.actor, json.loads(r.details)) for r in rows}
    for (n, i), seq in seqs.items():
        assert stored[seq] == (f"t{n}", {"n": n, "i": i})
    with pytest.raises(RuntimeError):
        batcher.submit(actor="cli", action="late")


def test_batcher_close_writes_what_is_queued(engine: Engine) -> None:
    batcher = audit.Batcher(engine)
    futures = [batcher.submit(actor="cli", action="q", details={"i": i}) for i in range(50)]
    batcher.close()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(1, 51))
    assert _verify(engine).records == 50


def test_batcher_failure_reaches_every_waiter(engine: Engine) -> None:
    _append_n(engine, 1)
    _raw(engine, "DELETE FROM audit_head")
    batcher = audit.Batcher(engine)
    futures = [batcher.submit(actor="cli", action="x") for _ in range(3)]
    for f in futures:
        with pytest.raises(AuditChainError):
            f.result(timeout=HANG_SECONDS)
    batcher.close()
    with pytest.raises(InputError):
        audit.Batcher(engine).submit(actor="cli", action="")


def _forge_after(engine: Engine, seq: int, prev_hash: str) -> None:
    """Insert a well-formed record (correct hash, linked to ``prev_hash``) at ``seq``
    without moving the chain head: inserts pass the append-only triggers."""
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    row = {
        "seq": seq, "at": at, "actor": "forger", "tenant": None, "action": "bank.create",
        "target_type": "bank", "target_id": "forged", "details": "{}", "prev_hash": prev_hash,
    }  # fmt: skip
    row["hash"] = audit.record_hash(**row)
    with transaction(session_factory(engine)) as session:
        session.add(AuditRecord(**row))


@pytest.mark.parametrize("where", ["after_head", "before_first"])
def test_rows_outside_the_chain_fail_verify(engine: Engine, db_url: str, where: str) -> None:
    """A record inserted beyond the chain head (or before seq 1) is listed by
    ``audit show``; ``verify`` must report it instead of stopping at the head."""
    _append_n(engine, 3)
    with session_factory(engine)() as session:
        last = session.execute(select(AuditRecord).where(AuditRecord.seq == 3)).scalar_one()
    bad_seq = 4 if where == "after_head" else 0
    _forge_after(engine, bad_seq, last.hash if bad_seq == 4 else GENESIS_HASH)
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad_seq == bad_seq
    assert "chain head" in (report.reason or "") or "before" in (report.reason or "")
    assert report.records == 3
    cli = _cli(db_url, "audit", "verify")
    assert cli.returncode != 0 and f"broken at seq {bad_seq}" in cli.stderr


def test_deferred_records_follow_their_transaction_and_savepoints(engine: Engine) -> None:
    sessions = sessionmaker(engine)
    with sessions() as session, session.begin():
        audit.defer(session, actor="t", action="outer-1")
        with contextlib.suppress(ValueError), session.begin_nested():
            audit.defer(session, actor="t", action="savepoint-rolled-back")
            raise ValueError
        with session.begin_nested():
            audit.defer(session, actor="t", action="savepoint-released")
        audit.defer(session, actor="t", action="outer-2")
    with contextlib.suppress(KeyError), sessions() as session, session.begin():
        audit.defer(session, actor="t", action="transaction-rolled-back")
        raise KeyError
    with sessions() as session:
        actions = session.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)).all()
        assert actions == ["outer-1", "savepoint-released", "outer-2"]
        assert audit.verify(session).ok


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12
)  # control characters, quotes, backslashes, non-ASCII; no lone surrogates
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actor=_TEXT,
    action=_TEXT.filter(bool),
    tenant=st.none() | _TEXT,
    target=st.none() | st.tuples(_TEXT, _TEXT),
    details=st.dictionaries(_TEXT, _JSON, max_size=4),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    last_seq=st.integers(min_value=0, max_value=2**40),
)
def test_appended_hashes_equal_the_reference_record_hash(
    actor: str,
    action: str,
    tenant: str | None,
    target: tuple[str, str] | None,
    details: dict[str, Any],
    prev: str,
    last_seq: int,
) -> None:
    """The append path writes the canonical document directly; its hashes are exactly
    :func:`audit.record_hash` of the stored fields (the definition verify uses)."""
    items = [
        audit.pending(actor=actor, action=action, tenant=tenant, target=target, details=details),
        audit.pending(actor="k", action="again", details={"secret": 1, "n": [details]}),
    ]
    rows = audit._chain(items, last_seq, prev)
    for row in rows:
        fields = {key: value for key, value in row.items() if key != "hash"}
        assert row["hash"] == audit.record_hash(**fields)
    assert rows[0]["prev_hash"] == prev and rows[1]["prev_hash"] == rows[0]["hash"]
    assert [row["seq"] for row in rows] == [last_seq + 1, last_seq + 2]


def test_a_non_text_target_id_is_stored_as_text_and_verifies(engine: Engine) -> None:
    with transaction(session_factory(engine)) as session:
        record = audit.append(session, actor="cli", action="x", target=("report", 7))  # type: ignore[arg-type]
    assert record.target_id == "7"
    assert _verify(engine).ok


def test_append_many_beyond_one_insert_statement_links_and_verifies(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes at most _PG_ROWS_PER_INSERT rows per statement (3 here)."""
    monkeypatch.setattr(audit, "_PG_ROWS_PER_INSERT", 3)
    items = [audit.pending(actor="cli", action="many", details={"i": i}) for i in range(7)]
    with transaction(session_factory(engine)) as session:
        session.execute(text("SELECT 1"))  # a transaction already open
        first = audit.append_many(session, items)
    with transaction(session_factory(engine)) as session:  # the first statement
        second = audit.append_many(session, items[:4])
    batcher = audit.Batcher(engine)
    try:
        seqs = [batcher.submit(actor="b", action="n", details={"i": i}) for i in range(5)]
        assert sorted(f.result(timeout=120) for f in seqs) == [12, 13, 14, 15, 16]
    finally:
        batcher.close()
    assert [r.seq for r in first + second] == list(range(1, 12))
    report = _verify(engine)
    assert report.ok and report.records == 16


_texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    actor=_texts.filter(bool),
    action=_texts.filter(bool),
    tenant=st.none() | _texts,
    target=st.none() | st.tuples(_texts, _texts),
    details=st.dictionaries(_texts, json_values, max_size=4),
)
def test_one_record_appends_in_one_statement_and_verifies(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    actor: str,
    action: str,
    tenant: str | None,
    target: tuple[str, str] | None,
    details: dict[str, Any],
) -> None:
    """On PostgreSQL one record goes through tipline_audit_append_one (the database
    hashes the canonical document the client split around prev_hash and seq): in an
    open transaction, as a transaction's first statement (pipelined) and from the
    Batcher (committed in the same pipeline); what it stores verifies and equals
    record_hash of the stored fields, for any text in any field."""
    if engine.dialect.name == "postgresql":

        def refuse(*a: Any, **k: Any) -> list[dict[str, Any]]:
            raise AssertionError("one record took the two-statement append")

        monkeypatch.setattr(audit, "_pg_append_two_trips", refuse)
    kwargs: dict[str, Any] = dict(
        actor=actor, action=action, tenant=tenant, target=target, details=details
    )
    with transaction(session_factory(engine)) as session:
        session.execute(text("SELECT 1"))
        opened = audit.append(session, **kwargs)
    with transaction(session_factory(engine)) as session:
        first = audit.append(session, **kwargs)
    batcher = audit.Batcher(engine)
    try:
        seq = batcher.submit(**kwargs).result(timeout=HANG_SECONDS)
    finally:
        batcher.close()
    assert first.seq == opened.seq + 1 and seq == first.seq + 1
    assert first.prev_hash == opened.hash
    for record in (opened, first):
        fields = {k: getattr(record, k) for k in record.__slots__ if k != "hash"}
        assert record.hash == audit.record_hash(**fields)
    with transaction(session_factory(engine)) as session:
        stored = session.scalars(
            select(AuditRecord).where(AuditRecord.seq >= opened.seq).order_by(AuditRecord.seq)
        ).all()
        assert [r.hash for r in stored[:2]] == [opened.hash, first.hash]
    assert _verify(engine).ok
