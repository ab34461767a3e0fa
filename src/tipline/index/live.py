"""A PDQ index that changes while it is searched: base segment + delta + tombstones.

Directory layout::

    <dir>/CURRENT                 the current generation number (written atomically)
    <dir>/pdq-<generation>.tpi    the base segment of that generation (memory-mapped)

* :meth:`LiveIndex.add` appends to an in-memory delta that is searched by linear scan,
  so a new hash matches on the very next search.
* :meth:`LiveIndex.disable` / :meth:`LiveIndex.enable` edit a tombstone set that
  filters every result immediately; tombstones are stored in the next base segment.
* :meth:`LiveIndex.merge` builds a new base from base + delta (optionally on a
  background thread while searches continue), writes it atomically, bumps the
  generation and swaps it in. Other processes call :meth:`LiveIndex.refresh` (cheap:
  one small file read) to pick up a newer generation.

Searches read an immutable snapshot, so they never block on a merge.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.errors import IndexCorruptError, InputError
from tipline.index.files import fsync_dir, read_segment
from tipline.index.pdq import (
    DistArray,
    IdArray,
    PdqIndex,
    Query,
    brute_force_rows,
    check_radius,
    finalize,
    hashes_to_words,
    query_words,
)

log = logging.getLogger(__name__)
_KIND = "pdq"
_CURRENT = "CURRENT"
#: Delta size (hashes) at which :meth:`LiveIndex.add` starts a background merge. The
#: delta is scanned linearly (~0.1 ms per 30,000 hashes per lookup), so it is kept small.
AUTO_MERGE_AT = 30_000


def _segment_name(generation: int) -> str:
    return f"pdq-{generation:08d}.tpi"


def _ro(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, slots=True)
class _State:
    base: PdqIndex
    disabled_base: npt.NDArray[np.int64]  # tombstones stored in the base segment
    generation: int
    delta_ids: IdArray
    delta_words: npt.NDArray[np.uint64]
    disabled: frozenset[int]
    disabled_arr: IdArray


def _empty_words() -> npt.NDArray[np.uint64]:
    return _ro(np.zeros((0, 4), np.uint64))


class LiveIndex:
    """Exact PDQ radius search over a base segment plus live additions and disables."""

    def __init__(
        self, directory: Path, state: _State, auto_merge_at: int | None = AUTO_MERGE_AT
    ) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self.directory = directory
        self.auto_merge_at = auto_merge_at
        #: The exception of the last failed background merge, if any.
        self.last_merge_error: Exception | None = None
        self._state = state
        self._lock = threading.Lock()  # guards _state replacement
        self._merge_lock = threading.Lock()  # one merge at a time

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | Path,
        ids: npt.ArrayLike,
        hashes: npt.ArrayLike,
        disabled: Sequence[int] | npt.ArrayLike = (),
        *,
        auto_merge_at: int | None = AUTO_MERGE_AT,
    ) -> LiveIndex:
        """Build generation 1 (or the next one if the directory has an index) and open it."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        generation = (read_generation(d) or 0) + 1
        dis = _ro(np.unique(np.asarray(disabled, dtype=np.int64)))
        PdqIndex.build_file(d / _segment_name(generation), ids, hashes, extra={"disabled": dis})
        _publish(d, generation)
        return cls.open(d, auto_merge_at=auto_merge_at)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        verify: bool = True,
        auto_merge_at: int | None = AUTO_MERGE_AT,
    ) -> LiveIndex:
        """Open the current generation; IndexCorruptError if it is missing or damaged.

        ``auto_merge_at``: delta size that triggers a background merge (None: never).
        """
        d = Path(directory)
        generation = read_generation(d)
        if generation is None:
            raise IndexCorruptError("no CURRENT generation file", path=str(d))
        base, dis = _load(d, generation, verify=verify)
        state = _State(
            base,
            dis,
            generation,
            _ro(np.zeros(0, np.int64)),
            _empty_words(),
            frozenset(int(x) for x in dis),
            dis,
        )
        return cls(d, state, auto_merge_at)

    @property
    def generation(self) -> int:
        """Generation number of the base segment this process is using."""
        return self._state.generation

    def refresh(self, *, verify: bool = True) -> bool:
        """Switch to a newer base written by another process; True if it switched.

        The in-memory delta and tombstones are kept (a hash present in both the new
        base and the delta is reported once).
        """
        on_disk = read_generation(self.directory)
        if on_disk is None or on_disk <= self._state.generation:
            return False
        base, dis = _load(self.directory, on_disk, verify=verify)
        with self._lock:
            s = self._state
            disabled = s.disabled | frozenset(int(x) for x in dis)
            self._state = replace(
                s,
                base=base,
                disabled_base=dis,
                generation=on_disk,
                disabled=disabled,
                disabled_arr=_sorted_ids(disabled),
            )
        return True

    # -- changes ------------------------------------------------------------------------

    def add(self, ids: npt.ArrayLike, hashes: npt.ArrayLike) -> None:
        """Make ``hashes`` ((n, 32) uint8) searchable under ``ids`` immediately."""
        words = hashes_to_words(hashes)
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if id_arr.shape[0] != words.shape[0]:
            raise InputError(f"got {id_arr.shape[0]} ids for {words.shape[0]} hashes")
        with self._lock:
            s = self._state
            self._state = replace(
                s,
                delta_ids=_ro(np.concatenate([s.delta_ids, id_arr])),
                delta_words=_ro(np.concatenate([s.delta_words, words])),
            )
            big = self.auto_merge_at is not None and self.delta_size >= self.auto_merge_at
        if big and not self._merge_lock.locked():
            self.merge(background=True)

    def disable(self, ids: Sequence[int] | npt.ArrayLike) -> None:
        """Stop reporting ``ids`` from the next search on."""
        self._set_disabled(ids, on=True)

    def enable(self, ids: Sequence[int] | npt.ArrayLike) -> None:
        """Report ``ids`` again (their hashes were kept)."""
        self._set_disabled(ids, on=False)

    def _set_disabled(self, ids: Sequence[int] | npt.ArrayLike, *, on: bool) -> None:
        change = frozenset(int(x) for x in np.asarray(ids, dtype=np.int64).reshape(-1))
        with self._lock:
            s = self._state
            disabled = s.disabled | change if on else s.disabled - change
            self._state = replace(s, disabled=disabled, disabled_arr=_sorted_ids(disabled))

    @property
    def disabled(self) -> frozenset[int]:
        """Ids currently disabled."""
        return self._state.disabled

    def __len__(self) -> int:
        """Hashes held (base + delta, including disabled ones)."""
        s = self._state
        return len(s.base) + int(s.delta_ids.shape[0])

    @property
    def delta_size(self) -> int:
        """Hashes added since the base segment was written."""
        return int(self._state.delta_ids.shape[0])

    # -- search ----------------------------------------------------------------------------

    def search(self, query: Query, radius: int) -> tuple[IdArray, DistArray]:
        """Enabled ids within ``radius`` bits of ``query``; same contract as PdqIndex."""
        radius = check_radius(radius)
        return self._search(self._state, query_words(query), radius)

    def search_batch(
        self, queries: npt.NDArray[np.uint8] | Sequence[Query], radius: int
    ) -> list[tuple[IdArray, DistArray]]:
        """:meth:`search` for each query, all against one snapshot."""
        radius = check_radius(radius)
        s = self._state
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            words = hashes_to_words(queries)
            return [
                self._search(s, np.ascontiguousarray(words[i : i + 1]), radius)
                for i in range(words.shape[0])
            ]
        return [self._search(s, query_words(q), radius) for q in queries]

    @staticmethod
    def _search(s: _State, q: npt.NDArray[np.uint64], radius: int) -> tuple[IdArray, DistArray]:
        rows, dist = s.base.search_rows(q, radius)
        ids = s.base.ids[rows]
        if s.delta_ids.shape[0]:
            drows, ddist = brute_force_rows(q, radius, s.delta_words)
            ids = np.concatenate([ids, s.delta_ids[drows]])
            dist = np.concatenate([dist, ddist])
        if s.disabled_arr.shape[0] and ids.shape[0]:
            keep = ~np.isin(ids, s.disabled_arr)
            ids, dist = ids[keep], dist[keep]
        return finalize(ids, dist)

    # -- merge ------------------------------------------------------------------------------

    def merge(self, *, background: bool = False) -> threading.Thread | None:
        """Fold the delta into a new base segment and swap it in.

        With ``background=True`` the work runs on a daemon thread (returned, so callers
        may ``join`` it); searches and changes continue meanwhile, and additions made
        during the merge stay in the delta.
        """
        if background:
            t = threading.Thread(target=self._merge_logged, name="tipline-index-merge", daemon=True)
            t.start()
            return t
        self._merge()
        return None

    def _merge_logged(self) -> None:
        try:
            self._merge()
        except Exception as exc:  # a background thread has nobody to raise to
            self.last_merge_error = exc
            log.exception("background merge of %s failed", self.directory)

    def _merge(self) -> None:
        with self._merge_lock:
            snap = self._state
            k = int(snap.delta_ids.shape[0])
            if k == 0 and snap.disabled == frozenset(snap.disabled_base.tolist()):
                return  # nothing to fold in
            ids = np.concatenate([snap.base.ids, snap.delta_ids])
            words = np.concatenate([snap.base.words, snap.delta_words])
            dis = _sorted_ids(snap.disabled)
            generation = max(snap.generation, read_generation(self.directory) or 0) + 1
            PdqIndex.build_file(
                self.directory / _segment_name(generation), ids, words, extra={"disabled": dis}
            )
            del ids, words
            _publish(self.directory, generation)
            new_base, new_dis = _load(self.directory, generation, verify=False)
            with self._lock:
                s = self._state
                self._state = replace(
                    s,
                    base=new_base,
                    disabled_base=new_dis,
                    generation=generation,
                    delta_ids=_ro(s.delta_ids[k:]),
                    delta_words=_ro(s.delta_words[k:]),
                )
            _remove_old(self.directory, generation)


