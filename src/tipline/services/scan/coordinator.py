"""The scan coordinator: enumerate sources, hand out batches, show progress.

The coordinator records nothing itself but the scan row and its run state; workers
commit items with their batch checkpoint (:mod:`.batch`). So killing the coordinator
(``kill -9``) loses nothing: a busy worker finishes and commits its batch, then sees
its pipe closed and exits; a resume waits for those workers and skips every recorded
item - no file is hashed twice.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from ulid import ULID

from tipline.config import get_settings
from tipline.errors import ConflictError, InputError
from tipline.services.scan.batch import record_crashed_item
from tipline.services.scan.export import write_results
from tipline.services.scan.local_pool import LocalPool
from tipline.services.scan.matcher import MatcherLoader
from tipline.services.scan.options import BatchOutcome, ProgressFn, ScanOptions, ScanSummary
from tipline.services.scan.ray_pool import cluster_cpus, run_on_ray
from tipline.services.scan.sources import (
    ScanItem,
    absolute_source,
    check_sources,
    expand_sources,
)
from tipline.store import scans as store
from tipline.store.db import open_database, session_factory, transaction

#: Seconds a resume waits for the previous run's workers to finish their batch.
RESUME_WAIT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """A new scan (``sources``) or a resume (``resume_id``)."""

    sources: tuple[str, ...] = ()
    resume_id: str | None = None
    options: ScanOptions = field(default_factory=ScanOptions)
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


#: called with (path, error message) for each item this run records as failed
ItemErrorFn = Callable[[str, str], None]


def run_scan(
    request: ScanRequest,
    *,
    progress: ProgressFn | None = None,
    stdin: Any = None,
    on_start: Callable[[str], None] | None = None,
    on_error: ItemErrorFn | None = None,
) -> ScanSummary:
    """Run (or resume) a scan to the end and return its summary.

    ``on_start`` gets the scan id as soon as the scan is recorded (show it: it is what
    ``--resume`` needs); ``on_error`` gets each failed item as its batch is recorded.
    A new scan stores its sources as absolute paths (relative ones are taken from the
    working folder), so it can be resumed from any folder. Raises NotFoundError for an
    unknown ``resume_id``, InputError for bad sources.
    """
    database_url = request.database_url or get_settings().resolved_database_url()
    engine = open_database(database_url)
    try:
        return _run_scan(request, engine, database_url, progress, stdin, on_start, on_error)
    finally:
        engine.dispose()


def _run_scan(
    request: ScanRequest,
    engine: Engine,
    database_url: str,
    progress: ProgressFn | None,
    stdin: Any,
    on_start: Callable[[str], None] | None,
    on_error: ItemErrorFn | None,
) -> ScanSummary:
    started = time.monotonic()
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
        options = request.options
        if options.base_dir is None:
            options = dataclasses.replace(options, base_dir=os.getcwd())
        base_dir = options.base_dir or os.getcwd()
        scan_id = str(ULID())
        sources = [absolute_source(s, base_dir) for s in request.sources]
        check_sources(sources)
        with transaction(factory) as session:
            store.create_scan(
                session, scan_id, sources=sources, options=options.to_json(), runner=runner
            )
    if on_start is not None:
        on_start(scan_id)
    items = expand_sources(
        sources, follow_symlinks=options.follow_symlinks, stdin=stdin, base_dir=options.base_dir
    )
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
        if on_error is not None:
            for path, message in outcome.errors:
                on_error(path, message)
        if progress is not None:
            progress(counts["items"], len(todo))

    # every batch holds at least one item: numbers past this are free for retries
    spare = itertools.count(first_batch + len(todo))
    status = "finished"
    try:
        if request.ray_address:
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
