"""The crash-split retry every scan runner shares.

A worker process can die on hostile input (a decoder crash, the OOM killer). The batch
it held is then split into one-item batches run again; a one-item batch whose worker
dies as well is recorded as failed. So one poisonous file costs its batch one retry and
is isolated, and cannot stop a scan or its resumes. The local pool and the Ray runner
both draw their jobs from a :class:`CrashSplitFeed`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from tipline.services.scan.options import BatchOutcome


class CrashSplitFeed:
    """Jobs to hand out, with the one-item retries of crashed batches first.

    ``spare_batch_no`` gives an unused batch number for each retried item;
    ``record_crash`` records a one-item job's item as failed and returns its outcome,
    which goes to ``on_done`` like any committed batch.
    """

    def __init__(
        self,
        jobs: Iterator[dict[str, Any]],
        on_done: Callable[[BatchOutcome], None],
        *,
        spare_batch_no: Callable[[], int],
        record_crash: Callable[[dict[str, Any]], BatchOutcome],
    ) -> None:
        self._jobs = jobs
        self._on_done = on_done
        self._spare_batch_no = spare_batch_no
        self._record_crash = record_crash
        self._retry: deque[dict[str, Any]] = deque()
        self._exhausted = False

    def next(self) -> dict[str, Any] | None:
        """The next job to run, or None when there is none right now (retries may still
        be added by :meth:`crashed` while jobs are in flight)."""
        if self._retry:
            return self._retry.popleft()
        if self._exhausted:
            return None
        job = next(self._jobs, None)
        if job is None:
            self._exhausted = True
        return job

    def crashed(self, job: dict[str, Any]) -> None:
        """The worker running ``job`` died: retry its items one per batch, or record
        the item of a one-item job as failed."""
        if len(job["items"]) == 1:
            self._on_done(self._record_crash(job))
            return
        self._retry.extend(
            {**job, "batch_no": self._spare_batch_no(), "items": [item]} for item in job["items"]
        )