def _sorted_ids(ids: frozenset[int]) -> IdArray:
    return _ro(np.array(sorted(ids), dtype=np.int64))


def read_generation(directory: Path) -> int | None:
    """Generation number in ``directory/CURRENT``, or None when there is none."""
    try:
        text = (Path(directory) / _CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise IndexCorruptError(
            f"CURRENT holds {text[:40]!r}, not a generation number", path=str(directory)
        )
    return int(text)


def _write_generation(d: Path, generation: int, base: PdqIndex, disabled: IdArray) -> None:
    base.save(d / _segment_name(generation), extra={"disabled": disabled})
    _publish(d, generation)


def _publish(d: Path, generation: int) -> None:
    """Point CURRENT at ``generation`` atomically."""
    tmp = d / f".{_CURRENT}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{generation}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / _CURRENT)
    fsync_dir(d)


def _load(d: Path, generation: int, *, verify: bool) -> tuple[PdqIndex, IdArray]:
    seg = read_segment(d / _segment_name(generation), _KIND, verify=verify)
    dis = seg.arrays.get("disabled")
    if dis is None or dis.dtype != np.int64 or dis.ndim != 1:
        raise IndexCorruptError("missing tombstone section", path=str(seg.path))
    return PdqIndex.from_segment(seg), dis


def _remove_old(d: Path, keep: int) -> None:
    # Processes that still map an old file keep reading it (POSIX unlink semantics).
    for p in d.glob("pdq-*.tpi"):
        try:
            if int(p.stem.split("-")[1]) < keep - 1:
                p.unlink()
        except (ValueError, FileNotFoundError):
            continue
