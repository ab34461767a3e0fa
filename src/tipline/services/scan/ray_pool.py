"""Run scan batches as Ray tasks (``tipline scan --ray auto|ADDRESS``).

Each task runs :func:`tipline.services.scan.batch.scan_batch` - the same unit of work as a
local worker - so results and checkpoints are identical to a local run. Task inputs
and outputs are JSON strings. The match index is never part of a task: each Ray worker
process builds its matcher once from the loader (memory-mapped index files on shared
storage, one page-cache copy per node) and keeps it for every later batch.

Ray is optional and loaded only through :func:`tipline._optional.require`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from tipline._optional import require
from tipline.errors import TiplineError
from tipline.services.scan.batch import scan_batch
from tipline.services.scan.options import BatchOutcome
from tipline.services.scan.retry import CrashSplitFeed

#: ``--ray local`` starts a private single-machine cluster instead of joining one.
LOCAL = "local"


def _ray_batch(job_json: str) -> str:
    """The Ray task body: one batch, JSON in and out."""
    return json.dumps(scan_batch(json.loads(job_json)).to_json())


def connect(address: str) -> Any:
    """The ``ray`` module, connected to ``address`` (``auto``, ``ray://...``, ``local``).

    An already initialized Ray (tests, notebooks) is used as is.
    """
    ray = require("ray")
    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address == LOCAL else address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise TiplineError(f"cannot connect to Ray at {address!r}: {exc}") from None
    return ray


def cluster_cpus(address: str) -> int:
    """CPUs of the Ray cluster at ``address`` (connecting first)."""
    return max(1, int(connect(address).cluster_resources().get("CPU", 1)))


def run_on_ray(
    address: str,
    jobs: Iterator[dict[str, Any]],
    on_done: Callable[[BatchOutcome], None],
    *,
    spare_batch_no: Callable[[], int],
    record_crash: Callable[[dict[str, Any]], BatchOutcome],
    in_flight_per_cpu: int = 2,
) -> None:
    """Submit ``jobs`` as Ray tasks, at most ``in_flight_per_cpu`` per cluster CPU at
    once, calling ``on_done`` as each batch is committed.

    A task whose worker process died (after Ray's own retries) goes through the
    crash-split retry of :mod:`.retry` (``spare_batch_no`` numbers the one-item tasks,
    ``record_crash`` records an item that still kills its worker). Any other task
    error raises TiplineError (the scan stays resumable).
    """
    ray = connect(address)
    task = ray.remote(num_cpus=1, max_retries=1)(_ray_batch)
    limit = cluster_cpus(address) * in_flight_per_cpu
    feed = CrashSplitFeed(jobs, on_done, spare_batch_no=spare_batch_no, record_crash=record_crash)
    pending: dict[Any, dict[str, Any]] = {}
    while True:
        while len(pending) < limit:
            job = feed.next()
            if job is None:
                break
            pending[task.remote(json.dumps(job))] = job
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            job = pending.pop(ref)
            try:
                reply = ray.get(ref)
            except ray.exceptions.WorkerCrashedError:
                feed.crashed(job)
                continue
            except Exception as exc:
                for other in pending:
                    ray.cancel(other)
                raise TiplineError(f"Ray scan task failed: {type(exc).__name__}: {exc}") from None
            on_done(BatchOutcome.from_json(json.loads(reply)))
