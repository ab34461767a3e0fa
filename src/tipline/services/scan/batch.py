"""The unit of work of a scan: hash, match and record one *batch*.

A worker hashes the batch's files, matches their signals, and commits the item rows
together with the batch's checkpoint row in one transaction; the matched items' match
history and action rules are written by
:func:`tipline.services.submissions.record_batch` in that same transaction. A killed
worker therefore loses at most its one uncommitted batch, and a retried batch records
nothing twice. Every runner (:mod:`.local_pool`, :mod:`.ray_pool`) calls
:func:`scan_batch`; jobs and outcomes are plain JSON data, never pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import get_settings
from tipline.errors import MediaError, TiplineError
from tipline.services import submissions, vault
from tipline.services.auth import Principal
from tipline.services.matching.match import Match
from tipline.services.reports.auto import AutoReportPolicy
from tipline.services.scan.matcher import MatcherLoader, SignalMatcher
from tipline.services.scan.options import BatchOutcome, ScanOptions
from tipline.services.scan.sources import ScanItem
from tipline.signals.base import Signal
from tipline.signals.hashing import HashOptions, HashResult, hash_path
from tipline.signals.limits import MediaLimits
from tipline.store import scans as store
from tipline.store.db import make_engine, session_factory, transaction

#: When set, every worker appends one line (the path) per hashing call to this file;
#: tests use it to prove that no file is hashed twice across a crash and a resume.
HASH_COUNTER_ENV = "TIPLINE_SCAN_HASH_COUNTER"
#: Fault injection for tests: a worker exits abruptly (as a decoder crash would) when
#: about to hash a path whose file name equals this value.
CRASH_ON_ENV = "TIPLINE_SCAN_TEST_CRASH_ON"
#: Error code of an item whose worker process died while hashing it (decoder crash).
WORKER_CRASHED = "worker-crashed"

_ENGINES: dict[str, Engine] = {}
_MATCHERS: dict[str, SignalMatcher | None] = {}


def cached_engine(url: str) -> Engine:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = make_engine(url)
    return engine


def cached_matcher(loader: dict[str, Any] | None) -> SignalMatcher | None:
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


@functools.cache
def _limits() -> MediaLimits:
    """The media limits of this worker process's settings."""
    return MediaLimits.of(get_settings())


def hash_item(path: str, options: HashOptions) -> HashResult:
    """Hash one file and refuse the result if the file changed while it was read
    (device, inode, size or mtime differ before and after)."""
    before = _stat_key(path)
    result = hash_path(path, options, limits=_limits())
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


def _outcomes(
    scan_id: str, rows: list[dict[str, Any]], matched: list[tuple[int, list[Match]]]
) -> list[submissions.Outcome]:
    """The matched items as outcomes to record. The event id is derived from the scan
    and the item, so a retried batch adds nothing twice."""
    return [
        submissions.Outcome(
            # stored only with a submission (an item the auto-report policy reports)
            signals=[
                Signal(type=sig["type"], value=sig["value"])
                for sig in rows[index]["signals"]
                if sig.get("variant") is None and not sig.get("frames")
            ],
            matches=matches,
            # 64 characters: "scan:" + ULID + ":" + 128 bits of the item's content key
            event_id=f"scan:{scan_id}:{rows[index]['content_key'][:32]}",
            content_id=rows[index]["content_id"],
            extra={"scan_id": scan_id, "path": rows[index]["path"]},
            # kept in the evidence vault if a rule sends the item to review
            media=Path(rows[index]["path"]),
        )
        for index, matches in matched
    ]


@functools.cache
def _vault() -> vault.Vault:
    """This worker's evidence vault (from the environment's settings, like the limits)."""
    return vault.Vault.from_settings(get_settings())


@functools.cache
def _auto_report() -> AutoReportPolicy | None:
    """This worker's auto-report policy (reports queued with the batch's matches)."""
    return AutoReportPolicy.from_settings(get_settings())


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
    matcher = cached_matcher(job.get("matcher"))
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
        factory = session_factory(cached_engine(job["database_url"]))
    scan_id, batch_no = str(job["scan_id"]), int(job["batch_no"])
    worker = f"{socket.gethostname()}:{os.getpid()}"
    duplicates = 0
    for attempt in range(2):
        try:
            with transaction(factory) as session:
                store.record_batch(
                    session, scan_id, batch_no, rows, worker=worker, hash_seconds=hash_seconds
                )
                # match history and action rules of the matched items, same transaction
                submissions.record_batch(
                    session,
                    Principal.cli(),
                    _outcomes(scan_id, rows, matched),
                    vault=_vault(),
                    auto_report=_auto_report(),
                )
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
        errors=tuple((r["path"], r["error_message"]) for r in rows if r["status"] == "failed"),
    )


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
