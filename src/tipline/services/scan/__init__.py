"""Resumable batch scans: media in, signals and matches out, everything recorded.

One module per job:

* :mod:`.options` - the plain-data types (options stored with a scan, a batch's
  outcome, a run's summary);
* :mod:`.sources` - folders, file lists and URLs turned into an ordered item list;
* :mod:`.matcher` - how a worker process builds its match engine (once per process);
* :mod:`.batch` - the unit of work: hash, match and record one batch, its items and
  its checkpoint committed in one transaction;
* :mod:`.retry` - the crash-split retry shared by both runners;
* :mod:`.local_pool` and :mod:`.ray_pool` - the runners (local worker processes, Ray
  tasks), both calling :func:`.batch.scan_batch`, so results and checkpoints are the
  same; messages between processes are JSON, never pickle;
* :mod:`.coordinator` - :func:`run_scan`: enumerate, hand out batches, show progress;
* :mod:`.export` - write the recorded items to ``.jsonl`` or ``.csv``.

Killing the coordinator (``kill -9``) loses nothing; a killed worker loses at most its
one uncommitted batch, re-hashed on resume. This package re-exports what the CLI and
the tests use.
"""

from tipline.services.scan.batch import (
    CRASH_ON_ENV,
    HASH_COUNTER_ENV,
    WORKER_CRASHED,
    hash_item,
    scan_batch,
)
from tipline.services.scan.coordinator import ScanRequest, run_scan
from tipline.services.scan.export import write_results
from tipline.services.scan.matcher import MatcherLoader, SignalMatcher, default_matcher_loader
from tipline.services.scan.options import (
    DEFAULT_BATCH_SIZE,
    BatchOutcome,
    ProgressFn,
    ScanOptions,
    ScanSummary,
)

__all__ = [
    "CRASH_ON_ENV",
    "DEFAULT_BATCH_SIZE",
    "HASH_COUNTER_ENV",
    "WORKER_CRASHED",
    "BatchOutcome",
    "MatcherLoader",
    "ProgressFn",
    "ScanOptions",
    "ScanRequest",
    "ScanSummary",
    "SignalMatcher",
    "default_matcher_loader",
    "hash_item",
    "run_scan",
    "scan_batch",
    "write_results",
]
