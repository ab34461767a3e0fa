"""Exact Hamming radius search over 256-bit PDQ hashes (multi-index hashing).

The 256 bits are split into ``m`` contiguous substrings and one CSR table per substring
maps a substring value to the rows holding it. By the generalised pigeonhole principle,
with ``radius = m*r + a`` (``0 <= a < m``) any hash within ``radius`` bits of the query
has one of some ``a+1`` substrings within ``r`` bits of the query's, or one of the
others within ``r-1`` bits -- for *any* choice of those ``a+1``. Each query makes that
choice from the bucket sizes around its own keys (the densest outer shells get ``r-1``),
which keeps clustered banks cheaper. Probing exactly those buckets and verifying every
candidate with a full 256-bit popcount therefore returns every hash within ``radius``
(recall 1.0) for any radius 0..256; when probing would touch more rows than a scan (for
the radius, or for one query in a dense cluster), the index scans.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.errors import IndexCorruptError, InputError
from tipline.index import _kernels as K
from tipline.index.files import LazySection, Segment, read_segment, write_segment

#: Bits in a PDQ hash.
PDQ_BITS = 256
#: Bytes in a PDQ hash.
PDQ_BYTES = 32
#: Largest radius accepted by :meth:`PdqIndex.search`, in bits.
MAX_RADIUS = PDQ_BITS
_KIND = "pdq"
#: Fewest substrings allowed: 256 / 11 rounds up to 24-bit substrings.
MIN_SUBSTRINGS = 11
#: A query whose buckets hold more candidates than len(index) / this is answered by a
#: linear scan instead: reading every hash in order costs less than that many random reads.
SCAN_FRACTION = 4
#: Candidate slots each thread's scratch starts with, and keeps after a bigger query.
_INITIAL_CANDIDATES = 1 << 14
_KEPT_CANDIDATES = 1 << 20

IdArray = npt.NDArray[np.int64]
DistArray = npt.NDArray[np.int64]
Query = bytes | str | npt.NDArray[np.uint8]


def hashes_to_words(hashes: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """(n, 32) uint8 hashes -> (n, 4) native uint64 words (big-endian per word)."""
    arr = np.asarray(hashes)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != PDQ_BYTES:
        raise InputError(
            f"PDQ hashes must be a (n, {PDQ_BYTES}) uint8 array, got {arr.dtype} {arr.shape}"
        )
    words = np.ascontiguousarray(arr).view(">u8").astype(np.uint64)
    return np.ascontiguousarray(words)


def query_words(query: Query) -> npt.NDArray[np.uint64]:
    """One query (32 bytes, 64 hex chars or a (32,) uint8 array) as a (1, 4) word array."""
    if isinstance(query, str):
        try:
            raw = bytes.fromhex(query.strip())
        except ValueError:
            raise InputError(f"PDQ query is not hex: {query[:80]!r}") from None
    elif isinstance(query, bytes | bytearray | memoryview):
        raw = bytes(query)
    else:
        arr = np.asarray(query)
        if arr.dtype != np.uint8 or arr.shape != (PDQ_BYTES,):
            raise InputError(
                f"PDQ query array must be ({PDQ_BYTES},) uint8, got {arr.dtype} {arr.shape}"
            )
        raw = arr.tobytes()
    if len(raw) != PDQ_BYTES:
        raise InputError(f"PDQ query must be {PDQ_BYTES} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(1, 4)


def check_radius(radius: int) -> int:
    """Validate a radius in bits (0..256) and return it as int."""
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer):
        raise InputError(f"radius must be an integer number of bits, got {radius!r}")
    if not 0 <= int(radius) <= MAX_RADIUS:
        raise InputError(f"radius must be between 0 and {MAX_RADIUS} bits, got {radius}")
    return int(radius)


def _readonly(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=256)
def _flip_masks(width: int, radius: int) -> npt.NDArray[np.uint64]:
    """All ``width``-bit masks with at most ``radius`` bits set, by popcount level."""
    cur = np.zeros(1, np.uint64)
    lowest = np.zeros(1, np.int64)  # lowest bit a mask may still add (keeps masks unique)
    levels = [cur]
    for _ in range(min(radius, width)):
        parts, lows = [], []
        for b in range(width):
            sel = lowest <= b
            parts.append(cur[sel] | np.uint64(1 << b))
            lows.append(np.full(int(sel.sum()), b + 1, np.int64))
        cur, lowest = np.concatenate(parts), np.concatenate(lows)
        levels.append(cur)
    return _readonly(np.concatenate(levels))


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def default_layout(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Substring (starts, widths) in bits for ``n`` hashes: width ≈ log2(n), 8..24 bits.

    Slightly wider than log2(n) (under one row per bucket) measured fastest: at 10M
    hashes 11 substrings of 23-24 bits ran ~1.7x the lookups/s of 12 of 21-22 bits.
    """
    target = min(24, max(8, math.ceil(math.log2(max(n, 2)))))
    m = math.ceil(PDQ_BITS / target)
    return layout_for(m)


