"""Hashing of uploaded files in worker processes beside the serving process.

The reference PDQ (``pdqhash``) holds the GIL for the whole hash (~0.1-0.3 s for a
2 MP photo). Hashed in the request's thread, it stalls every other thread of the
process meanwhile: the triage thread (de-duplication holds the clearinghouse-wide
lock across ~20 database round trips, each waiting for the GIL again) and the event
loop. :class:`HashPool` runs :func:`~tipline.signals.hashing.hash_bytes` in a small
forkserver pool instead; the bytes go to the worker over a pipe and only the signals
come back. :meth:`HashPool.start` starts the workers before the first upload (each
imports the program's main module once, which costs seconds under the ``tipline``
script).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tipline.signals.hashing import HashOptions, HashResult, hash_bytes, process_pool
from tipline.signals.limits import MediaLimits

#: the workers yield the CPU to the serving process (its triage thread holds the
#: de-duplication lock; a report waits for it from /finish): they still use every idle
#: cycle, so the intake's throughput is the same
NICE = 10


class HashPool:
    """``processes`` hashing workers, started on first use; safe to share between
    threads. A broken pool (a worker killed) is replaced on the next call."""

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("hash pool closed")
            if self._pool is None:
                self._pool = process_pool(self.processes, nice=NICE)
            return self._pool

    def start(self) -> set[int]:
        """Start the workers now (and wait until they answer); their process ids."""
        pool = self._executor()
        return {
            future.result() for future in [pool.submit(os.getpid) for _ in range(self.processes)]
        }

    def hash(self, data: bytes, name: str, options: HashOptions, limits: MediaLimits) -> HashResult:
        """:func:`hash_bytes` of ``data`` in a worker process."""
        pool = self._executor()
        try:
            return pool.submit(hash_bytes, data, name, options, limits=limits).result()
        except BrokenProcessPool:
            # a worker died (e.g. the OOM killer on a hostile file): hash this file
            # again in a new pool, so one file cannot disable the intake
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return self._executor().submit(hash_bytes, data, name, options, limits=limits).result()

    def close(self) -> None:
        """Stop the workers."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
