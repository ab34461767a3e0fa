"""Resumable batch scans: media in, signals and matches out, everything recorded.

The unit of work is a *batch*: a worker hashes the batch's files, matches their
signals, and commits the item rows together with the batch's checkpoint row in one
transaction (matched items fire the bank's action hook in that same transaction).
The coordinator only enumerates sources, hands out batches and shows progress. So:

* killing the coordinator (``kill -9``) loses nothing: a worker that is busy finishes
  and commits its batch, then sees its pipe closed and exits; a resume waits for those
  workers and skips every recorded item - no file is hashed twice;
* a worker killed itself loses at most its one uncommitted batch, re-hashed on resume.

Workers are local processes (:func:`run_scan` with ``jobs``) or Ray tasks
(:mod:`tipline.services.scan_ray`); both call :func:`scan_batch`, so results and
checkpoints are the same. Messages between processes are JSON, never pickle.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from tipline.banks.model import Match
from tipline.config import get_settings
from tipline.errors import ConflictError, InputError, MediaError, TiplineError
from tipline.services.scan_sources import ScanItem, expand_sources
from tipline.signals.base import Signal
from tipline.signals.hashing import DecodeMode, HashOptions, HashResult, hash_path
from tipline.store import scans as store
from tipline.store.db import make_engine, session_factory, transaction, upgrade

#: When set, every worker appends one line (the path) per hashing call to this file;
#: tests use it to prove that no file is hashed twice across a crash and a resume.
HASH_COUNTER_ENV = "TIPLINE_SCAN_HASH_COUNTER"
#: Fault injection for tests: a worker exits abruptly (as a decoder crash would) when
#: about to hash a path whose file name equals this value.
CRASH_ON_ENV = "TIPLINE_SCAN_TEST_CRASH_ON"
#: Items per batch (one transaction, one checkpoint) unless the caller chooses.
DEFAULT_BATCH_SIZE = 32
#: Seconds a resume waits for the previous run's workers to finish their batch.
RESUME_WAIT_SECONDS = 120.0


class SignalMatcher(Protocol):
    """What scanning needs from the match engine."""

    def match_signals(self, signals: Sequence[Signal]) -> list[Match]:
        """Matches (including suppressed ones, flagged) for one item's signals."""
        ...


