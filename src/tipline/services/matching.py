"""The Matcher: bank signals in the database -> memory-mapped indexes -> matches.

Index files live under ``Settings.resolved_index_dir()``::

    <index dir>/meta.json              what the files hold (database instance, last seq)
    <index dir>/pdq/                   a LiveIndex (base segment + CURRENT)
    <index dir>/exact-<type>-<tag>.tpi one ExactIndex per digest type (md5, sha1, ...)
    <index dir>/vpdq-<tag>.tpi         the vPDQ frame index

The index is derived data: the database is the source of truth.

* **Freshness.** Before answering, the Matcher asks the database for signal rows with a
  change sequence above the last one it has seen (one indexed query, at most every
  ``poll_interval`` seconds, 0.2 by default) and feeds them to the index's delta. A hash
  committed by any process is therefore matchable within ``poll_interval`` seconds
  (at once with ``poll_interval=0``, or after :meth:`Matcher.refresh`).
* **Disables, thresholds, bank switches** are read from the database for every hit
  when turning index hits into matches, so a disable takes effect on the very next call.
* **Merge.** When the delta grows past ``merge_after`` signals a background thread folds
  it into new base files (searches continue on the old ones meanwhile).
* **Damage.** Missing, truncated or corrupted files (checksums) or a ``meta.json`` that
  does not fit the database make the Matcher rebuild everything from the database,
  logging one warning line that says so.
* **Allow banks.** A hit in an allow bank suppresses the other matches of the same
  call (one media item) that belong to the allow bank's tenant (:func:`allow_applies`;
  a shared allow bank applies to all); suppressed matches are returned flagged with
  ``suppressed_by`` and ``suppressed_reason`` (the allow entry's source, else the allow
  bank's description).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from tipline.banks.model import Bank, Match
from tipline.config import Settings, get_settings
from tipline.errors import HashFormatError, ImportFormatError, IndexCorruptError
from tipline.index import ExactIndex, LiveIndex, VideoIndex
from tipline.index.exact import WIDTHS
from tipline.services.banks import Database, open_database
from tipline.signals.base import Signal, VideoFrame, get_signal_type, signal_types
from tipline.store import bank_repo as repo

log = logging.getLogger("tipline.matching")

#: Version of meta.json; a different one triggers a rebuild.
META_FORMAT = 1
#: Signals read from the database per query while building or catching up.
PAGE = 100_000
#: Delta size (signals) that starts a background merge.
DEFAULT_MERGE_AFTER = 50_000
#: Seconds between re-reads of the banks table (thresholds -> search radius).
BANKS_REFRESH_SECONDS = 1.0
#: Default longest time (seconds) a match may rely on the last look at the database for
#: new signals; keeps a database round trip off most lookups, well inside the 1 s promise.
DEFAULT_POLL_SECONDS = 0.2
#: Frame distance (bits) used by vPDQ frame matching.
VPDQ_FRAME_DISTANCE = 31


def _pdq_rows(values: Sequence[str]) -> npt.NDArray[np.uint8]:
    if not values:
        return np.zeros((0, 32), np.uint8)
    return np.frombuffer(bytes.fromhex("".join(values)), np.uint8).reshape(-1, 32)


def _frames_of(value: str) -> list[VideoFrame]:
    from tipline.signals.vpdq import parse_vpdq_text

    return parse_vpdq_text(value)


def _exact_width(type_name: str) -> int | None:
    st = signal_types().get(type_name)
    width = getattr(st, "n_bytes", None)
    if st is None or st.default_threshold != 0 or width not in WIDTHS:
        return None
    return int(width)


@dataclass
class _Collected:
    """Signals gathered from the database, by index kind."""

    pdq_ids: list[int] = field(default_factory=list)
    pdq_values: list[str] = field(default_factory=list)
    #: packed (ids, (n, 32) uint8 hashes) chunks; lists above are packed per page
    pdq_chunks: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]] = field(
        default_factory=list
    )
    exact: dict[str, dict[bytes, list[int]]] = field(default_factory=dict)
    video: list[tuple[int, list[VideoFrame]]] = field(default_factory=list)
    other: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    count: int = 0

    def pack(self) -> None:
        """Move collected PDQ hashes into compact arrays (32 bytes each, not hex)."""
        if self.pdq_ids:
            ids = np.asarray(self.pdq_ids, np.int64)
            self.pdq_chunks.append((ids, _pdq_rows(self.pdq_values).copy()))
            self.pdq_ids, self.pdq_values = [], []

    def pdq_arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """Every collected PDQ hash as (ids, (n, 32) uint8)."""
        self.pack()
        if not self.pdq_chunks:
            return np.zeros(0, np.int64), np.zeros((0, 32), np.uint8)
        ids = np.concatenate([c[0] for c in self.pdq_chunks])
        hashes = np.concatenate([c[1] for c in self.pdq_chunks])
        self.pdq_chunks = []
        return ids, hashes

    def add(self, change: repo.SignalChange) -> None:
        self.count += 1
        kind = change.type
        if kind == "pdq":
            self.pdq_ids.append(change.entry_pk)
            self.pdq_values.append(change.value)
        elif kind == "vpdq":
            try:
                self.video.append((change.entry_pk, _frames_of(change.value)))
            except (ImportFormatError, HashFormatError) as exc:
                log.warning("entry %d: unreadable vpdq value skipped (%s)", change.entry_pk, exc)
        elif _exact_width(kind) is not None:
            key = bytes.fromhex(change.value)
            self.exact.setdefault(kind, {}).setdefault(key, []).append(change.entry_pk)
        else:
            self.other.setdefault(kind, []).append((change.entry_pk, change.value))


class _IndexFiles:
    """The opened base files plus what ``meta.json`` says about them."""

    def __init__(
        self,
        pdq: LiveIndex,
        exact: dict[str, ExactIndex],
        video: VideoIndex | None,
        seq: int,
        after_id: int,
    ) -> None:
        self.pdq = pdq
        self.exact = exact
        self.video = video
        self.seq = seq
        self.after_id = after_id


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.lock`` (serialises builds across processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Matcher:
    """Matches signals against every enabled bank; safe to share between threads."""

    def __init__(
        self,
        db: Database,
        index_dir: str | Path,
        *,
        poll_interval: float = DEFAULT_POLL_SECONDS,
        merge_after: int = DEFAULT_MERGE_AFTER,
        banks: Iterable[str] | None = None,
        owns_db: bool = False,
    ) -> None:
        """Open (or build) the index in ``index_dir`` for ``db`` and catch up.

        ``poll_interval`` (seconds) is the longest a call may rely on the last look at
        the database for new signals (0 = look on every call). ``banks`` restricts
        matches to those banks (allow banks always apply).
        """
        self.db = db
        self.dir = Path(index_dir)
        self.poll_interval = poll_interval
        self.merge_after = merge_after
        self.only_banks = frozenset(banks) if banks is not None else None
        self._owns_db = owns_db
        self._lock = threading.RLock()
        self._merge_thread: threading.Thread | None = None
        self._last_poll = 0.0
        self._banks: list[Bank] = []
        self._banks_at = 0.0
        self.rebuilt = False
        #: base signals of types without an index (plugins), matched by brute force
        self._base_other: dict[str, list[tuple[int, str]]] = {}
        with db.sessions() as s:
            self.instance = repo.instance_id(s)
        self._files = self._open_or_build()
        self._seq = self._files.seq
        self._after_id = self._files.after_id
        self._delta = _Collected()
        self._merging: _Collected | None = None
        self._video_delta_index: VideoIndex | None = None
        self.refresh(force=True)

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        index_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> Matcher:
        """A Matcher on the configured database and index folder (migrating first)."""
        settings = settings or get_settings()
        db = open_database(database_url, settings=settings)
        directory = index_dir if index_dir is not None else settings.resolved_index_dir()
        return cls(db, directory, owns_db=True, **kwargs)

    def close(self) -> None:
        """Wait for a running merge, then release the database if this Matcher opened it."""
        thread = self._merge_thread
        if thread is not None:
            thread.join()
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> Matcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def seq(self) -> int:
        """Change sequence number up to which the index holds the database's signals."""
        return self._seq

    # -- files ----------------------------------------------------------------------------

    def _meta_path(self) -> Path:
        return self.dir / "meta.json"

    def _open_or_build(self) -> _IndexFiles:
        for _ in range(3):
            reason = self._try_open_reason()
            if isinstance(reason, _IndexFiles):
                return reason
            if not (isinstance(reason, str) and reason.startswith("FileNotFoundError")):
                break
            # another process may have replaced meta.json and removed the old files
            # between our reads: read meta.json again before declaring the index broken
            time.sleep(0.05)
        with _dir_lock(self.dir):
            again = self._try_open_reason()  # another process may have just rebuilt
            if isinstance(again, _IndexFiles):
                return again
            if again is None:
                log.info("building the match index in %s from the database", self.dir)
            else:
                log.warning(
                    "match index in %s is unusable (%s); rebuilding it from the database",
                    self.dir,
                    again,
                )
                self.rebuilt = True
            return self._build()

    def _try_open_reason(self) -> _IndexFiles | str | None:
        """The opened files, or why they cannot be used (None: there is no index yet)."""
        path = self._meta_path()
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
                return "meta.json has an unknown format"
            if meta.get("instance") != self.instance:
                return "it was built from another database"
            seq, after_id = int(meta["seq"]), int(meta["after_id"])
            with self.db.sessions() as s:
                if seq > repo.current_seq(s):
                    return "it is newer than the database"
            pdq = LiveIndex.open(self.dir / "pdq")
            if pdq.generation < int(meta["pdq_generation"]):
                return "pdq generation is older than meta.json says"
            exact = {
                str(kind): ExactIndex.open(self.dir / str(name))
                for kind, name in dict(meta["exact"]).items()
            }
            video = VideoIndex.open(self.dir / str(meta["video"])) if meta.get("video") else None
            self._base_other = self._load_other(seq, list(meta.get("other_types") or []))
        except IndexCorruptError as exc:
            return str(exc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return _IndexFiles(pdq, exact, video, seq, after_id)

    def _load_other(self, upto: int, types: list[str]) -> dict[str, list[tuple[int, str]]]:
        """Base signals of the index-less types meta.json lists (none, usually)."""
        out: dict[str, list[tuple[int, str]]] = {}
        if not types:
            return out
        with self.db.sessions() as s:
            for change in repo.signals_of_types(s, [str(t) for t in types], upto=upto):
                out.setdefault(change.type, []).append((change.entry_pk, change.value))
        return out

    def _collect(self, upto: int) -> tuple[_Collected, tuple[int, int]]:
        out = _Collected()
        after = (0, 0)
        with self.db.sessions() as s:
            while True:
                page = repo.signals_page(s, after, limit=PAGE, upto=upto)
                for change, row_id in page:
                    out.add(change)
                    after = (change.seq, row_id)
                out.pack()
                if len(page) < PAGE:
                    return out, after

    def _build(self) -> _IndexFiles:
        """Write every index file from the database and point meta.json at them."""
        with self.db.sessions() as s:
            upto = repo.current_seq(s)
        data, after = self._collect(upto)
        tag = f"{time.time_ns():x}-{os.getpid()}"
        pdq_ids, pdq_hashes = data.pdq_arrays()
        pdq = LiveIndex.create(self.dir / "pdq", pdq_ids, pdq_hashes)
        del pdq_ids, pdq_hashes
        exact = self._write_exact(data.exact, {}, tag)
        video_name = f"vpdq-{tag}.tpi"
        VideoIndex.build(data.video).save(self.dir / video_name)
        self._write_meta(after, pdq.generation, exact, video_name, sorted(data.other))
        opened = {k: ExactIndex.open(self.dir / v) for k, v in exact.items()}
        video = VideoIndex.open(self.dir / video_name)
        if data.other:
            log.warning(
                "signal types without an index are matched by brute force: %s",
                ", ".join(sorted(data.other)),
            )
        files = _IndexFiles(pdq, opened, video, after[0], after[1])
        self._base_other = data.other
        return files

    def _write_exact(
        self,
        delta: dict[str, dict[bytes, list[int]]],
        base: dict[str, ExactIndex],
        tag: str,
    ) -> dict[str, str]:
        names: dict[str, str] = {}
        for kind in sorted(set(delta) | set(base)):
            width = _exact_width(kind)
            if width is None:
                continue
            ids: list[npt.NDArray[np.int64]] = []
            values: list[npt.NDArray[Any]] = []
            if kind in base:
                ids.append(np.asarray(base[kind].ids))
                values.append(np.asarray(base[kind].values))
            d = delta.get(kind, {})
            if d:
                keys = [k for k, pks in d.items() for _ in pks]
                ids.append(np.array([p for pks in d.values() for p in pks], np.int64))
                values.append(np.array(keys, dtype=f"S{width}"))
            all_values = np.concatenate(values) if values else np.zeros(0, f"S{width}")
            raw = np.frombuffer(all_values.tobytes(), np.uint8).reshape(-1, width)
            index = ExactIndex.build(
                np.concatenate(ids) if ids else np.zeros(0, np.int64), raw, width
            )
            name = f"exact-{kind}-{tag}.tpi"
            index.save(self.dir / name)
            names[kind] = name
        return names

    def _write_meta(
        self,
        after: tuple[int, int],
        generation: int,
        exact: dict[str, str],
        video: str,
        other_types: list[str],
    ) -> None:
        meta = {
            "format": META_FORMAT,
            "instance": self.instance,
            "seq": after[0],
            "after_id": after[1],
            "pdq_generation": generation,
            "exact": exact,
            "video": video,
            "other_types": other_types,
        }
        _write_json_atomic(self._meta_path(), meta)
        keep = {*exact.values(), video}
        for p in [*self.dir.glob("exact-*.tpi"), *self.dir.glob("vpdq-*.tpi")]:
            if p.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # -- freshness --------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> int:
        """Feed signals committed since the last look into the index; returns how many.

        Called by every match method (at most every ``poll_interval`` seconds).
        """
        now = time.monotonic()
        if not force and now - self._last_poll < self.poll_interval:
            return 0
        added = 0
        with self._lock:
            with self.db.sessions() as s:
                while True:
                    page = repo.signals_page(s, (self._seq, self._after_id), limit=PAGE)
                    if page:
                        self._apply([c for c, _ in page])
                        last, row_id = page[-1]
                        self._seq, self._after_id = last.seq, row_id
                        added += len(page)
                    if len(page) < PAGE:
                        break
                if force or now - self._banks_at >= BANKS_REFRESH_SECONDS or added:
                    self._banks = [repo.to_bank(b) for b in repo.list_banks(s)]
                    self._banks_at = now
            self._last_poll = now
            if self._delta.count >= self.merge_after:
                self._start_merge()
        return added

    def _apply(self, changes: Sequence[repo.SignalChange]) -> None:
        before_video = len(self._delta.video)
        pdq_ids: list[int] = []
        pdq_values: list[str] = []
        for change in changes:
            if change.type == "pdq":
                pdq_ids.append(change.entry_pk)
                pdq_values.append(change.value)
                self._delta.count += 1
            else:
                self._delta.add(change)
        if pdq_ids:
            self._files.pdq.add(np.asarray(pdq_ids, np.int64), _pdq_rows(pdq_values))
        if len(self._delta.video) != before_video:
            self._video_delta_index = VideoIndex.build(self._all_delta_video())

    def _all_delta_video(self) -> list[tuple[int, list[VideoFrame]]]:
        merging = self._merging.video if self._merging is not None else []
        return [*merging, *self._delta.video]

    # -- merge ----------------------------------------------------------------------------------

    def _start_merge(self) -> None:
        if self._merge_thread is not None and self._merge_thread.is_alive():
            return
        self._merge_thread = threading.Thread(
            target=self.merge, name="tipline-matcher-merge", daemon=True
        )
        self._merge_thread.start()

    def merge(self) -> None:
        """Fold the delta (after catching up with the database) into new base files now
        (runs on a thread when automatic)."""
        if threading.current_thread() is not self._merge_thread:
            self.refresh(force=True)
        with _dir_lock(self.dir):
            with self._lock:
                if self._merging is not None:
                    return
                snapshot = self._delta
                self._merging = snapshot
                self._delta = _Collected()
                after = (self._seq, self._after_id)
                files = self._files
            try:
                files.pdq.merge()  # folds every pdq hash added so far (>= the snapshot)
                tag = f"{time.time_ns():x}-{os.getpid()}"
                exact_names = self._write_exact(snapshot.exact, files.exact, tag)
                video_name = f"vpdq-{tag}.tpi"
                base_video = self._video_items(files.video)
                VideoIndex.build([*base_video, *snapshot.video]).save(self.dir / video_name)
                exact = {k: ExactIndex.open(self.dir / v) for k, v in exact_names.items()}
                video = VideoIndex.open(self.dir / video_name)
                other_types = sorted(set(self._base_other) | set(snapshot.other))
                self._write_meta(after, files.pdq.generation, exact_names, video_name, other_types)
            except Exception:
                with self._lock:
                    # keep the snapshot searchable: put it back in front of the delta
                    merged = self._merging
                    self._merging = None
                    if merged is not None:
                        self._requeue(merged)
                raise
            with self._lock:
                other = dict(self._base_other)
                for kind, items in snapshot.other.items():
                    other.setdefault(kind, []).extend(items)
                self._base_other = other
                self._files = _IndexFiles(files.pdq, exact, video, *after)
                self._merging = None
                self._video_delta_index = (
                    VideoIndex.build(self._delta.video) if self._delta.video else None
                )

    def _requeue(self, merged: _Collected) -> None:
        for kind, values in merged.exact.items():
            target = self._delta.exact.setdefault(kind, {})
            for key, pks in values.items():
                target.setdefault(key, []).extend(pks)
        self._delta.video[:0] = merged.video
        for kind, items in merged.other.items():
            self._delta.other.setdefault(kind, [])[:0] = items
        self._delta.count += merged.count

    def _video_items(self, video: VideoIndex | None) -> list[tuple[int, list[VideoFrame]]]:
        """Base videos back as (id, frames) from the database (videos are few)."""
        if video is None or len(video) == 0:
            return []
        ids = [int(v) for v in video.video_ids]
        out: list[tuple[int, list[VideoFrame]]] = []
        with self.db.sessions() as s:
            sigs = repo.signals_of(s, ids)
        for pk in ids:
            for sig in sigs.get(pk, []):
                if sig.type == "vpdq":
                    with contextlib.suppress(ImportFormatError, HashFormatError):
                        out.append((pk, _frames_of(sig.value)))
        return out

    # -- matching ---------------------------------------------------------------------------

    def _threshold(self, bank: Bank, kind: str) -> int:
        if kind in bank.thresholds:
            return int(bank.thresholds[kind])
        return int(get_signal_type(kind).default_threshold)

    def _radius(self, kind: str) -> int:
        default = int(get_signal_type(kind).default_threshold)
        values = [self._threshold(b, kind) for b in self._banks if b.enabled]
        return max([default, *values])

    def _candidates(self, signal: Signal) -> list[tuple[int, int, float | None, float | None]]:
        """(entry pk, distance, query %, compared %) for every index hit of ``signal``."""
        kind = signal.type
        out: list[tuple[int, int, float | None, float | None]] = []
        files = self._files
        if kind == "pdq":
            radius = min(self._radius(kind), 256)
            ids, dist = files.pdq.search(signal.value, radius)
            return [(int(i), int(d), None, None) for i, d in zip(ids, dist, strict=True)]
        if kind == "vpdq":
            frames = list(signal.frames) or _frames_of(signal.value)
            radius = self._radius(kind)
            found: dict[int, tuple[float, float]] = {}
            for index in (files.video, self._video_delta_index):
                if index is None:
                    continue
                for m in index.search(frames, VPDQ_FRAME_DISTANCE):
                    found[m.video_id] = (m.query_percent, m.compared_percent)
            for pk, (q, c) in found.items():
                distance = 100 - math.floor(min(q, c))
                if distance <= radius:
                    out.append((pk, distance, q, c))
            return out
        width = _exact_width(kind)
        if width is not None:
            key = bytes.fromhex(signal.value)
            pks: list[int] = []
            if kind in files.exact:
                pks.extend(int(x) for x in files.exact[kind].search(key))
            for collected in (self._merging, self._delta):
                if collected is not None:
                    pks.extend(collected.exact.get(kind, {}).get(key, []))
            return [(pk, 0, None, None) for pk in dict.fromkeys(pks)]
        signal_type = get_signal_type(kind)
        radius = self._radius(kind)
        items = [
            *self._base_other.get(kind, []),
            *(self._merging.other.get(kind, []) if self._merging else []),
            *self._delta.other.get(kind, []),
        ]
        for row, distance in signal_type.match(signal.value, [v for _, v in items], radius):
            out.append((items[row][0], distance, None, None))
        return out

    def match_signals(
        self,
        signals: Sequence[Signal],
        *,
        session: Session | None = None,
        entry_pks: dict[tuple[str, str], int] | None = None,
        tenant: str | None = None,
    ) -> list[Match]:
        """Matches of one media item's signals, best first.

        Each bank entry appears once per signal type (its smallest distance). When an
        allow-bank entry matches, the matches it applies to are returned with
        ``suppressed_by`` and ``suppressed_reason`` set (callers act only on
        unsuppressed matches); see :func:`allow_applies` for which ones, given the
        caller's ``tenant`` (None: a caller bound to no tenant, e.g. the CLI).
        Index hits are read from the database in ``session`` when given (e.g. the
        caller's transaction that then records the outcome), else on an autocommit
        connection (one read, no transaction round trips). ``entry_pks``, when given,
        receives (bank, entry id) -> the entry's integer id for every match.
        """
        self.refresh()
        with self._lock:
            hits: list[tuple[Signal, int, int, float | None, float | None]] = []
            for signal in signals:
                for pk, dist, q, c in self._candidates(signal):
                    hits.append((signal, pk, dist, q, c))
        if not hits:
            return []
        pks = sorted({h[1] for h in hits})
        if session is not None:
            entries = repo.hits(session, pks)
        else:
            with self.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                entries = repo.hits(conn, pks)
        best: dict[tuple[str, str, str], Match] = {}
        owners: dict[str, str | None] = {}  # bank name -> tenant, of the matches kept
        allows: list[tuple[Match, str, str | None]] = []  # (hit, reason, allow bank tenant)
        for signal, pk, dist, q, c in hits:
            hit = entries.get(pk)
            if hit is None or hit.entry.disabled or not hit.bank.enabled:
                continue
            if dist > self._threshold(hit.bank, signal.type):
                continue
            matched = next((x.value for x in hit.entry.signals if x.type == signal.type), None)
            if signal.type == "pdq":
                matched = _closest(signal.value, hit.entry.signals, dist) or matched
            m = Match(
                bank=hit.bank.name,
                entry_id=hit.entry.entry_id,
                signal_type=signal.type,
                distance=dist,
                labels=hit.entry.labels,
                query_value=signal.value if signal.type != "vpdq" else None,
                matched_value=matched if signal.type != "vpdq" else None,
                query_match_percent=q,
                compared_match_percent=c,
            )
            if hit.bank.is_allow_bank:
                reason = hit.entry.source or hit.bank.description or "allow-listed"
                allows.append((m, reason, hit.bank.tenant))
                continue
            owners[m.bank] = hit.bank.tenant
            if self.only_banks is not None and hit.bank.name not in self.only_banks:
                continue
            key = (m.bank, m.entry_id, m.signal_type)
            if key not in best or m.distance < best[key].distance:
                best[key] = m
                if entry_pks is not None:
                    entry_pks[(m.bank, m.entry_id)] = pk
        out = sorted(best.values(), key=lambda m: (m.distance, m.bank, m.entry_id, m.signal_type))
        if allows:
            allows.sort(key=lambda a: (a[0].distance, a[0].bank, a[0].entry_id))
            out = [_apply_allow(m, owners.get(m.bank), allows, tenant) for m in out]
        return out

    def match_hash(
        self,
        type: str,
        value: str,
        *,
        entry_pks: dict[tuple[str, str], int] | None = None,
        tenant: str | None = None,
    ) -> list[Match]:
        """Matches of one hash given as type name and value (validated); ``entry_pks``
        and ``tenant`` as for :meth:`match_signals`."""
        signal_type = get_signal_type(type.strip().lower())
        canonical = signal_type.parse(value)
        signal = Signal(type=signal_type.name, value=canonical)
        return self.match_signals([signal], entry_pks=entry_pks, tenant=tenant)

    def searched_banks(self) -> list[str]:
        """Names of the enabled banks whose matches this matcher reports (allow-banks,
        which only suppress, left out)."""
        self.refresh()
        with self._lock:
            return sorted(
                b.name
                for b in self._banks
                if b.enabled
                and not b.is_allow_bank
                and (self.only_banks is None or b.name in self.only_banks)
            )

    def stats(self) -> dict[str, Any]:
        """Sizes of the index parts (for ``tipline bank list`` / health pages)."""
        files = self._files
        return {
            "seq": self._seq,
            "pdq": len(files.pdq),
            "pdq_delta": files.pdq.delta_size,
            "exact": {k: len(v) for k, v in files.exact.items()},
            "video": len(files.video) if files.video is not None else 0,
            "delta": self._delta.count,
        }


def _closest(query: str, signals: Iterable[Any], distance: int) -> str | None:
    from tipline.signals.hexbits import hamming_hex

    for s in signals:
        if s.type == "pdq" and hamming_hex(query, s.value) == distance:
            return str(s.value)
    return None


def allow_applies(
    allow_tenant: str | None, match_tenant: str | None, caller_tenant: str | None
) -> bool:
    """Whether an allow bank of ``allow_tenant`` suppresses a match in a bank of
    ``match_tenant`` for a caller of ``caller_tenant`` (None: shared / no tenant).

    An allow bank only ever suppresses its own tenant's matches: a shared allow bank
    applies to everyone; a tenant's allow bank applies to what that tenant's keys are
    told (its own and shared banks' matches) and, for callers bound to no tenant (admin
    keys, the CLI), to matches in that tenant's banks only.
    """
    if allow_tenant is None:
        return True
    owner = caller_tenant if caller_tenant is not None else match_tenant
    return allow_tenant == owner


def _apply_allow(
    m: Match,
    match_tenant: str | None,
    allows: Sequence[tuple[Match, str, str | None]],
    caller_tenant: str | None,
) -> Match:
    """``m`` suppressed by the closest allow hit (``allows`` is sorted) that applies."""
    from dataclasses import replace

    for allow, reason, allow_tenant in allows:
        if allow_applies(allow_tenant, match_tenant, caller_tenant):
            by = f"{allow.bank}/{allow.entry_id}"
            return replace(m, suppressed_by=by, suppressed_reason=reason)
    return m


def open_matcher(database_url: str | None = None, *, banks: Sequence[str] | None = None) -> Matcher:
    """Factory for worker processes (``module:function`` loaders): a Matcher on the
    configured database and index folder."""
    return Matcher.open(database_url, banks=banks)
