"""The clearinghouse's triage job (``clearinghouse.triage``) as ``tipline worker`` runs it.

Importing this module loads neither the intake nor the pipeline with its match index
(numba): a worker that never sees a triage job never pays for them. The pipeline is
imported, and its :class:`~tipline.services.clearinghouse.pipeline.Triager` opened, on
the first job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tipline.config import Settings
from tipline.services import jobs
from tipline.services.clearinghouse import triage
from tipline.services.clearinghouse.triage import TRIAGE_JOB_KIND
from tipline.services.database import Database

if TYPE_CHECKING:
    from tipline.services.clearinghouse.pipeline import Triager


def triage_handler(open_triager: Callable[[], Triager]) -> jobs.Handler:
    """The job handler of ``clearinghouse.triage`` (payload ``{"report_id": n}``);
    ``open_triager`` is called on the first job."""
    opened: list[Triager] = []
    lock = threading.Lock()

    def handle(job: jobs.JobContext) -> None:
        from tipline.services.clearinghouse.pipeline import triage_report  # on first use

        with lock:
            if not opened:
                opened.append(open_triager())
        triage_report(opened[0], int(job.payload["report_id"]))

    return handle


def worker_handlers(db: Database, settings: Settings) -> dict[str, jobs.Handler]:
    """``tipline worker``'s clearinghouse jobs: the triage weights are checked now (a
    :class:`~tipline.errors.ConfigError` names an unknown factor before the worker
    starts), the pipeline opens on the first job."""
    triage.TriagePolicy.of(settings)

    def open_triager() -> Triager:
        from tipline.services.clearinghouse.pipeline import Triager

        return Triager.open(db, settings)

    return {TRIAGE_JOB_KIND: triage_handler(open_triager)}