@dataclass(frozen=True, slots=True)
class MatcherLoader:
    """How a worker process builds its matcher: ``target`` is ``module:function``,
    called once per process with ``params`` (JSON values only).

    Indexes are memory-mapped files, so every process on a node shares one copy
    through the page cache; nothing is re-serialized per batch.
    """

    target: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form sent to workers."""
        return {"target": self.target, "params": self.params}

    def load(self) -> SignalMatcher:
        """Import ``target`` and call it with ``params``."""
        module, _, name = self.target.partition(":")
        if not module or not name:
            raise InputError(f"matcher loader must be 'module:function', got {self.target!r}")
        factory: Callable[..., SignalMatcher] = getattr(importlib.import_module(module), name)
        return factory(**self.params)


#: Seconds a worker's matcher may rely on its last look for new bank signals.
MATCH_POLL_SECONDS = 2.0


def default_matcher_loader(
    database_url: str | None = None,
    *,
    index_dir: str | Path | None = None,
    poll_interval: float = MATCH_POLL_SECONDS,
) -> MatcherLoader:
    """The loader for the enabled banks of the store: each worker process opens the
    memory-mapped index files in ``index_dir`` (default: the configured index folder,
    which must be shared storage for a multi-node Ray cluster)."""
    return MatcherLoader(
        "tipline.services.scan:store_matcher",
        {
            "database_url": database_url,
            "index_dir": None if index_dir is None else str(index_dir),
            "poll_interval": poll_interval,
        },
    )


def store_matcher(
    database_url: str | None = None,
    index_dir: str | None = None,
    poll_interval: float = MATCH_POLL_SECONDS,
) -> SignalMatcher:
    """Open the Matcher of :mod:`tipline.services.matching` (runs once per worker)."""
    from tipline.services.matching import Matcher

    return Matcher.open(database_url, index_dir=index_dir, poll_interval=poll_interval)


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """How items are hashed and walked; stored with the scan so a resume reuses them."""

    signals: tuple[str, ...] = ()
    dihedral: bool = False
    decode: DecodeMode = DecodeMode.FAST
    follow_symlinks: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in ``scans.options``."""
        return {
            "signals": list(self.signals),
            "dihedral": self.dihedral,
            "decode": self.decode.value,
            "follow_symlinks": self.follow_symlinks,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanOptions:
        """Inverse of :meth:`to_json`."""
        return cls(
            signals=tuple(data.get("signals", ())),
            dihedral=bool(data.get("dihedral", False)),
            decode=DecodeMode(data.get("decode", DecodeMode.FAST.value)),
            follow_symlinks=bool(data.get("follow_symlinks", False)),
            batch_size=int(data.get("batch_size", DEFAULT_BATCH_SIZE)),
        )

    def hash_options(self) -> HashOptions:
        """The hashing part."""
        return HashOptions(signals=self.signals, dihedral=self.dihedral, decode=self.decode)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a worker reports after committing a batch."""

    batch_no: int
    items: int
    matched: int
    failed: int
    hash_seconds: float  # time spent hashing in the worker, seconds
    duplicates: int = 0  # items found already recorded (by an earlier run's worker)
    cpu_seconds: float = 0.0  # worker CPU time for the whole batch (hash, match, commit)

    def to_json(self) -> dict[str, Any]:
        """Plain-data form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """The end of a run: this run's counts and the scan's totals."""

    scan_id: str
    total: int  # items the sources hold
    scanned: int  # items recorded by this run
    matched: int  # of those, with at least one (unsuppressed) match
    failed: int  # of those, with an error
    skipped: int  # items already recorded before this run (resume)
    seconds: float  # wall time of this run, seconds
    status: str
    worker_cpu_seconds: float = 0.0  # CPU time the workers spent on this run's batches

    @property
    def rate(self) -> float:
        """Items recorded per second in this run."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0


#: progress callback: (items done in this run, items to do in this run)
ProgressFn = Callable[[int, int], None]


# -- the unit of work --------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_MATCHERS: dict[str, SignalMatcher | None] = {}


def _engine(url: str) -> Engine:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = make_engine(url)
    return engine


def _matcher(loader: dict[str, Any] | None) -> SignalMatcher | None:
    if loader is None:
        return None
    key = json.dumps(loader, sort_keys=True)
    if key not in _MATCHERS:
        _MATCHERS[key] = MatcherLoader(loader["target"], dict(loader.get("params", {}))).load()
    return _MATCHERS[key]


def signal_json(signal: Signal) -> dict[str, Any]:
    """A signal as a JSON object (frames as hex hashes)."""
    out: dict[str, Any] = {"type": signal.type, "value": signal.value}
    if signal.quality is not None:
        out["quality"] = signal.quality
    if signal.low_quality:
        out["low_quality"] = True
    if signal.variant is not None:
        out["variant"] = signal.variant
    if signal.frames:
        out["frames"] = [
            {"frame": f.index, "quality": f.quality, "hash": f.hash.hex(), "seconds": f.seconds}
            for f in signal.frames
        ]
    return out


def match_json(match: Match) -> dict[str, Any]:
    """A match as a JSON object (``None`` fields left out)."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in dataclasses.asdict(match).items()
        if v is not None
    }


def _stat_key(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _count_hash(path: str) -> None:
    counter = os.environ.get(HASH_COUNTER_ENV)
    if counter:
        # One short O_APPEND write per line: safe across concurrent worker processes.
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(path) + "\n").encode())
        finally:
            os.close(fd)


def hash_item(path: str, options: HashOptions) -> HashResult:
    """Hash one file and refuse the result if the file changed while it was read
    (device, inode, size or mtime differ before and after)."""
    before = _stat_key(path)
    result = hash_path(path, options)
    _count_hash(path)
    if before is not None and result.ok and _stat_key(path) != before:
        return HashResult(
            path=path,
            size=result.size,
            error=MediaError("file changed while being read (size or mtime differ)"),
        )
    return result


