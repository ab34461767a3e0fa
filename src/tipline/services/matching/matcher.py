"""The Matcher: a media item's signals in, matches against every enabled bank out.

* **Indexes.** Each signal type's :class:`~tipline.signals.base.IndexKind` picks its
  index (:mod:`.index_files`): a Hamming radius LiveIndex (PDQ), an exact-value index
  (digests), a vPDQ frame index, or the type's own brute-force ``match``. A plugin type
  gets its index by declaring the kind; nothing here names a signal type.
* **Freshness.** Before answering, the Matcher reads the database's change marks (the
  change sequence and the count of bank-list changes, one tiny query, at most every
  ``poll_interval`` seconds, 0.2 by default); only when they moved does it read the
  signal and region rows above the last ones it has seen (indexed queries) into the
  index's delta, and the bank list when that changed. A hash committed by any process
  is therefore matchable within ``poll_interval`` seconds (at once with
  ``poll_interval=0``, or after :meth:`Matcher.refresh`). A writer that shares the
  Matcher hands it the rows it committed (:meth:`Matcher.adopt`) instead of a re-read.
* **Disables, thresholds, bank switches** (including a bank's ``normalize`` switch for
  the query's normalised variants) are read from the database for every hit
  when turning index hits into matches, so a disable takes effect on the very next call.
* **Merge.** When the delta grows past ``merge_after`` signals a background thread folds
  it into new base files (searches continue on the old ones meanwhile).
* **System banks.** A bank whose name starts with ``system:`` (see
  :func:`~tipline.banks.model.is_system_bank`) holds a service's own records, not known
  material (the clearinghouse's index of the files it received):
  its hits are reported only by a Matcher opened with ``system_banks=True``, and its
  thresholds never widen the search of other Matchers.
* **Allow banks.** A hit in an allow bank suppresses the other matches of the same
  call (one media item) that belong to the allow bank's tenant (:func:`allow_applies`;
  a shared allow bank applies to all); suppressed matches are returned flagged with
  ``suppressed_by`` and ``suppressed_reason`` (the allow entry's source, else the allow
  bank's description).
* **Robust tier, bank side.** Every PDQ query signal is also searched among the region
  descriptors (crops and small rotations) of entries added from media
  (:mod:`tipline.services.regions`), at the bank's PDQ threshold, in banks with
  ``region_matching`` on; such matches carry ``tier="region"`` and the region's name
  and come after every exact-tier match (an entry matched by both is reported once,
  by the exact tier).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from tipline.banks.model import Bank, is_system_bank
from tipline.config import Settings, get_settings
from tipline.index import VideoIndex
from tipline.services.database import Database, open_database
from tipline.services.matching.index_files import PAGE, IndexDirectory, IndexFiles
from tipline.services.matching.match import Match
from tipline.services.matching.signal_rows import (
    SignalRows,
    exact_key,
    hamming_rows,
    video_frames,
)
from tipline.services.regions.index import RegionHit, RegionIndex
from tipline.signals.base import (
    IndexKind,
    Signal,
    SignalType,
    VideoFrame,
    get_signal_type,
    index_kind,
)
from tipline.signals.normalize import is_normalized
from tipline.store import bank_repository as repo
from tipline.store import region_repository as region_repo

#: Delta size (signals) that starts a background merge.
DEFAULT_MERGE_AFTER = 50_000
#: Default longest time (seconds) a match may rely on the last look at the database for
#: new signals; keeps a database round trip off most lookups, well inside the 1 s promise.
DEFAULT_POLL_SECONDS = 0.2
#: A row id above every row id: the keyset after a sequence number whose rows were all read
_AFTER_ALL = 2**63 - 1
#: Frame distance (bits) used by vPDQ frame matching.
VPDQ_FRAME_DISTANCE = 31

#: (entry pk, distance, query %, compared %) of one index hit
Candidate = tuple[int, int, float | None, float | None]
#: (query signal, entry pk, distance, query %, compared %, region or None) of one hit
_Hit = tuple[Signal, int, int, float | None, float | None, RegionHit | None]
#: Query signal type searched against the bank-side region descriptors.
REGION_QUERY_TYPE = "pdq"
#: ``Match.tier`` of a match through a region descriptor (the bank-side robust tier).
REGION_TIER = "region"


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
        system_banks: bool = False,
    ) -> None:
        """Open (or build) the index in ``index_dir`` for ``db`` and catch up.

        ``poll_interval`` (seconds) is the longest a call may rely on the last look at
        the database for new signals (0 = look on every call). ``banks`` restricts
        matches to those banks (allow banks always apply); ``system_banks`` reports
        hits in system banks too (:func:`~tipline.banks.model.is_system_bank`).
        """
        self.db = db
        self.dir = Path(index_dir)
        self.poll_interval = poll_interval
        self.merge_after = merge_after
        self.only_banks = frozenset(banks) if banks is not None else None
        self.system_banks = system_banks
        self._owns_db = owns_db
        self._lock = threading.RLock()
        self._merge_thread: threading.Thread | None = None
        self._last_poll = 0.0
        #: unix time the index last caught up with the database
        self._synced_at = 0.0
        self._banks: list[Bank] = []
        #: the database's change marks the index and bank list were last read at (None:
        #: never); every signal and region row of a sequence up to marks[0] is in the index
        self._marks: repo.ChangeMarks | None = None
        with db.sessions() as s:
            self.instance = repo.instance_id(s)
        self._index = IndexDirectory(db, self.dir, self.instance)
        self._files: IndexFiles = self._index.open_or_build()
        #: True when the index files were unusable and rebuilt on open
        self.rebuilt = self._index.rebuilt
        self._seq = self._files.seq
        self._after_id = self._files.after_id
        self._delta = SignalRows()
        self._merging: SignalRows | None = None
        self._video_delta: dict[str, VideoIndex] = {}
        #: the bank-side robust tier's descriptors (searched with every PDQ query)
        self._regions = RegionIndex(self.dir / "regions", self.instance)
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

    # -- freshness ----------------------------------------------------------------------

    def refresh(
        self,
        *,
        force: bool = False,
        session: Session | None = None,
        marks: repo.ChangeMarks | None = None,
    ) -> int:
        """Feed signals committed since the last look into the index; returns how many.

        Called by every match method (at most every ``poll_interval`` seconds). Reads
        in ``session`` when given (a caller's transaction: no session of its own, no
        extra connection check-out), else in a session of its own. ``marks``: the
        :func:`~tipline.store.bank_repository.change_marks` the caller just read in
        ``session`` (folded into a statement of its own), saving that read.

        Nothing but the marks is read while they stand where they stood at the last
        read (correct because every committed signal, region or bank write moves them,
        and they are read before the rows they vouch for).
        """
        now = time.monotonic()
        if not force and now - self._last_poll < self.poll_interval:
            return 0
        added = 0
        with self._lock:
            with nullcontext(session) if session is not None else self.db.sessions() as s:
                seen = marks if marks is not None else repo.change_marks(s)
                if seen != self._marks:
                    added = self._read_changes(s)
                    if self._marks is None or seen[1] != self._marks[1]:
                        self._banks = repo.bank_values(s)
                    self._marks = seen
            self._last_poll = now
            self._synced_at = time.time()
            if self._delta.count >= self.merge_after:
                self._start_merge()
        return added

    def _read_changes(self, s: Session) -> int:
        """Signal and region rows after the last ones read (call with the lock held)."""
        added = 0
        while True:
            page = repo.signals_page(s, (self._seq, self._after_id), limit=PAGE)
            if page:
                self._apply([c for c, _ in page])
                last, row_id = page[-1]
                self._seq, self._after_id = last.seq, row_id
                added += len(page)
            if len(page) < PAGE:
                break
        self._regions.refresh(s)
        return added

    def adopt(self, changes: Sequence[repo.SignalChange]) -> bool:
        """Take signal rows the caller wrote and committed (in change-sequence order,
        every row of their sequence numbers, as
        :func:`~tipline.store.bank_repository.insert_entries` hands them out) without
        reading them back; True when taken.

        Taken only when they directly follow the marks last read (their first sequence
        number is the next one after it): sequence numbers are handed out in commit
        order, so nothing else was committed in between and the index then holds
        exactly what a re-read would give. Otherwise (another writer came first, or
        the Matcher read past them already) nothing changes and the next
        :meth:`refresh` reads them as usual."""
        if not changes:
            return False
        with self._lock:
            marks = self._marks
            if marks is None or changes[0].seq != marks[0] + 1:
                return False
            self._apply(changes)
            last = changes[-1].seq
            # every row of sequence ``last`` is ours: the keyset goes past all of them
            self._seq, self._after_id = last, _AFTER_ALL
            self._marks = (last, marks[1])
            if self._delta.count >= self.merge_after:
                self._start_merge()
        return True

    def _apply(self, changes: Sequence[repo.SignalChange]) -> None:
        """New rows: HAMMING types with a LiveIndex straight into it, the rest into the
        delta (and the delta's vPDQ frame index rebuilt for types that got videos)."""
        live = self._files.hamming
        videos_before = {name: len(v) for name, v in self._delta.video.items()}
        added: dict[str, tuple[list[int], list[str]]] = {}
        for change in changes:
            if change.type in live:
                ids, values = added.setdefault(change.type, ([], []))
                ids.append(change.entry_pk)
                values.append(change.value)
                self._delta.count += 1
            else:
                self._delta.add(change)
        for name, (ids, values) in added.items():
            live[name].add(np.asarray(ids, np.int64), hamming_rows(values))
        for name, videos in self._delta.video.items():
            if len(videos) != videos_before.get(name, 0):
                self._video_delta[name] = VideoIndex.build(self._all_delta_video(name))

    def _all_delta_video(self, name: str) -> list[tuple[int, list[VideoFrame]]]:
        merging = self._merging.video.get(name, []) if self._merging is not None else []
        return [*merging, *self._delta.video.get(name, [])]

    # -- merge --------------------------------------------------------------------------

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
        with self._index.lock():
            with self._lock:
                if self._merging is not None:
                    return
                snapshot = self._delta
                self._merging = snapshot
                self._delta = SignalRows()
                after = (self._seq, self._after_id)
                files = self._files
            try:
                merged = self._index.write_merged(files, snapshot, after)
            except Exception:
                with self._lock:
                    # keep the snapshot searchable: put it back in front of the delta
                    failed = self._merging
                    self._merging = None
                    if failed is not None:
                        self._delta.prepend(failed)
                raise
            with self._lock:
                self._files = merged
                self._merging = None
                self._video_delta = {
                    name: VideoIndex.build(videos)
                    for name, videos in self._delta.video.items()
                    if videos
                }

    # -- matching -----------------------------------------------------------------------

    def _threshold(self, bank: Bank, kind: str) -> int:
        if kind in bank.thresholds:
            return int(bank.thresholds[kind])
        return int(get_signal_type(kind).default_threshold)

    def _searched(self, bank: Bank) -> bool:
        return bank.enabled and (self.system_banks or not is_system_bank(bank.name))

    def _radius(self, kind: str) -> int:
        default = int(get_signal_type(kind).default_threshold)
        values = [self._threshold(b, kind) for b in self._banks if self._searched(b)]
        return max([default, *values])

    def _candidates(self, signal: Signal) -> list[Candidate]:
        """Every index hit of ``signal``, through its type's index kind."""
        signal_type = get_signal_type(signal.type)
        kind = index_kind(signal_type)
        if kind is IndexKind.HAMMING:
            return self._hamming_candidates(signal_type, signal)
        if kind is IndexKind.EXACT:
            return self._exact_candidates(signal_type, signal)
        if kind is IndexKind.VIDEO:
            return self._video_candidates(signal_type, signal)
        return self._brute_force_candidates(signal_type, signal)

    def _hamming_candidates(self, signal_type: SignalType, signal: Signal) -> list[Candidate]:
        name = signal.type
        width = int(getattr(signal_type, "n_bytes", 32))
        radius = min(self._radius(name), 8 * width)
        query = bytes.fromhex(signal.value).ljust(32, b"\0")
        out: list[Candidate] = []
        live = self._files.hamming.get(name)
        if live is not None:
            ids, dist = live.search(query, radius)
            out.extend((int(i), int(d), None, None) for i, d in zip(ids, dist, strict=True))
        for rows in (self._merging, self._delta):
            if rows is None or name not in rows.hamming:
                continue
            q = np.frombuffer(query, np.uint8)
            ids, hashes = rows.hamming[name].arrays()
            dist = np.unpackbits(hashes ^ q, axis=1).sum(axis=1)
            for i in np.flatnonzero(dist <= radius).tolist():
                out.append((int(ids[i]), int(dist[i]), None, None))
        return out

    def _exact_candidates(self, signal_type: SignalType, signal: Signal) -> list[Candidate]:
        name = signal.type
        key = exact_key(signal_type, signal.value)
        pks: list[int] = []
        if name in self._files.exact:
            pks.extend(int(x) for x in self._files.exact[name].search(key))
        for rows in (self._merging, self._delta):
            if rows is not None:
                pks.extend(rows.exact.get(name, {}).get(key, []))
        return [(pk, 0, None, None) for pk in dict.fromkeys(pks)]

    def _video_candidates(self, signal_type: SignalType, signal: Signal) -> list[Candidate]:
        name = signal.type
        frames = list(signal.frames) or video_frames(signal_type, signal.value)
        radius = self._radius(name)
        found: dict[int, tuple[float, float]] = {}
        for index in (self._files.video.get(name), self._video_delta.get(name)):
            if index is None:
                continue
            for m in index.search(frames, VPDQ_FRAME_DISTANCE):
                found[m.video_id] = (m.query_percent, m.compared_percent)
        out: list[Candidate] = []
        for pk, (q, c) in found.items():
            distance = 100 - math.floor(min(q, c))
            if distance <= radius:
                out.append((pk, distance, q, c))
        return out

    def _brute_force_candidates(self, signal_type: SignalType, signal: Signal) -> list[Candidate]:
        name = signal.type
        items = [
            *self._files.other.get(name, []),
            *(self._merging.other.get(name, []) if self._merging else []),
            *self._delta.other.get(name, []),
        ]
        found = signal_type.match(signal.value, [v for _, v in items], self._radius(name))
        return [(items[row][0], distance, None, None) for row, distance in found]

    def _drop_stale_regions(
        self,
        best: dict[tuple[str, str, str], Match],
        pk_of: dict[tuple[str, str, str], int],
        session: Session | None,
    ) -> None:
        """Drop region-tier matches whose descriptor is no longer stored: the region
        index keeps rows of deleted entries, and an entry pk may be given again."""
        pairs = {k: (pk_of[k], m.matched_value or "") for k, m in best.items() if m.tier}
        if not pairs:
            return
        wanted = list(pairs.values())
        if session is not None:
            stored = region_repo.stored_pairs(session, wanted)
        else:
            with self.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                stored = region_repo.stored_pairs(conn, wanted)
        for key, pair in pairs.items():
            if pair not in stored:
                del best[key]

    def match_signals(
        self,
        signals: Sequence[Signal],
        *,
        session: Session | None = None,
        entry_pks: dict[tuple[str, str], int] | None = None,
        tenant: str | None = None,
    ) -> list[Match]:
        """Matches of one media item's signals, best first: exact-tier matches before
        robust-tier (region) ones; among each, matches of the query as given (exact PDQ)
        before matches of its variants, then by distance.

        Each bank entry appears once per signal type (the query as given when it
        matches, else its variant at the smallest distance). A normalised variant
        (:data:`tipline.signals.normalize.VARIANTS`) matches only in banks whose
        ``normalize`` switch is on. When an
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
            hits = self._hits(signals)
        if not hits:
            return []
        entries = self._entries(sorted({h[1] for h in hits}), session)
        return self._matches(hits, entries, session, entry_pks, tenant)

    def match_many(
        self, items: Sequence[Sequence[Signal]], *, session: Session | None = None
    ) -> list[list[Match]]:
        """:meth:`match_signals` of several media items (each its own list of signals,
        answered in the same order), with one database read of the entries hit by any
        of them."""
        self.refresh()
        with self._lock:
            found = [self._hits(signals) for signals in items]
        pks = sorted({h[1] for hits in found for h in hits})
        entries = self._entries(pks, session) if pks else {}
        return [self._matches(hits, entries, session, None, None) if hits else [] for hits in found]

    def _hits(self, signals: Sequence[Signal]) -> list[_Hit]:
        """Index hits of one item's signals (call with the lock held)."""
        hits: list[_Hit] = []
        for signal in signals:
            for pk, dist, q, c in self._candidates(signal):
                hits.append((signal, pk, dist, q, c, None))
            if signal.type == REGION_QUERY_TYPE:
                for rh in self._regions.search(signal.value, self._radius(signal.type)):
                    hits.append((signal, rh.entry_pk, rh.distance, None, None, rh))
        return hits

    def _entries(self, pks: list[int], session: Session | None) -> dict[int, repo.EntryHit]:
        """The entries (and banks) of ``pks``, read in ``session`` or on an autocommit
        connection."""
        if session is not None:
            return repo.hits(session, pks)
        with self.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return repo.hits(conn, pks)

    def _matches(
        self,
        hits: list[_Hit],
        entries: dict[int, repo.EntryHit],
        session: Session | None,
        entry_pks: dict[tuple[str, str], int] | None,
        tenant: str | None,
    ) -> list[Match]:
        """The matches of one item's index ``hits`` (see :meth:`match_signals`)."""
        best: dict[tuple[str, str, str], Match] = {}
        pk_of: dict[tuple[str, str, str], int] = {}
        owners: dict[str, str | None] = {}  # bank name -> tenant, of the matches kept
        allows: list[tuple[Match, str, str | None]] = []  # (hit, reason, allow bank tenant)
        for signal, pk, dist, q, c, region in hits:
            hit = entries.get(pk)
            if hit is None or hit.entry.disabled or not self._searched(hit.bank):
                continue
            if dist > self._threshold(hit.bank, signal.type):
                continue
            if not hit.bank.normalize and is_normalized(signal.variant):
                continue
            if region is not None and not hit.bank.region_matching:
                continue
            signal_type = get_signal_type(signal.type)
            by_frames = index_kind(signal_type) is IndexKind.VIDEO
            if region is not None:
                matched: str | None = region.value
            elif by_frames:
                matched = None
            else:
                matched = _closest(signal_type, signal, hit, dist)
            m = Match(
                bank=hit.bank.name,
                entry_id=hit.entry.entry_id,
                signal_type=signal.type,
                distance=dist,
                labels=hit.entry.labels,
                query_value=None if by_frames else signal.value,
                matched_value=matched,
                query_match_percent=q,
                compared_match_percent=c,
                variant=signal.variant,
                tier=None if region is None else REGION_TIER,
                region=None if region is None else region.region,
            )
            if hit.bank.is_allow_bank:
                reason = hit.entry.source or hit.bank.description or "allow-listed"
                allows.append((m, reason, hit.bank.tenant))
                continue
            owners[m.bank] = hit.bank.tenant
            if self.only_banks is not None and hit.bank.name not in self.only_banks:
                continue
            key = (m.bank, m.entry_id, m.signal_type)
            if key not in best or _rank(m) < _rank(best[key]):
                best[key] = m
                pk_of[key] = pk
        self._drop_stale_regions(best, pk_of, session)
        if entry_pks is not None:
            for key, pk in pk_of.items():
                if key in best:
                    entry_pks[key[:2]] = pk
        out = sorted(
            best.values(),
            key=lambda m: (*_rank(m), m.bank, m.entry_id, m.signal_type),
        )
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

    def bank(self, name: str) -> Bank | None:
        """The bank ``name`` as of the last refresh (its id, thresholds and switches),
        or None when it did not exist then."""
        with self._lock:
            return next((b for b in self._banks if b.name == name), None)

    def searched_banks(self) -> list[str]:
        """Names of the enabled banks whose matches this matcher reports (allow-banks,
        which only suppress, left out)."""
        self.refresh()
        with self._lock:
            return sorted(
                b.name
                for b in self._banks
                if self._searched(b)
                and not b.is_allow_bank
                and (self.only_banks is None or b.name in self.only_banks)
            )

    def stats(self) -> dict[str, Any]:
        """Sizes of the index parts (for ``tipline bank list`` / health pages)."""
        files = self._files
        pdq = files.hamming.get("pdq")
        return {
            "seq": self._seq,
            "pdq": len(pdq) if pdq is not None else 0,
            "pdq_delta": pdq.delta_size if pdq is not None else 0,
            "hamming": {k: len(v) for k, v in files.hamming.items()},
            "exact": {k: len(v) for k, v in files.exact.items()},
            "video": sum(len(v) for v in files.video.values()),
            "brute_force": {k: len(v) for k, v in files.other.items()},
            "delta": self._delta.count,
        }

    def sizes(self) -> dict[str, int]:
        """Signal type -> hashes the index holds (base files, delta and a running merge,
        each counted once; disabled and deleted entries count until the next rebuild)."""
        with self._lock:
            files = self._files
            out: dict[str, int] = {k: len(v) for k, v in files.hamming.items()}
            for name, exact in files.exact.items():
                out[name] = out.get(name, 0) + len(exact)
            for name, video in files.video.items():
                out[name] = out.get(name, 0) + len(video)
            for name, items in files.other.items():
                out[name] = out.get(name, 0) + len(items)
            for rows in (self._merging, self._delta):
                if rows is None:
                    continue
                for name, hamming in rows.hamming.items():
                    out[name] = out.get(name, 0) + len(hamming)
                for name, keys in rows.exact.items():
                    out[name] = out.get(name, 0) + sum(len(p) for p in keys.values())
                for name, videos in rows.video.items():
                    out[name] = out.get(name, 0) + len(videos)
                for name, items in rows.other.items():
                    out[name] = out.get(name, 0) + len(items)
            return out

    @property
    def synced_at(self) -> float:
        """Unix time the index last caught up with the database (every change committed
        before then is in it)."""
        return self._synced_at


def _closest(
    signal_type: SignalType, signal: Signal, hit: repo.EntryHit, distance: int
) -> str | None:
    """The entry's value of the signal's type at ``distance`` from the query (an entry
    may hold several values of one type), else its first value of that type."""
    values = [x.value for x in hit.entry.signals if x.type == signal.type]
    if len(values) > 1 and index_kind(signal_type) is IndexKind.HAMMING:
        for value in values:
            if signal_type.distance(signal.value, value) == distance:
                return str(value)
    return str(values[0]) if values else None


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
    for allow, reason, allow_tenant in allows:
        if allow_applies(allow_tenant, match_tenant, caller_tenant):
            by = f"{allow.bank}/{allow.entry_id}"
            return replace(m, suppressed_by=by, suppressed_reason=reason)
    return m


def open_matcher(database_url: str | None = None, *, banks: Sequence[str] | None = None) -> Matcher:
    """Factory for worker processes (``module:function`` loaders): a Matcher on the
    configured database and index folder."""
    return Matcher.open(database_url, banks=banks)


def _rank(m: Match) -> tuple[int, int, int]:
    """Order of matches, and which of two matches of one entry is reported: an
    exact-tier match before a robust-tier one (:data:`REGION_TIER`), the query as given
    (exact PDQ) before any of its variants, then the smaller distance."""
    return (0 if m.tier is None else 1, 0 if m.variant in (None, "orig") else 1, m.distance)
