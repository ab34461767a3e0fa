"""The audit log: append-only records, each hash-chained to the one before.

Every record's ``hash`` is the SHA-256 (hex) of a canonical JSON document holding all
its fields and ``prev_hash``. Appenders serialize on the single ``audit_head`` row (a row
lock on PostgreSQL, the write lock on SQLite), so concurrent processes never fork the
chain. :func:`append` writes one record in the caller's transaction; :class:`Batcher`
group-commits records that need no other write (many per head lock and commit).
:func:`verify` walks the chain and names the first record that does not fit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import queue
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Engine, Table, bindparam, func, insert, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.errors import AuditChainError, InputError
from tipline.services.group_commit import next_batch
from tipline.store.audit import GENESIS_HASH, AuditHead, AuditRecord
from tipline.store.base import utcnow
from tipline.store.session_hooks import SessionHooks

#: actor name for changes made through the command line
CLI_ACTOR = "cli"

#: detail keys whose values are replaced by :data:`REDACTED` (matched case-insensitively
#: as substrings), so secrets never land in the permanent log
SENSITIVE_KEYS = ("secret", "password", "token", "api_key", "apikey", "authorization")
REDACTED = "[redacted]"
_SENSITIVE = re.compile("|".join(re.escape(word) for word in SENSITIVE_KEYS))
#: JSON text of one string, exactly as :func:`canonical_json` writes it
_json_string = json.encoder.encode_basestring


class ActorLike(Protocol):
    """Anything with an API key id and a tenant (e.g. :class:`tipline.services.auth.Principal`)."""

    @property
    def key_id(self) -> str: ...

    @property
    def tenant(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Target:
    """What an audited action touched: a type (``bank``, ``entry``, ``media``) and an id."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Result of :func:`verify`."""

    ok: bool
    #: records checked
    records: int
    #: seq of the first bad record (or of the missing one), None when ok
    first_bad_seq: int | None = None
    reason: str | None = None
    #: hash of the last good record (anchor it elsewhere to detect a rewritten tail)
    head_hash: str = GENESIS_HASH

    def describe(self) -> str:
        """One line for humans."""
        if self.ok:
            return f"audit log OK: {self.records} records, head {self.head_hash}"
        return f"audit log broken at seq {self.first_bad_seq}: {self.reason}"


def redact(details: Any) -> Any:
    """A copy of ``details`` with the values of secret-looking keys replaced."""
    if isinstance(details, Mapping):
        out: dict[str, Any] = {}
        for key, value in details.items():
            name = str(key)
            if _SENSITIVE.search(name.lower()):
                out[name] = REDACTED
            else:
                out[name] = redact(value)
        return out
    if isinstance(details, list | tuple):
        return [redact(value) for value in details]
    return details


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the same bytes for the same value."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"audit details are not plain JSON: {exc}") from exc