def _item_row(
    position: int, item: ScanItem, result: HashResult | None, matches: list[Match]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        # file names need not be UTF-8: the key hashes the exact name, the text columns
        # hold a readable form (undecodable bytes as \xNN)
        "content_key": store.content_key(item.content_id),
        "content_id": store.display_text(item.content_id),
        "path": store.display_text(item.path),
        "position": position,
        "media": None,
        "size": None,
        "signals": [],
        "matches": [],
        "error_code": item.error_code,
        "error_message": item.error,
    }
    if result is not None:
        row["media"] = result.media
        row["size"] = result.size
        row["signals"] = [signal_json(s) for s in result.signals]
        if result.error is not None:
            row["error_code"] = result.error.code
            row["error_message"] = result.error.message
    row["matches"] = [match_json(m) for m in matches]
    if row["error_message"] is not None:
        row["status"] = "failed"
    elif any(m.suppressed_by is None for m in matches):
        row["status"] = "matched"
    else:
        row["status"] = "ok"
    return row


def fire_actions(session: Any, scan_id: str, row: dict[str, Any], matches: list[Match]) -> None:
    """Run the banks' action rules (record + enqueue for review, webhooks) for one matched
    item inside the batch's transaction. The event id is derived from the scan and the
    item, so a retried batch adds nothing twice."""
    from tipline.services.actions import MatchEvent, MatchHit, on_match

    hits = [
        MatchHit(bank=m.bank, signal_type=m.signal_type, distance=m.distance, entry_id=m.entry_id)
        for m in matches
        if m.suppressed_by is None
    ]
    event = MatchEvent(
        # 64 characters: "scan:" + ULID + ":" + 128 bits of the item's content key
        event_id=f"scan:{scan_id}:{row['content_key'][:32]}",
        hits=hits,
        content_id=row["content_id"],
        extra={"scan_id": scan_id, "path": row["path"]},
    )
    on_match(session, event)


def scan_batch(job: dict[str, Any]) -> BatchOutcome:
    """Hash, match and record one batch (the function every worker runs).

    ``job`` is plain data: ``scan_id``, ``batch_no``, ``database_url``, ``options``
    (:meth:`ScanOptions.to_json`), ``matcher`` (:meth:`MatcherLoader.to_json` or None)
    and ``items``: ``[position, content_id, path, error, error_code]`` lists.
    Item rows and the checkpoint are committed in one transaction.
    """
    cpu_start = time.process_time()
    crash_on = os.environ.get(CRASH_ON_ENV)
    options = ScanOptions.from_json(job["options"]).hash_options()
    matcher = _matcher(job.get("matcher"))
    entries = [(int(p), ScanItem(c, path, err, code)) for p, c, path, err, code in job["items"]]
    rows: list[dict[str, Any]] = []
    matched: list[tuple[int, list[Match]]] = []
    hash_seconds = 0.0
    for position, item in entries:
        result: HashResult | None = None
        matches: list[Match] = []
        if item.error is None:
            if crash_on is not None and os.path.basename(item.path) == crash_on:
                os._exit(70)
            t0 = time.perf_counter()
            result = hash_item(item.path, options)
            hash_seconds += time.perf_counter() - t0
            if result.ok and matcher is not None and result.signals:
                try:
                    matches = matcher.match_signals(result.signals)
                except TiplineError as exc:
                    result = dataclasses.replace(result, error=exc)
        row = _item_row(position, item, result, matches)
        if row["status"] == "matched":
            matched.append((len(rows), matches))
        rows.append(row)
    outcome = _commit_batch(job, rows, matched, hash_seconds)
    return dataclasses.replace(outcome, cpu_seconds=time.process_time() - cpu_start)