def layout_for(m: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Split 256 bits into ``m`` contiguous substrings of near-equal width (≤ 24 bits).

    Each substring table holds 2^width + 1 offsets, so widths are capped at 24 bits
    (64 MiB of offsets per table).
    """
    if not MIN_SUBSTRINGS <= m <= PDQ_BITS:
        raise InputError(f"substring count must be {MIN_SUBSTRINGS}..{PDQ_BITS}, got {m}")
    base, extra = divmod(PDQ_BITS, m)
    widths = np.array([base + 1] * extra + [base] * (m - extra), np.int64)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return starts, widths


def _table_plan(widths: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """Start of each substring table in the ``tables`` array (m + 1 entries)."""
    sizes = (np.int64(1) << widths) + 1 + n
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _prepare(
    ids: IdArray, words: npt.NDArray[np.uint64], substrings: int | None
) -> tuple[dict[str, np.ndarray[Any, Any]], npt.NDArray[np.int64]]:
    n = words.shape[0]
    if n >= 2**32 - 1:
        raise InputError("a PDQ index holds fewer than 2**32 - 1 hashes")
    starts, widths = default_layout(n) if substrings is None else layout_for(substrings)
    plan = _table_plan(widths, n)
    # Store rows in hash order: near-duplicates then sit close together in memory, so
    # the candidates of a dense cluster share cache lines (+18% lookups/s on clustered
    # 10M data, no change on uniform data). Ids travel with their rows.
    order = np.argsort(words[:, 0], kind="stable")
    words = np.ascontiguousarray(words[order])
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64)[order])
    del order
    arrays = {
        "ids": _readonly(np.ascontiguousarray(ids, dtype=np.int64)),
        "words": _readonly(np.ascontiguousarray(words, dtype=np.uint64)),
        "starts": _readonly(starts),
        "widths": _readonly(widths),
        "table_base": _readonly(plan),
    }
    return arrays, plan


def _table_chunks(
    arrays: dict[str, np.ndarray[Any, Any]], plan: npt.NDArray[np.int64]
) -> Iterator[npt.NDArray[np.uint32]]:
    """Each substring's table: 2^width+1 CSR offsets then the n rows sorted by key.

    Tables are built two at a time on threads (the kernel releases the GIL), so at most
    two tables beyond the one being consumed are held in memory.
    """
    words, starts, widths = arrays["words"], arrays["starts"], arrays["widths"]

    def one(j: int) -> npt.NDArray[np.uint32]:
        size = (1 << int(widths[j])) + 1
        table = np.zeros(int(plan[j + 1] - plan[j]), np.uint32)
        K.build_table(words, int(starts[j]), int(widths[j]), table[:size], table[size:])
        return table

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tipline-index-build") as pool:
        pending: deque[Future[npt.NDArray[np.uint32]]] = deque()
        for j in range(len(widths)):
            pending.append(pool.submit(one, j))
            if len(pending) == 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def finalize(ids: IdArray, dist: DistArray) -> tuple[IdArray, DistArray]:
    """One result per id (its smallest distance), sorted by (distance, id)."""
    if len(ids) > 1:
        order = np.lexsort((dist, ids))
        ids, dist = ids[order], dist[order]
        keep = np.ones(len(ids), bool)
        keep[1:] = ids[1:] != ids[:-1]
        ids, dist = ids[keep], dist[keep]
        order = np.lexsort((ids, dist))
        ids, dist = ids[order], dist[order]
    return ids, dist


def brute_force_rows(
    q: npt.NDArray[np.uint64], radius: int, words: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.int64], DistArray]:
    """(rows, distances) of every word row within ``radius`` of ``q`` (linear scan)."""
    cap = 256
    while True:
        rows = np.empty(cap, np.int64)
        dist = np.empty(cap, np.int64)
        count = K.brute_search(q, radius, words, rows, dist)
        if count <= cap:
            return rows[:count], dist[:count]
        cap = count


@dataclass(frozen=True)
class _Plan:
    """How one radius is searched: see :func:`tipline.index._kernels.mih_search`."""

    r_hi: int
    n_hi: int
    masks: npt.NDArray[np.uint64]
    mask_base: npt.NDArray[np.int64]
    count_lo: npt.NDArray[np.int64]
    count_hi: npt.NDArray[np.int64]


class _Scratch:
    """One thread's search buffers, reused across queries (no allocation per lookup)."""

    def __init__(self, n_probes: int, m: int, n_cand: int) -> None:
        self.radii = np.empty(m, np.int64)
        self.probe_key = np.empty(n_probes, np.int64)
        self.probe_lo = np.empty(n_probes, np.int64)
        self.probe_hi = np.empty(n_probes, np.int64)
        self.cand = np.empty(n_cand, np.int64)
        self.out_rows = np.empty(256, np.int64)
        self.out_dist = np.empty(256, np.int64)

    def resize_candidates(self, n: int) -> None:
        self.cand = np.empty(n, np.int64)

    def grow_results(self, n: int) -> None:
        self.out_rows = np.empty(n, np.int64)
        self.out_dist = np.empty(n, np.int64)


class PdqIndex:
    """Immutable exact radius index over PDQ hashes; thread-safe for searching.

    Ids are caller-chosen int64 values (e.g. bank entry ids); one id may carry several
    hashes, and a search reports each id once with its smallest distance.
    """

    def __init__(self, arrays: dict[str, np.ndarray[Any, Any]], path: Path | None = None) -> None:
        """Use :meth:`build` or :meth:`open`; this wraps already validated arrays."""
        self._a = arrays
        self.ids: IdArray = arrays["ids"]
        self.words: npt.NDArray[np.uint64] = arrays["words"]
        self.starts: npt.NDArray[np.int64] = arrays["starts"]
        self.widths: npt.NDArray[np.int64] = arrays["widths"]
        self.path = path
        self._plans: dict[int, _Plan | None] = {}
        self._plan_lock = threading.Lock()
        self._local = threading.local()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def build(
        cls, ids: npt.ArrayLike, hashes: npt.ArrayLike, *, substrings: int | None = None
    ) -> PdqIndex:
        """Index ``hashes`` ((n, 32) uint8) under ``ids`` ((n,) int64).

        ``substrings`` overrides the number of multi-index substrings (default: about
        256 / (log2(n) + 1)). At 10M hashes the index holds ~1.3 GB; :meth:`build_file`
        builds into a file with less memory.
        """
        words = hashes_to_words(hashes)
        id_arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if id_arr.shape != (words.shape[0],):
            raise InputError(f"got {id_arr.shape} ids for {words.shape[0]} hashes")
        return cls.from_words(id_arr, words, substrings=substrings)

    @classmethod
    def from_words(
        cls, ids: IdArray, words: npt.NDArray[np.uint64], *, substrings: int | None = None
    ) -> PdqIndex:
        """Like :meth:`build` but from (n, 4) uint64 words (see :func:`hashes_to_words`)."""
        arrays, plan = _prepare(ids, words, substrings)
        tables = np.empty(int(plan[-1]), np.uint32)
        for j, chunk in enumerate(_table_chunks(arrays, plan)):
            tables[plan[j] : plan[j + 1]] = chunk
        arrays["tables"] = tables
        return cls({k: _readonly(np.ascontiguousarray(v)) for k, v in arrays.items()})

    @classmethod
    def build_file(
        cls,
        path: str | Path,
        ids: npt.ArrayLike,
        hashes: npt.ArrayLike,
        *,
        substrings: int | None = None,
        extra: dict[str, np.ndarray[Any, Any]] | None = None,
    ) -> None:
        """Build straight into a segment file, two substring tables in memory at a time.

        Peak memory is about the words plus three tables (~0.9 GB at 10M hashes) rather
        than the whole index; open the result with :meth:`open`. ``hashes`` may also be
        (n, 4) uint64 words (see :func:`hashes_to_words`).
        """
        h = np.asarray(hashes)
        if h.dtype == np.uint64:
            if h.ndim != 2 or h.shape[1] != 4:
                raise InputError(f"PDQ words must be a (n, 4) uint64 array, got {h.shape}")
            words = h
        else:
            words = hashes_to_words(h)
        id_arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if id_arr.shape != (words.shape[0],):
            raise InputError(f"got {id_arr.shape} ids for {words.shape[0]} hashes")
        arrays, plan = _prepare(id_arr, words, substrings)
        n = len(id_arr)
        del h, words, id_arr  # the hash-ordered copies in ``arrays`` replace them
        lazy = LazySection(
            np.dtype(np.uint32), (int(plan[-1]),), lambda: _table_chunks(arrays, plan)
        )
        sections: dict[str, np.ndarray[Any, Any] | LazySection] = {**arrays, "tables": lazy}
        sections.update(extra or {})
        write_segment(Path(path), _KIND, {"count": n}, sections)

    # -- persistence ------------------------------------------------------------------

    def sections(self) -> dict[str, np.ndarray[Any, Any]]:
        """The arrays a segment file stores for this index."""
        return dict(self._a)

    def save(
        self,
        path: str | Path,
        *,
        extra: dict[str, np.ndarray[Any, Any]] | None = None,
        params: dict[str, Any] | None = None,
        kind: str = _KIND,
    ) -> None:
        """Atomically write the index to ``path`` (temp file, fsync, rename)."""
        arrays = self.sections()
        arrays.update(extra or {})
        write_segment(Path(path), kind, {"count": len(self), **(params or {})}, arrays)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> PdqIndex:
        """Memory-map a saved index; IndexCorruptError when the file fails its checks."""
        return cls.from_segment(read_segment(Path(path), _KIND, verify=verify))

    @classmethod
    def from_segment(cls, seg: Segment) -> PdqIndex:
        """Wrap the PDQ sections of an opened segment, checking their shapes agree."""
        a = seg.arrays
        try:
            n = a["ids"].shape[0]
            m = a["starts"].shape[0]
            ok = (
                a["words"].shape == (n, 4)
                and a["widths"].shape == (m,)
                and a["table_base"].shape == (m + 1,)
                and int(a["widths"].sum()) == PDQ_BITS
                and bool(np.all((a["widths"] >= 1) & (a["widths"] <= 32)))
                and np.array_equal(a["table_base"], _table_plan(a["widths"], n))
                and a["tables"].shape == (int(a["table_base"][-1]),)
                and seg.params.get("count") == n
            )
        except KeyError as exc:
            raise IndexCorruptError(f"missing section {exc}", path=str(seg.path)) from None
        if not ok:
            raise IndexCorruptError("PDQ sections have inconsistent shapes", path=str(seg.path))
        return cls(
            {k: a[k] for k in ("ids", "words", "starts", "widths", "table_base", "tables")},
            path=seg.path,
        )

    # -- search ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def _plan(self, radius: int) -> _Plan | None:
        """Per-radius probe plan (substring radii, flip masks), or None to scan."""
        with self._plan_lock:
            if radius in self._plans:
                return self._plans[radius]
        m = len(self.widths)
        r, a = divmod(radius, m)
        n = len(self)
        # Every substring's ball of radius r is looked up (offsets only); a+1 of them are
        # searched at r and the rest at r-1. Expected cost for uniform data; scan when
        # probing costs more than that.
        cost = 0.0
        for j, w in enumerate(self.widths):
            rj = r if j <= a else r - 1
            cost += _ball(int(w), r) + (_ball(int(w), rj) * n / 2.0 ** int(w) if rj >= 0 else 0)
        plan: _Plan | None = None
        if cost < n / 2:
            masks, base, lo, hi = [], [], [], []
            pos = 0
            for w in self.widths:
                mk = _flip_masks(int(w), r)  # ordered by popcount: the r-1 ball first
                masks.append(mk)
                base.append(pos)
                hi.append(len(mk))
                lo.append(_ball(int(w), r - 1) if r >= 1 else 0)
                pos += len(mk)
            plan = _Plan(
                r_hi=r,
                n_hi=a + 1,
                masks=_readonly(np.concatenate(masks)),
                mask_base=_readonly(np.array(base, np.int64)),
                count_lo=_readonly(np.array(lo, np.int64)),
                count_hi=_readonly(np.array(hi, np.int64)),
            )
        with self._plan_lock:
            self._plans[radius] = plan
        return plan

    def _scratch(self, n_probes: int, m: int) -> _Scratch:
        """This thread's reusable search buffers, with room for ``n_probes`` probes."""
        sc: _Scratch | None = getattr(self._local, "scratch", None)
        if sc is None or sc.probe_key.shape[0] < n_probes:
            sc = _Scratch(n_probes, m, _INITIAL_CANDIDATES if sc is None else sc.cand.shape[0])
            self._local.scratch = sc
        return sc

    def search_rows(
        self, q: npt.NDArray[np.uint64], radius: int
    ) -> tuple[npt.NDArray[np.int64], DistArray]:
        """(rows, distances) within ``radius`` for one (1, 4) word query; rows unordered.

        Multi-index search with the substring split chosen for this query (see
        :func:`tipline.index._kernels.mih_search`); a linear scan when the radius is too
        wide for substring probes, or when this query's buckets hold more than
        ``len(self) / SCAN_FRACTION`` candidates (a dense cluster at a wide radius).
        """
        plan = self._plan(radius)
        if plan is None:
            return brute_force_rows(q, radius, self.words)
        sc = self._scratch(int(plan.count_hi.sum()), len(self.widths))
        while True:
            count = self._run(plan, q, radius, sc)
            if count < 0:  # more candidates than the buffer holds
                if -count * SCAN_FRACTION > len(self):
                    return brute_force_rows(q, radius, self.words)
                sc.resize_candidates(max(-count, 2 * sc.cand.shape[0]))
            elif count > sc.out_rows.shape[0]:
                sc.grow_results(count)
            else:
                rows, dist = sc.out_rows[:count].copy(), sc.out_dist[:count].copy()
                if sc.cand.shape[0] > _KEPT_CANDIDATES:
                    sc.resize_candidates(_KEPT_CANDIDATES)
                return rows, dist

    def _run(self, plan: _Plan, q: npt.NDArray[np.uint64], radius: int, sc: _Scratch) -> int:
        a = self._a
        count: int = K.mih_search(
            q,
            radius,
            self.words,
            self.starts,
            self.widths,
            plan.r_hi,
            plan.n_hi,
            a["tables"],
            a["table_base"],
            plan.masks,
            plan.mask_base,
            plan.count_lo,
            plan.count_hi,
            sc.probe_key,
            sc.probe_lo,
            sc.probe_hi,
            sc.cand,
            sc.radii,
            sc.out_rows,
            sc.out_dist,
        )
        return count

    def probe_stats(self, query: Query, radius: int) -> tuple[npt.NDArray[np.int64], int] | None:
        """(per-substring radii, candidate rows) of one search of ``query``, or None.

        For diagnostics, tests and benchmarks: the radii (-1: substring skipped) are the
        split chosen for this query from the bucket sizes around it, and the candidates
        are the bucket entries the search verifies. ``None`` when the radius is searched
        by a linear scan.
        """
        radius = check_radius(radius)
        plan = self._plan(radius)
        if plan is None:
            return None
        sc = self._scratch(int(plan.count_hi.sum()), len(self.widths))
        saved = sc.cand
        sc.resize_candidates(0)  # the kernel then stops after counting the candidates
        try:
            count = self._run(plan, query_words(query), radius, sc)
        finally:
            sc.cand = saved
        return sc.radii.copy(), max(0, -count)

    def search(self, query: Query, radius: int) -> tuple[IdArray, DistArray]:
        """Every id with a hash within ``radius`` bits (inclusive) of ``query``.

        Returns ``(ids, distances)`` as int64 arrays, one entry per id (its smallest
        distance in bits), sorted by distance then id. Exact: recall 1.0.
        """
        radius = check_radius(radius)
        rows, dist = self.search_rows(query_words(query), radius)
        return finalize(self.ids[rows], dist)

    def search_batch(
        self, queries: npt.ArrayLike | Sequence[Query], radius: int
    ) -> list[tuple[IdArray, DistArray]]:
        """:meth:`search` for each query ((q, 32) uint8 array or a sequence of queries)."""
        radius = check_radius(radius)
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            words = hashes_to_words(queries)
            qs = [words[i : i + 1] for i in range(words.shape[0])]
        else:
            qs = [query_words(q) for q in queries]  # type: ignore[arg-type,union-attr]
        out = []
        for q in qs:
            rows, dist = self.search_rows(np.ascontiguousarray(q), radius)
            out.append(finalize(self.ids[rows], dist))
        return out

    def search_rows_many(
        self, queries: npt.NDArray[np.uint64], radius: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], DistArray]:
        """:meth:`search_rows` of every (n, 4) word query in one kernel call (no Python
        per query): ``(query, row, distance)`` of every hit, grouped by query in order."""
        radius = check_radius(radius)
        n = queries.shape[0]
        plan = self._plan(radius)
        if plan is None or n == 0:
            return self._search_one_by_one(queries, radius)
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        sc = self._scratch(int(plan.count_hi.sum()), len(self.widths))
        size = max(1024, 4 * n)
        out_q, out_r, out_d = (np.empty(size, np.int64) for _ in range(3))
        a = self._a
        first = filled = 0
        while first < n:
            first, filled = K.mih_search_many(
                queries, first, radius, self.words, self.starts, self.widths,
                plan.r_hi, plan.n_hi, a["tables"], a["table_base"], plan.masks,
                plan.mask_base, plan.count_lo, plan.count_hi, sc.probe_key, sc.probe_lo,
                sc.probe_hi, sc.cand, sc.radii, sc.out_rows, sc.out_dist,
                out_q, out_r, out_d, filled,
            )  # fmt: skip
            if first == n:
                break
            rows, dist = self.search_rows(queries[first : first + 1], radius)
            sc = self._scratch(int(plan.count_hi.sum()), len(self.widths))
            need = filled + rows.shape[0]
            if need + 4096 > out_q.shape[0]:  # room for the queries after this one
                bigger = max(need + 4096, 2 * out_q.shape[0])
                out_q, out_r, out_d = (np.resize(x, bigger) for x in (out_q, out_r, out_d))
            out_q[filled:need], out_r[filled:need], out_d[filled:need] = first, rows, dist
            filled, first = need, first + 1
        return out_q[:filled].copy(), out_r[:filled].copy(), out_d[:filled].copy()

    def _search_one_by_one(
        self, queries: npt.NDArray[np.uint64], radius: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], DistArray]:
        found = [self.search_rows(queries[k : k + 1], radius) for k in range(queries.shape[0])]
        if not found:
            empty = np.zeros(0, np.int64)
            return empty, empty.copy(), empty.copy()
        counts = [f[0].shape[0] for f in found]
        return (
            np.repeat(np.arange(len(found), dtype=np.int64), counts),
            np.concatenate([f[0] for f in found]).astype(np.int64),
            np.concatenate([f[1] for f in found]).astype(np.int64),
        )

    def warm_up(self) -> None:
        """Compile/load the numba kernels now so the first lookup is not slow."""
        q = np.zeros((1, 4), np.uint64)
        self.search_rows(q, 0)
        brute_force_rows(q, 0, self.words)