def _format_at(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    tenant: str | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    details: str,
    prev_hash: str,
) -> str:
    """SHA-256 (64 hex digits) of the canonical JSON of one record plus ``prev_hash``."""
    document = {
        "seq": seq,
        "at": _format_at(at),
        "actor": actor,
        "tenant": tenant,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "details": json.loads(details),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def _appended_hash(
    *,
    seq: int,
    at: str,
    actor: str,
    tenant: str | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    details: str,
    prev_hash: str,
) -> str:
    """:func:`record_hash` of a record being appended, whose ``details`` is already
    :func:`canonical_json` text (from :func:`pending`) and ``at`` already formatted:
    the canonical document is written directly, keys in sorted order, with ``details``
    spliced in as it is instead of parsed and written again. The same bytes as
    :func:`record_hash` (tested against it); :func:`verify` keeps using that one, so a
    stored record is always checked by the reference definition."""
    text = (
        f'{{"action":{_json_string(action)},"actor":{_json_string(actor)},'
        f'"at":"{at}","details":{details},"prev_hash":{_json_string(prev_hash)},'
        f'"seq":{int(seq)},"target_id":{_opt(target_id)},'
        f'"target_type":{_opt(target_type)},"tenant":{_opt(tenant)}}}'
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _opt(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def _hash_of(record: Any) -> str:
    return record_hash(
        seq=record.seq,
        at=record.at,
        actor=record.actor,
        tenant=record.tenant,
        action=record.action,
        target_type=record.target_type,
        target_id=record.target_id,
        details=record.details,
        prev_hash=record.prev_hash,
    )


@dataclass(frozen=True, slots=True)
class Pending:
    """A record waiting for its place in the chain (:func:`append_many`, :class:`Batcher`)."""

    actor: str
    tenant: str | None
    action: str
    target: Target | None
    #: canonical JSON of the redacted details (made by :func:`pending`; the chain
    #: hashes this text as it is)
    details: str


@dataclass(frozen=True, slots=True)
class Appended:
    """A record just appended (the stored row's fields)."""

    seq: int
    at: datetime
    actor: str
    tenant: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: str
    prev_hash: str
    hash: str


def pending(
    *,
    actor: str | ActorLike,
    action: str,
    target: Target | tuple[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    tenant: str | None = None,
) -> Pending:
    """Check and normalize one record to append (InputError on an empty action or details
    that are not plain JSON); secret-looking detail keys are redacted.

    ``actor`` is an API key id, :data:`CLI_ACTOR`, or a principal (whose tenant is used
    when ``tenant`` is not given).
    """
    if not isinstance(actor, str):
        tenant = tenant if tenant is not None else actor.tenant
        actor = actor.key_id
    if not action:
        raise InputError("audit action must not be empty")
    if isinstance(target, tuple):
        target = Target(*target)
    if target is not None and not (isinstance(target.type, str) and isinstance(target.id, str)):
        target = Target(str(target.type), str(target.id))  # stored (and read back) as text
    details_json = canonical_json(redact(dict(details or {})))
    return Pending(actor, tenant, action, target, details_json)


def append_many(session: Session, items: Sequence[Pending]) -> list[Appended]:
    """Append ``items`` in order inside the caller's transaction; one head lock for all.

    Each record links to the one before it exactly as single appends do (a chain built
    by one call verifies like any other). The chain head stays locked from here until
    the caller commits: call this as the last statement before the commit.
    """
    if not items:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        rows = _pg_append(connection.connection.driver_connection, items, commit=False)
        return [Appended(**row) for row in rows]
    # UPDATE first: it takes the row lock (PostgreSQL) or the database write lock (SQLite)
    # before anything is read, so two appenders can never read the same head. RETURNING
    # gives the new last seq and the previous record's hash in the same round trip.
    lock, add, move = _statements()
    head = session.execute(lock, {"n": len(items)}).first()
    if head is None:
        raise AuditChainError("audit chain head is missing; run `tipline audit verify`")
    rows = _chain(items, int(head.seq) - len(items), str(head.hash))
    # Core statements (no unit of work): the head stays locked for as short as possible.
    session.execute(add, rows)
    session.execute(move, {"new_hash": rows[-1]["hash"]})
    return [Appended(**row) for row in rows]


@functools.cache
def _statements() -> tuple[Any, Any, Any]:
    """(lock the head and move its seq by ``n``, insert records, set the head's hash),
    built once (Core, bound parameters) so appends reuse the compiled SQL."""
    head = cast(Table, AuditHead.__table__)
    lock = (
        update(head)
        .where(head.c.id == 1)
        .values(seq=head.c.seq + bindparam("n"))
        .returning(head.c.seq, head.c.hash)
    )
    add = insert(cast(Table, AuditRecord.__table__))
    move = update(head).where(head.c.id == 1).values(hash=bindparam("new_hash"))
    return lock, add, move


_DEFERRED = "tipline.audit.deferred"


def defer(
    session: Session,
    *,
    actor: str | ActorLike,
    action: str,
    target: Target | tuple[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    tenant: str | None = None,
) -> None:
    """Queue one record to be appended when the caller's transaction commits.

    Checked now (InputError). Every record a transaction deferred is appended in one
    :func:`append_many` after the transaction's other writes are flushed, so the chain
    head is locked only for the commit itself (and once, however many records): a
    transaction that does slow work (encryption, file syncs, many rows) between its
    audited actions no longer holds every other appender up. A rollback drops the
    queued records with everything else.
    """
    defer_pending(
        session,
        pending(actor=actor, action=action, target=target, details=details, tenant=tenant),
    )


def defer_pending(session: Session, item: Pending) -> None:
    """:func:`defer` for a record already checked by :func:`pending`."""
    _HOOKS.ensure()
    queued: list[tuple[Any, Pending]] | None = session.info.get(_DEFERRED)
    if queued is None:
        queued = session.info[_DEFERRED] = []
    # tagged with the savepoint it was deferred in: rolling that back drops it
    queued.append((session.get_nested_transaction(), item))


def _append_deferred(session: Session) -> None:
    # runs at COMMIT, and at the release of a savepoint (its records join the
    # enclosing transaction then, as immediate appends would have)
    queued = session.info.pop(_DEFERRED, None)
    if queued:
        session.flush()  # the other writes first: the head is locked from here to COMMIT
        append_many(session, [item for _, item in queued])


def _drop_deferred(session: Session, previous_transaction: Any) -> None:
    queued = session.info.get(_DEFERRED)
    if not queued:
        return
    if not previous_transaction.nested:
        session.info.pop(_DEFERRED, None)
        return
    session.info[_DEFERRED] = [(tx, item) for tx, item in queued if tx is not previous_transaction]


#: runs at every commit and rollback in this process: the records deferred by
#: :func:`defer` are appended at COMMIT, and dropped with their (sub)transaction
_HOOKS = SessionHooks(("before_commit", _append_deferred), ("after_soft_rollback", _drop_deferred))


def append(
    session: Session,
    *,
    actor: str | ActorLike,
    action: str,
    target: Target | tuple[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    tenant: str | None = None,
) -> Appended:
    """Append one record inside the caller's transaction and return it.

    The chain head stays locked from here until the caller commits, and appends from all
    processes serialize on it: call this as the last statement before the commit.

    ``actor`` is an API key id, :data:`CLI_ACTOR`, or a principal (whose tenant is used
    when ``tenant`` is not given). Secret-looking detail keys are redacted.
    """
    item = pending(actor=actor, action=action, target=target, details=details, tenant=tenant)
    return append_many(session, [item])[0]


#: psycopg's TransactionStatus.IDLE (no transaction open)
_PG_IDLE = 0
_PG_HEAD = "UPDATE audit_head SET seq = seq + %s WHERE id = 1 RETURNING seq, hash"
_PG_COLUMNS = (
    "seq",
    "at",
    "actor",
    "tenant",
    "action",
    "target_type",
    "target_id",
    "details",
    "prev_hash",
    "hash",
)
_PG_INSERT = f"INSERT INTO audit_log ({', '.join(_PG_COLUMNS)}) VALUES "
_PG_ROW = "(" + ", ".join(["%s"] * len(_PG_COLUMNS)) + ")"
_PG_HEAD_HASH = "UPDATE audit_head SET hash = %s WHERE id = 1"
#: rows per INSERT (PostgreSQL takes at most 65535 parameters in one statement)
_PG_ROWS_PER_INSERT = 1000


@functools.lru_cache(maxsize=64)
def _pg_write_sql(rows: int, *, with_head: bool) -> str:
    """One statement inserting ``rows`` records and, ``with_head``, moving the head's
    hash (the last parameter) in the same statement."""
    insert_sql = _PG_INSERT + ", ".join([_PG_ROW] * rows)
    if not with_head:
        return insert_sql
    return f"WITH added AS ({insert_sql}) {_PG_HEAD_HASH}"


def _pg_writes(rows: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The statements (SQL, parameters) writing ``rows`` and the new head hash: one
    statement for up to :data:`_PG_ROWS_PER_INSERT` rows."""
    out: list[tuple[str, list[Any]]] = []
    for start in range(0, len(rows), _PG_ROWS_PER_INSERT):
        chunk = rows[start : start + _PG_ROWS_PER_INSERT]
        last = start + _PG_ROWS_PER_INSERT >= len(rows)
        params = [row[column] for row in chunk for column in _PG_COLUMNS]
        if last:
            params.append(rows[-1]["hash"])
        out.append((_pg_write_sql(len(chunk), with_head=last), params))
    return out


def _chain(items: Sequence[Pending], last_seq: int, prev_hash: str) -> list[dict[str, Any]]:
    """Rows for ``items`` linked after the record (``last_seq``, ``prev_hash``)."""
    seq = last_seq
    at = utcnow()
    at_text = _format_at(at)
    rows: list[dict[str, Any]] = []
    for item in items:
        seq += 1
        target = item.target
        target_type = target.type if target is not None else None
        target_id = target.id if target is not None else None
        digest = _appended_hash(
            seq=seq,
            at=at_text,
            actor=item.actor,
            tenant=item.tenant,
            action=item.action,
            target_type=target_type,
            target_id=target_id,
            details=item.details,
            prev_hash=prev_hash,
        )
        rows.append(_row(item, at, seq, prev_hash, digest))
        prev_hash = digest
    return rows


def _row(item: Pending, at: datetime, seq: int, prev_hash: str, digest: str) -> dict[str, Any]:
    """The audit table's row of ``item`` once chained."""
    target = item.target
    return {
        "seq": seq,
        "at": at,
        "actor": item.actor,
        "tenant": item.tenant,
        "action": item.action,
        "target_type": target.type if target is not None else None,
        "target_id": target.id if target is not None else None,
        "details": item.details,
        "prev_hash": prev_hash,
        "hash": digest,
    }


def _pg_append(conn: Any, items: Sequence[Pending], *, commit: bool) -> list[dict[str, Any]]:
    """Append ``items`` on a psycopg connection: one record in one round trip (the
    function ``tipline_audit_append_one`` of migration 0042 locks the head, chains and
    inserts the row and moves the head), several in two (:func:`_pg_append_two_trips`).
    With no transaction open, or with ``commit``, in pipeline mode, so BEGIN and COMMIT
    go with them; inside an open transaction as plain statements. The chain head is
    held for as short a time as possible. On a server whose encoding is not UTF-8 (the
    function hashes the server's text) every append takes two round trips."""
    if len(items) != 1 or not _pg_utf8(conn):
        return _pg_append_two_trips(conn, items, commit=commit)
    at = utcnow()
    params = _pg_function_params(items[0], at)
    try:
        if commit or conn.info.transaction_status == _PG_IDLE:
            with conn.pipeline(), conn.cursor() as cur:
                cur.execute(_PG_FUNCTION, params)
                if commit:
                    conn.commit()
                found = cur.fetchall()
        else:
            with conn.cursor() as cur:
                cur.execute(_PG_FUNCTION, params)
                found = cur.fetchall()
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == _PG_NO_HEAD:
            raise AuditChainError(
                "audit chain head is missing; run `tipline audit verify`"
            ) from exc
        raise
    return _pg_function_rows(items, at, found)


#: SQLSTATE the function raises when the head row is missing
_PG_NO_HEAD = "P0002"
_PG_FUNCTION = (
    "SELECT out_seq, out_prev_hash, out_hash"
    " FROM tipline_audit_append_one(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _pg_utf8(conn: Any) -> bool:
    return str(conn.info.parameter_status("server_encoding") or "").upper() in ("UTF8", "UTF-8")


#: the arguments of ``tipline_audit_append_one`` in order, as :func:`pg_append_call`
#: binds them (``audit_<name>``); the target id is the statement's own column
_PG_ARGS = ("at", "head", "tail", "actor", "tenant", "action", "target_type", "target_id")


def pg_one_trip(connection: Any) -> bool:
    """Whether ``connection`` (SQLAlchemy) can append with ``tipline_audit_append_one``
    (migration 0042): PostgreSQL with UTF-8 text (the function hashes the server's)."""
    return connection.dialect.name == "postgresql" and _pg_utf8(
        connection.connection.driver_connection
    )


def pg_append_call(target_id: Any) -> Any:
    """PostgreSQL: a call of ``tipline_audit_append_one`` for a statement's FROM list
    (``LATERAL``: it runs once for each row of what it is joined to, and not at all
    when that has none), appending the record :func:`pg_append_params` binds, whose
    target id is ``target_id``, a column of the joined rows (the same id the record
    names). Its columns: ``out_seq``, ``out_prev_hash``, ``out_hash``. As :func:`append`,
    it locks the chain head until the caller commits: join it to the transaction's last
    write."""
    # untyped: psycopg sends the aware time as timestamptz, the texts as unknown
    args: list[Any] = [bindparam(f"audit_{name}") for name in _PG_ARGS[:-1]]
    return (
        func.tipline_audit_append_one(*args, target_id, bindparam("audit_details"))
        .table_valued("out_seq", "out_prev_hash", "out_hash")
        .lateral("appended")
    )


def pg_append_params(item: Pending, at: datetime) -> dict[str, Any]:
    """The parameters of :func:`pg_append_call` for ``item`` appended at ``at``."""
    values = _pg_function_params(item, at)
    params = {f"audit_{name}": value for name, value in zip(_PG_ARGS, values, strict=False)}
    del params["audit_target_id"]
    params["audit_details"] = values[-1]
    return params


def _pg_function_params(item: Pending, at: datetime) -> tuple[Any, ...]:
    """The arguments of ``tipline_audit_append_one``: the record's canonical document
    (:func:`_appended_hash`'s text) in two pieces, before ``prev_hash`` and after
    ``seq``, and its columns."""
    at_text = _format_at(at)
    target = item.target
    target_type = target.type if target is not None else None
    target_id = target.id if target is not None else None
    head = (
        f'{{"action":{_json_string(item.action)},"actor":{_json_string(item.actor)},'
        f'"at":"{at_text}","details":{item.details},"prev_hash":"'
    )
    tail = (
        f',"target_id":{_opt(target_id)},"target_type":{_opt(target_type)},'
        f'"tenant":{_opt(item.tenant)}}}'
    )
    return (
        at,
        head,
        tail,
        item.actor,
        item.tenant,
        item.action,
        target_type,
        target_id,
        item.details,
    )


def _pg_function_rows(
    items: Sequence[Pending], at: datetime, found: Sequence[Any]
) -> list[dict[str, Any]]:
    if len(found) != len(items):
        raise AuditChainError("audit append returned an unexpected number of records")
    return [
        _row(item, at, int(seq), str(prev_hash), str(digest))
        for item, (seq, prev_hash, digest) in zip(items, found, strict=True)
    ]


def _pg_append_two_trips(
    conn: Any, items: Sequence[Pending], *, commit: bool
) -> list[dict[str, Any]]:
    """The append without the function: lock the head (first trip), then one
    statement inserting the rows and moving the head (per 1000 rows)."""
    if commit or conn.info.transaction_status == _PG_IDLE:
        with conn.pipeline(), conn.cursor() as cur:
            rows = _pg_locked_rows(cur, items)
            for sql, params in _pg_writes(rows):
                cur.execute(sql, params)
            if commit:
                conn.commit()
        return rows
    with conn.cursor() as cur:
        rows = _pg_locked_rows(cur, items)
        for sql, params in _pg_writes(rows):
            cur.execute(sql, params)
    return rows


def _pg_locked_rows(cur: Any, items: Sequence[Pending]) -> list[dict[str, Any]]:
    """Lock the head, move its seq past ``items`` and return their chained rows."""
    cur.execute(_PG_HEAD, (len(items),))
    head = cur.fetchone()
    if head is None:
        raise AuditChainError("audit chain head is missing; run `tipline audit verify`")
    return _chain(items, int(head[0]) - len(items), str(head[1]))


def _append_many_pipelined(engine: Engine, items: Sequence[Pending]) -> list[int]:
    """:func:`append_many` in a transaction of its own on PostgreSQL (committed in the
    same pipeline). Returns the seqs."""
    pooled = engine.raw_connection()
    try:
        rows = _pg_append(pooled.driver_connection, items, commit=True)
    except BaseException:
        with contextlib.suppress(Exception):
            pooled.rollback()
        raise
    finally:
        pooled.close()
    return [int(row["seq"]) for row in rows]


class Batcher:
    """Group commit for records that need no other write in their transaction (e.g.
    media access): callers :meth:`submit` a record and wait on the returned future,
    which resolves to the record's ``seq`` only once the record is committed.

    One background thread takes everything queued while the previous transaction was
    in flight and appends it with :func:`append_many` in a single transaction, so N
    waiting requests cost one head lock and one commit instead of N. Nothing is
    acknowledged before its commit; a failed transaction fails every future in it (the
    records are not written, and the callers see the error).
    """

    def __init__(self, engine: Engine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Pending, Future[int]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(
        self,
        *,
        actor: str | ActorLike,
        action: str,
        target: Target | tuple[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        tenant: str | None = None,
    ) -> Future[int]:
        """Queue one record (checked now: InputError); the future gives its seq."""
        item = pending(actor=actor, action=action, target=target, details=details, tenant=tenant)
        future: Future[int] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("audit batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tipline-audit-batcher", daemon=True
                )
                self._thread.start()
            self._queue.put((item, future))
        return future

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = next_batch(self._queue, self._max_batch)
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[Pending, Future[int]]]) -> None:
        live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            items = [item for item, _ in live]
            if self._engine.dialect.name == "postgresql":
                seqs = _append_many_pipelined(self._engine, items)
            else:
                with self._sessions() as session, session.begin():
                    seqs = [r.seq for r in append_many(session, items)]
        except BaseException as exc:  # every waiter learns its record was not written
            for _, f in live:
                f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, f), seq in zip(live, seqs, strict=True):
            f.set_result(seq)

    def close(self) -> None:
        """Write what is queued, then stop the thread (later submits raise)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()


def verify(session: Session, *, batch: int = 5_000) -> AuditReport:
    """Walk the whole chain; report the first edited, deleted or reordered record.

    Detects: a changed field (hash mismatch), a deleted or moved record (seq gap or
    ``prev_hash`` mismatch), a deleted tail (head row ahead of the last record), and
    records outside the chain (inserted beyond the head or before seq 1). Reads
    ``batch`` records per query. The head is read first and only records up to it are
    walked, so appends running concurrently (other processes) never look like damage;
    records beyond the head count as damage only when the head, read again after
    them, is still behind them (an append moves the head in the same transaction that
    inserts its records).
    """
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    head_seq = int(head.seq) if head is not None else None
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    last_seq = 0
    while True:
        rows = session.execute(
            select(*AuditRecord.__table__.columns)
            .where(
                AuditRecord.seq > last_seq,
                AuditRecord.seq <= head_seq if head_seq is not None else true(),
            )
            .order_by(AuditRecord.seq)
            .limit(batch)
        ).all()
        if not rows:
            break
        for record in rows:
            if record.seq != expected_seq:
                if record.seq > expected_seq:
                    missing = (
                        f"record {expected_seq} is missing"
                        if record.seq == expected_seq + 1
                        else f"records {expected_seq}..{record.seq - 1} are missing"
                    )
                    return AuditReport(False, count, expected_seq, missing, prev_hash)
                return AuditReport(False, count, record.seq, "sequence out of order", prev_hash)
            if record.prev_hash != prev_hash:
                return AuditReport(
                    False,
                    count,
                    record.seq,
                    "prev_hash does not match the previous record",
                    prev_hash,
                )
            if _hash_of(record) != record.hash:
                return AuditReport(
                    False, count, record.seq, "record content does not match its hash", prev_hash
                )
            prev_hash = record.hash
            expected_seq += 1
            count += 1
            last_seq = record.seq
    if head is None or head_seq is None:
        return AuditReport(False, count, count, "the chain head row is missing", prev_hash)
    if head_seq > count:
        missing = f"records {count + 1}..{head_seq} are missing (chain head is at seq {head_seq})"
        return AuditReport(False, count, count + 1, missing, prev_hash)
    if str(head.hash) != prev_hash:
        return AuditReport(
            False, count, count, "chain head does not match the last record", prev_hash
        )
    outside = _outside_chain(session, head_seq)
    if outside is not None:
        return AuditReport(False, count, outside[0], outside[1], prev_hash)
    return AuditReport(True, count, None, None, prev_hash)


def _outside_chain(session: Session, head_seq: int) -> tuple[int, str] | None:
    """(seq, reason) of the first record outside the chain 1..head, or None.

    The extremes are read before the head is read again: honest appends commit their
    records and the head together, so a record beyond the re-read head was never
    appended through the chain.
    """
    low, high = session.execute(select(func.min(AuditRecord.seq), func.max(AuditRecord.seq))).one()
    if low is not None and int(low) < 1:
        return int(low), f"record {int(low)} lies before the first seq (1)"
    if high is None or int(high) <= head_seq:
        return None
    now = session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar()
    if now is not None and int(high) <= int(now):
        return None  # appended since the walk began
    first = session.execute(
        select(func.min(AuditRecord.seq)).where(
            AuditRecord.seq > (int(now) if now is not None else head_seq)
        )
    ).scalar_one()
    return int(first), f"records beyond the chain head (seq {now}) that no append made"


def recent(session: Session, *, limit: int = 20, tenant: str | None = None) -> list[AuditRecord]:
    """The newest ``limit`` records, oldest first; only ``tenant``'s when given."""
    if limit < 1:
        raise InputError("limit must be at least 1")
    query = select(AuditRecord)
    if tenant is not None:
        query = query.where(AuditRecord.tenant == tenant)
    rows = session.execute(query.order_by(AuditRecord.seq.desc()).limit(limit)).scalars().all()
    return list(reversed(rows))


def record_as_dict(record: AuditRecord) -> dict[str, Any]:
    """A JSON-ready view of one record."""
    return {
        "seq": record.seq,
        "at": _format_at(record.at),
        "actor": record.actor,
        "tenant": record.tenant,
        "action": record.action,
        "target_type": record.target_type,
        "target_id": record.target_id,
        "details": json.loads(record.details),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