def _commit_batch(
    job: dict[str, Any],
    rows: list[dict[str, Any]],
    matched: list[tuple[int, list[Match]]],
    hash_seconds: float,
    *,
    factory: sessionmaker[Session] | None = None,
) -> BatchOutcome:
    if factory is None:
        factory = session_factory(_engine(job["database_url"]))
    scan_id, batch_no = str(job["scan_id"]), int(job["batch_no"])
    worker = f"{socket.gethostname()}:{os.getpid()}"
    duplicates = 0
    for attempt in range(2):
        try:
            with transaction(factory) as session:
                store.record_batch(
                    session, scan_id, batch_no, rows, worker=worker, hash_seconds=hash_seconds
                )
                for index, matches in matched:
                    fire_actions(session, scan_id, rows[index], matches)
            break
        except IntegrityError:
            if attempt:
                raise
            # An earlier run's worker recorded some of these items meanwhile: keep theirs.
            with factory() as session:
                keys = {r["content_key"]: i for i, r in enumerate(rows)}
                stmt = select(store.ScanItemRow.content_key).where(
                    store.ScanItemRow.scan_id == scan_id,
                    store.ScanItemRow.content_key.in_(list(keys)),
                )
                taken = {keys[k] for k in session.scalars(stmt)}
            duplicates = len(taken)
            remap = [i for i in range(len(rows)) if i not in taken]
            new_index = {old: new for new, old in enumerate(remap)}
            rows = [rows[i] for i in remap]
            matched = [(new_index[i], m) for i, m in matched if i in new_index]
    return BatchOutcome(
        batch_no=batch_no,
        items=len(rows),
        matched=sum(1 for r in rows if r["status"] == "matched"),
        failed=sum(1 for r in rows if r["status"] == "failed"),
        hash_seconds=hash_seconds,
        duplicates=duplicates,
    )


# -- local worker processes --------------------------------------------------------------


def _warm_up(matcher: dict[str, Any] | None, database_url: str) -> None:
    """Open the index and the database and run one search, so that lazy imports and
    compiled-kernel loading happen before the first batch, not inside it."""
    importlib.import_module("tipline.signals.pdq")
    importlib.import_module("tipline.signals.digests")
    with _engine(database_url).connect():
        pass
    loaded = _matcher(matcher)
    if loaded is not None:
        loaded.match_signals(
            [Signal(type="pdq", value="0" * 64, quality=100), Signal(type="md5", value="0" * 32)]
        )


def _worker_main(conn: Connection) -> None:
    """Worker loop: JSON batch in, JSON outcome out; exits when the coordinator is gone."""
    # Ctrl-C goes to the whole process group: the coordinator decides, a worker always
    # finishes and commits the batch it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            job = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            reply: dict[str, Any]
            if "warm" in job:
                _warm_up(job["warm"], job["database_url"])
                reply = {"ready": os.getpid()}
            else:
                reply = {"ok": scan_batch(job).to_json()}
        except Exception as exc:  # report, let the coordinator decide
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send_bytes(json.dumps(reply).encode())
        except (BrokenPipeError, OSError):
            return


#: Error code of an item whose worker process died while hashing it (decoder crash).
WORKER_CRASHED = "worker-crashed"


