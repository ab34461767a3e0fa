"""Scan batches in local worker processes (``tipline scan --jobs N``).

Workers are forkserver processes (no inherited threads or database connections) that
take one JSON job at a time over a pipe and answer with the JSON outcome of
:func:`~tipline.services.scan.batch.scan_batch`. A worker that dies is replaced and
its batch goes through the same crash-split retry as on Ray (:mod:`.retry`).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from tipline.errors import TiplineError
from tipline.services.scan.batch import cached_engine, cached_matcher, scan_batch
from tipline.services.scan.matcher import MatcherLoader
from tipline.services.scan.options import BatchOutcome
from tipline.services.scan.retry import CrashSplitFeed
from tipline.signals.base import Signal


def _warm_up(matcher: dict[str, Any] | None, database_url: str) -> None:
    """Open the index and the database and run one search, so that lazy imports and
    compiled-kernel loading happen before the first batch, not inside it."""
    importlib.import_module("tipline.signals.pdq")
    importlib.import_module("tipline.signals.digests")
    with cached_engine(database_url).connect():
        pass
    loaded = cached_matcher(matcher)
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


class LocalPool:
    """``jobs`` worker processes (forkserver: no inherited threads or DB connections).

    A worker that dies (a decoder crashing on hostile input, the OOM killer) is
    replaced; its batch goes through the crash-split retry of :mod:`.retry`, so one
    poisonous file cannot stop a scan or its resumes.
    """

    def __init__(self, jobs: int) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(
            ["tipline.services.scan.batch", "tipline.signals.decode", "tipline.signals.warm"]
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
        feed = CrashSplitFeed(
            jobs, on_done, spare_batch_no=spare_batch_no, record_crash=record_crash
        )
        idle = deque(self.conns)
        held: dict[Connection, dict[str, Any]] = {}
        while True:
            while idle:
                job = feed.next()
                if job is None:
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
                    feed.crashed(job)
                    continue
                if "error" in reply:
                    raise TiplineError(f"scan worker failed: {reply['error']}")
                on_done(BatchOutcome.from_json(reply["ok"]))
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