class LocalPool:
    """``jobs`` worker processes (forkserver: no inherited threads or DB connections).

    A worker that dies (a decoder crashing on hostile input, the OOM killer) is
    replaced; its batch is retried one item per batch, and an item that kills a worker
    on its own is recorded as failed with :data:`WORKER_CRASHED`, so one poisonous file
    cannot stop a scan or its resumes.
    """

    def __init__(self, jobs: int) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(
            ["tipline.services.scan", "tipline.signals.decode", "tipline.signals.warm"]
        )
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self._warm_message: bytes | None = None
        for _ in range(max(1, jobs)):
            conn, proc = self._spawn()
            self.conns.append(conn)
            self.procs.append(proc)

    def _spawn(self) -> tuple[Connection, multiprocessing.process.BaseProcess]:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child,), daemon=True)
        proc.start()
        child.close()
        return parent, proc

    @property
    def pids(self) -> list[int]:
        """Worker process ids."""
        return [p.pid for p in self.procs if p.pid is not None]

    def warm(self, matcher: MatcherLoader | None, database_url: str) -> None:
        """Have every worker open its matcher and database connection (in parallel)."""
        self._warm_message = json.dumps(
            {"warm": None if matcher is None else matcher.to_json(), "database_url": database_url}
        ).encode()
        self._warm(self.conns)

    def _warm(self, conns: Sequence[Connection]) -> None:
        if self._warm_message is None:
            return
        for conn in conns:
            conn.send_bytes(self._warm_message)
        for conn in conns:
            try:
                reply = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                raise TiplineError("a scan worker process died while starting") from None
            if "error" in reply:
                raise TiplineError(f"scan worker failed to start: {reply['error']}")

    def _replace(self, conn: Connection) -> Connection:
        slot = self.conns.index(conn)
        conn.close()
        self.procs[slot].join(timeout=10)
        fresh, proc = self._spawn()
        self.conns[slot], self.procs[slot] = fresh, proc
        self._warm([fresh])
        return fresh

    def run(
        self,
        jobs: Iterator[dict[str, Any]],
        on_done: Callable[[BatchOutcome], None],
        *,
        spare_batch_no: Callable[[], int],
        record_crash: Callable[[dict[str, Any]], BatchOutcome],
        on_respawn: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Hand ``jobs`` to idle workers until all are done.

        ``spare_batch_no`` gives an unused batch number for retried items;
        ``record_crash`` records a one-item job's item as failed. TiplineError when a
        worker reports an unexpected error (the scan stays resumable).
        """
        idle = deque(self.conns)
        held: dict[Connection, dict[str, Any]] = {}
        retry: deque[dict[str, Any]] = deque()
        exhausted = False
        while True:
            while idle and (retry or not exhausted):
                job = retry.popleft() if retry else next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                conn = idle.popleft()
                conn.send_bytes(json.dumps(job).encode())
                held[conn] = job
            if not held:
                return
            for ready in wait(list(held)):
                assert isinstance(ready, Connection)
                job = held.pop(ready)
                try:
                    reply = json.loads(ready.recv_bytes())
                except (EOFError, OSError):
                    idle.append(self._replace(ready))
                    if on_respawn is not None:
                        on_respawn(self.pids)
                    if len(job["items"]) == 1:
                        on_done(record_crash(job))
                    else:
                        retry.extend(
                            {**job, "batch_no": spare_batch_no(), "items": [item]}
                            for item in job["items"]
                        )
                    continue
                if "error" in reply:
                    raise TiplineError(f"scan worker failed: {reply['error']}")
                on_done(BatchOutcome(**reply["ok"]))
                idle.append(ready)

    def close(self) -> None:
        """Stop the workers (closing their pipes ends their loops)."""
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def record_crashed_item(job: dict[str, Any], factory: sessionmaker[Session]) -> BatchOutcome:
    """Record the one item of ``job`` as failed because its worker process died."""
    position, content_id, path, _, _ = job["items"][0]
    item = ScanItem(
        content_id,
        path,
        "worker process died while hashing this file (decoder crash or out of memory)",
        WORKER_CRASHED,
    )
    row = _item_row(int(position), item, None, [])
    return _commit_batch(job, [row], [], 0.0, factory=factory)


# -- the coordinator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """A new scan (``sources``) or a resume (``resume_id``)."""

    sources: tuple[str, ...] = ()
    resume_id: str | None = None
    options: ScanOptions = ScanOptions()
    jobs: int = 1
    ray_address: str | None = None
    database_url: str | None = None
    matcher: MatcherLoader | None = None
    out: Path | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_previous_run(host: str | None, pids: Sequence[int]) -> None:
    """``pids`` are the previous run's coordinator then its workers. A live coordinator
    means the scan is still running (ConflictError); a killed coordinator's workers
    finish and commit their batch, so wait for them."""
    if host != socket.gethostname() or not pids:
        return
    coordinator, workers = pids[0], pids[1:]
    if coordinator != os.getpid() and _pid_alive(coordinator):
        raise ConflictError(f"the scan is still running (process {coordinator}); stop it first")
    deadline = time.monotonic() + RESUME_WAIT_SECONDS
    while any(_pid_alive(p) and p != os.getpid() for p in workers):
        if time.monotonic() > deadline:
            raise ConflictError(
                f"processes {list(pids)} of the previous run are still alive; "
                "stop them or wait, then resume again"
            )
        time.sleep(0.05)


def _batches(
    scan_id: str,
    items: Sequence[tuple[int, ScanItem]],
    first_batch: int,
    request: ScanRequest,
    options: ScanOptions,
    database_url: str,
    parallel: int,
) -> Iterator[dict[str, Any]]:
    """Batches of ``options.batch_size`` items; near the end smaller ones, so that all
    ``parallel`` workers stay busy until the last item."""
    size = max(1, options.batch_size)
    start = n = 0
    while start < len(items):
        step = max(1, min(size, -(-(len(items) - start) // (2 * max(1, parallel)))))
        chunk = items[start : start + step]
        start += step
        n += 1
        yield {
            "scan_id": scan_id,
            "batch_no": first_batch + n - 1,
            "database_url": database_url,
            "options": options.to_json(),
            "matcher": None if request.matcher is None else request.matcher.to_json(),
            "items": [[p, i.content_id, i.path, i.error, i.error_code] for p, i in chunk],
        }


def run_scan(
    request: ScanRequest,
    *,
    progress: ProgressFn | None = None,
    stdin: Any = None,
    on_start: Callable[[str], None] | None = None,
) -> ScanSummary:
    """Run (or resume) a scan to the end and return its summary.

    ``on_start`` gets the scan id as soon as the scan is recorded (show it: it is what
    ``--resume`` needs). Raises NotFoundError for an unknown ``resume_id``, InputError
    for bad sources.
    """
    database_url = request.database_url or get_settings().resolved_database_url()
    engine = make_engine(database_url)
    try:
        return _run_scan(request, engine, database_url, progress, stdin, on_start)
    finally:
        engine.dispose()


def _run_scan(
    request: ScanRequest,
    engine: Engine,
    database_url: str,
    progress: ProgressFn | None,
    stdin: Any,
    on_start: Callable[[str], None] | None,
) -> ScanSummary:
    started = time.monotonic()
    upgrade(engine)
    factory = session_factory(engine)
    runner = "ray" if request.ray_address else "local"
    if request.resume_id is not None:
        with transaction(factory) as session:
            row = store.get_scan(session, request.resume_id)
            scan_id, sources = row.id, list(row.sources)
            options = ScanOptions.from_json(row.options)
            previous_host, previous_pids = row.host, list(row.pids)
        _wait_for_previous_run(previous_host, previous_pids)
    else:
        if not request.sources:
            raise InputError("nothing to scan: give at least one source")
        scan_id, sources, options = str(ULID()), list(request.sources), request.options
        with transaction(factory) as session:
            store.create_scan(
                session, scan_id, sources=sources, options=options.to_json(), runner=runner
            )
    if on_start is not None:
        on_start(scan_id)
    items = expand_sources(sources, follow_symlinks=options.follow_symlinks, stdin=stdin)
    if request.matcher is not None:
        # Build or catch up the index files once here, so that workers only open them.
        prepared = request.matcher.load()
        close = getattr(prepared, "close", None)
        if callable(close):
            close()
    with factory() as session:
        done = store.done_keys(session, scan_id)
        first_batch = store.next_batch_no(session, scan_id)
    todo = [
        (pos, item)
        for pos, item in enumerate(items)
        if store.content_key(item.content_id) not in done
    ]
    skipped = len(items) - len(todo)
    counts = {"items": 0, "matched": 0, "failed": 0}
    cpu = [0.0]

    def on_done(outcome: BatchOutcome) -> None:
        cpu[0] += outcome.cpu_seconds
        counts["items"] += outcome.items
        counts["matched"] += outcome.matched
        counts["failed"] += outcome.failed
        if progress is not None:
            progress(counts["items"], len(todo))

    # every batch holds at least one item: numbers past this are free for retries
    spare = itertools.count(first_batch + len(todo))
    status = "finished"
    try:
        if request.ray_address:
            from tipline.services.scan_ray import cluster_cpus, run_on_ray

            with transaction(factory) as session:
                store.set_run_state(
                    session,
                    scan_id,
                    status="running",
                    host=socket.gethostname(),
                    pids=[os.getpid()],
                    total_items=len(items),
                )
            if progress is not None:
                progress(0, len(todo))
            parallel = cluster_cpus(request.ray_address)
            jobs = _batches(scan_id, todo, first_batch, request, options, database_url, parallel)
            run_on_ray(
                request.ray_address,
                jobs,
                on_done,
                spare_batch_no=lambda: next(spare),
                record_crash=lambda job: record_crashed_item(job, factory),
            )
        elif not todo:
            if progress is not None:
                progress(0, 0)
        else:
            pool = LocalPool(min(request.jobs, max(1, -(-len(todo) // options.batch_size))))
            try:
                with transaction(factory) as session:
                    store.set_run_state(
                        session,
                        scan_id,
                        status="running",
                        host=socket.gethostname(),
                        pids=[os.getpid(), *pool.pids],
                        total_items=len(items),
                    )
                pool.warm(request.matcher, database_url)
                if progress is not None:
                    progress(0, len(todo))
                jobs = _batches(
                    scan_id, todo, first_batch, request, options, database_url, len(pool.conns)
                )

                def on_respawn(pids: list[int]) -> None:
                    with transaction(factory) as session:
                        store.set_run_state(
                            session,
                            scan_id,
                            status="running",
                            host=socket.gethostname(),
                            pids=[os.getpid(), *pids],
                            total_items=len(items),
                        )

                pool.run(
                    jobs,
                    on_done,
                    spare_batch_no=lambda: next(spare),
                    record_crash=lambda job: record_crashed_item(job, factory),
                    on_respawn=on_respawn,
                )
            finally:
                pool.close()
    except BaseException:
        status = "interrupted"
        raise
    finally:
        with transaction(factory) as session:
            store.set_run_state(
                session,
                scan_id,
                status=status,
                total_items=len(items),
                finished=status == "finished",
            )
    if request.out is not None:
        with factory() as session:
            write_results(session, scan_id, request.out)
    return ScanSummary(
        scan_id=scan_id,
        total=len(items),
        scanned=counts["items"],
        matched=counts["matched"],
        failed=counts["failed"],
        skipped=skipped,
        seconds=time.monotonic() - started,
        status=status,
        worker_cpu_seconds=cpu[0],
    )


# -- export ------------------------------------------------------------------------------


def item_json(row: store.ScanItemRow) -> dict[str, Any]:
    """One recorded item as the JSON object written to ``--out *.jsonl``."""
    return {
        "content_id": row.content_id,
        "path": row.path,
        "status": row.status,
        "media": row.media,
        "size": row.size,
        "signals": row.signals,
        "matches": row.matches,
        "error": None
        if row.error_message is None
        else {"code": row.error_code, "message": row.error_message},
    }


CSV_COLUMNS = ("content_id", "path", "status", "media", "size", "signals", "matches", "error")


def write_results(session: Any, scan_id: str, out: Path) -> int:
    """Write every recorded item of ``scan_id`` to ``out`` (``.jsonl`` or ``.csv``),
    in enumeration order, atomically (temp file + rename). Returns the item count.

    In CSV, ``signals`` is ``type:value`` joined by spaces and ``matches`` is
    ``bank/entry_id:signal_type:distance`` joined by spaces.
    """
    import csv

    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise InputError(f"--out must end in .jsonl or .csv, got {out.name!r}")
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n") if suffix == ".csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        for row in store.iter_items(session, scan_id):
            count += 1
            if writer is None:
                fh.write(json.dumps(item_json(row), separators=(",", ":")) + "\n")
                continue
            signals = " ".join(
                f"{s['type']}:{s['value']}" for s in row.signals if not s.get("variant")
            )
            matches = " ".join(
                f"{m['bank']}/{m['entry_id']}:{m['signal_type']}:{m['distance']}"
                for m in row.matches
                if m.get("suppressed_by") is None
            )
            writer.writerow(
                [
                    row.content_id,
                    row.path,
                    row.status,
                    row.media or "",
                    "" if row.size is None else row.size,
                    signals,
                    matches,
                    row.error_message or "",
                ]
            )
    tmp.replace(out)
    return count
