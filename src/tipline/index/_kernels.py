"""Numba kernels for 256-bit Hamming search (private; the public API is in ``pdq.py``).

A hash is held as four native ``uint64`` words; word ``k`` is bytes ``8k..8k+7`` read
big-endian, so bit 0 of the hash is the most significant bit of byte 0. Substring keys
for multi-index hashing are contiguous bit ranges ``[start, start + width)`` of that
256-bit string.

Every kernel is compiled with ``cache=True`` (compiled once per machine, then loaded
from ``__pycache__``) and ``nogil=True`` so callers may run them on several threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Typed wrappers: mypy sees each kernel with its Python signature.
F = TypeVar("F", bound=Callable[..., Any])


def _jit(f: F) -> F:
    return cast(F, njit(cache=True, nogil=True)(f))


def _jit_inline(f: F) -> F:
    return cast(F, njit(cache=True, nogil=True, inline="always")(f))


def _ctpop_typer(typingctx: Any, x: Any) -> Any:
    """LLVM ``ctpop`` on a uint64 (one POPCNT instruction on x86-64)."""
    sig = types.uint64(types.uint64)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return sig, codegen


_ctpop: Any = intrinsic(_ctpop_typer)


def _prefetch_typer(locality: int) -> Callable[[Any, Any], Any]:
    """LLVM ``prefetch`` (read) of the byte at an address; never faults."""

    def typer(typingctx: Any, addr: Any) -> Any:
        sig = types.void(types.uint64)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            ptr_t = ir.PointerType()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr_t, i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr_t], fnty)
            ptr = builder.inttoptr(args[0], ptr_t)
            builder.call(fn, [ptr, i32(0), i32(locality), i32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return typer


#: Prefetch into every cache level (for data used within a few iterations).
_prefetch_l1: Any = intrinsic(_prefetch_typer(3))
#: Prefetch into L2 and below (for data used a whole loop later).
_prefetch_l2: Any = intrinsic(_prefetch_typer(2))
#: Probes / bucket runs / candidates a loop runs ahead when prefetching.
_AHEAD_PROBES = 16
_AHEAD_RUNS = 8
_AHEAD_ROWS = 48


@_jit_inline
def _extract(words: Any, row: Any, start: Any, width: Any) -> Any:
    """Bits ``[start, start+width)`` of hash ``row`` as an unsigned integer (width ≤ 32)."""
    k = start >> 6
    off = start & 63
    mask = np.uint64((1 << width) - 1)
    if off + width <= 64:
        return (words[row, k] >> np.uint64(64 - off - width)) & mask
    hi = 64 - off
    lo = width - hi
    top = (words[row, k] & np.uint64((1 << hi) - 1)) << np.uint64(lo)
    return top | (words[row, k + 1] >> np.uint64(64 - lo))


@_jit_inline
def _distance(words: Any, row: Any, q0: Any, q1: Any, q2: Any, q3: Any) -> Any:
    d = (
        _ctpop(words[row, 0] ^ q0)
        + _ctpop(words[row, 1] ^ q1)
        + _ctpop(words[row, 2] ^ q2)
        + _ctpop(words[row, 3] ^ q3)
    )
    return np.int64(d)


@_jit
def build_table(words: Any, start: int, width: int, offsets: Any, rows: Any) -> None:
    """Counting-sort rows by substring key: CSR ``offsets`` (2^width+1) and ``rows`` (n).

    ``offsets`` must be zeroed on entry; rows of bucket ``key`` end up in
    ``rows[offsets[key]:offsets[key+1]]`` in ascending row order.
    """
    n = words.shape[0]
    keys = np.empty(n, np.uint32)
    for i in range(n):
        key = np.int64(_extract(words, i, start, width))
        keys[i] = key
        offsets[key + 1] += 1
    for b in range(1, offsets.shape[0]):
        offsets[b] += offsets[b - 1]
    pos = offsets[:-1].copy()
    for i in range(n):
        key = np.int64(keys[i])
        rows[pos[key]] = i
        pos[key] += 1


@_jit
def brute_search(q: Any, radius: int, words: Any, out_rows: Any, out_dist: Any) -> int:
    """All rows within ``radius`` bits of ``q`` (shape (1, 4)), by scanning every row.

    Writes up to ``len(out_rows)`` results and returns the total count, which may be
    larger than the buffers (the caller then retries with bigger buffers).
    """
    q0, q1, q2, q3 = q[0, 0], q[0, 1], q[0, 2], q[0, 3]
    cap = out_rows.shape[0]
    count = 0
    for row in range(words.shape[0]):
        d = _distance(words, row, q0, q1, q2, q3)
        if d <= radius:
            if count < cap:
                out_rows[count] = row
                out_dist[count] = d
            count += 1
    return count


@_jit
def mih_search(
    q: Any,
    radius: Any,
    words: Any,
    starts: Any,
    widths: Any,
    r_hi: Any,
    n_hi: Any,
    tables: Any,
    table_base: Any,
    masks: Any,
    mask_base: Any,
    count_lo: Any,
    count_hi: Any,
    probe_key: Any,
    probe_lo: Any,
    probe_hi: Any,
    cand: Any,
    out_radii: Any,
    out_rows: Any,
    out_dist: Any,
) -> Any:
    """Multi-index-hashing radius search with a per-query radius split.

    ``n_hi`` substrings are probed at radius ``r_hi`` and the others at ``r_hi - 1``
    (``-1``: skipped), which is exact for ``radius <= m*r_hi + n_hi - 1`` by the
    generalised pigeonhole principle *whichever* substrings get ``r_hi``. This query's
    choice: every substring's buckets at radius ``r_hi`` are looked up (cheap: one
    offset pair each) and the ``m - n_hi`` substrings whose outer shell (exactly
    ``r_hi`` bits away) holds the most rows drop to ``r_hi - 1``, so dense regions
    of a clustered bank cost fewer candidates.

    ``masks[mask_base[j]:][:count_hi[j]]`` are substring ``j``'s flip masks ordered by
    popcount; the first ``count_lo[j]`` of them are the ball of radius ``r_hi - 1``.
    Table ``j`` is ``tables[table_base[j]:]``: 2^width+1 CSR offsets, then n rows.
    ``probe_key``/``probe_lo``/``probe_hi`` (``sum(count_hi)`` int64 each) and ``cand``
    (int64, ``row | substring << 32``) are scratch; ``out_radii`` (m) receives the radii
    chosen for this query. Returns the number of results (one per row), written to
    ``out_rows``/``out_dist`` when they fit (else the caller retries with bigger
    buffers), or ``-k`` when ``cand`` is shorter than the ``k`` candidates.

    Each phase (bucket offsets, bucket rows, candidate distances) is one loop of
    independent loads with software prefetches a fixed distance ahead, and candidate
    hashes are prefetched while their rows are gathered: at 10M hashes the search is
    memory-latency bound, and this keeps many cache misses in flight.
    """
    m = starts.shape[0]
    tbase = np.uint64(tables.ctypes.data)
    wbase = np.uint64(words.ctypes.data)
    qkeys = np.empty(m, np.uint64)
    first = np.empty(m + 1, np.int64)
    t = 0
    for j in range(m):
        qkeys[j] = _extract(q, 0, starts[j], widths[j])
        first[j] = t
        ob = np.int64(table_base[j])
        mb = np.int64(mask_base[j])
        for s in range(mb, mb + np.int64(count_hi[j])):
            probe_key[t] = ob + np.int64(qkeys[j] ^ masks[s])
            t += 1
    first[m] = t
    n_probes = t
    for t in range(n_probes):
        if t + _AHEAD_PROBES < n_probes:
            _prefetch_l1(tbase + np.uint64(probe_key[t + _AHEAD_PROBES] * 4))
        key = probe_key[t]
        probe_lo[t] = np.int64(tables[key])
        probe_hi[t] = np.int64(tables[key + 1])
    # Radius of each substring for this query: drop the densest outer shells.
    qradii = out_radii
    for j in range(m):
        qradii[j] = r_hi
    n_lo = m - n_hi
    if n_lo > 0:
        shell = np.empty(m, np.int64)
        for j in range(m):
            size = np.int64(0)
            for t in range(first[j] + count_lo[j], first[j + 1]):
                size += probe_hi[t] - probe_lo[t]
            shell[j] = size
        for _ in range(n_lo):  # the densest shell left; ties go to the lower index
            best = -1
            for j in range(m):
                if qradii[j] == r_hi and (best < 0 or shell[j] > shell[best]):
                    best = j
            qradii[best] = r_hi - 1
    # Keep the probes of the chosen balls, as absolute positions in ``tables``.
    n_act = 0
    n_cand = 0
    for j in range(m):
        rb = np.int64(table_base[j]) + (np.int64(1) << widths[j]) + 1
        stop = first[j] + (count_hi[j] if qradii[j] == r_hi else count_lo[j])
        for t in range(first[j], stop):
            probe_lo[n_act] = probe_lo[t] + rb
            probe_hi[n_act] = probe_hi[t] + rb
            probe_key[n_act] = j  # now: the substring of each kept probe
            n_cand += probe_hi[t] - probe_lo[t]
            n_act += 1
    if n_cand > cand.shape[0]:
        return -n_cand
    c = 0
    for t in range(n_act):
        if t + _AHEAD_RUNS < n_act:
            _prefetch_l1(tbase + np.uint64(probe_lo[t + _AHEAD_RUNS] * 4))
        for p in range(probe_lo[t], probe_hi[t]):
            row = np.int64(tables[p])
            _prefetch_l2(wbase + np.uint64(row * 32))
            cand[c] = row | (probe_key[t] << 32)
            c += 1
    q0, q1, q2, q3 = q[0, 0], q[0, 1], q[0, 2], q[0, 3]
    cap = out_rows.shape[0]
    count = 0
    for c in range(n_cand):
        if c + _AHEAD_ROWS < n_cand:
            _prefetch_l1(wbase + np.uint64((cand[c + _AHEAD_ROWS] & 0xFFFFFFFF) * 32))
        row = cand[c] & 0xFFFFFFFF
        d = _distance(words, row, q0, q1, q2, q3)
        if d > radius:
            continue
        # A row within the radius sits in several probed buckets: report it only from
        # the first substring whose chosen ball holds it (no per-query "seen" array).
        seen = False
        for k in range(cand[c] >> 32):
            sub = _extract(words, row, starts[k], widths[k]) ^ qkeys[k]
            if np.int64(_ctpop(sub)) <= qradii[k]:
                seen = True
                break
        if seen:
            continue
        if count < cap:
            out_rows[count] = row
            out_dist[count] = d
        count += 1
    return count


@_jit
def mih_search_many(
    queries: Any,
    first: Any,
    radius: Any,
    words: Any,
    starts: Any,
    widths: Any,
    r_hi: Any,
    n_hi: Any,
    tables: Any,
    table_base: Any,
    masks: Any,
    mask_base: Any,
    count_lo: Any,
    count_hi: Any,
    probe_key: Any,
    probe_lo: Any,
    probe_hi: Any,
    cand: Any,
    radii: Any,
    one_rows: Any,
    one_dist: Any,
    out_query: Any,
    out_rows: Any,
    out_dist: Any,
    filled: Any,
) -> Any:
    """:func:`mih_search` of ``queries[first:]`` in turn, results appended to
    ``out_query``/``out_rows``/``out_dist`` from ``filled`` on.

    Returns ``(next, filled)``: ``next == len(queries)`` when every query is done;
    otherwise query ``next`` did not fit (too many candidates for ``cand``, results
    for ``one_rows``, or room left in the outputs) and the caller searches it alone.
    """
    for k in range(first, queries.shape[0]):
        count = mih_search(
            queries[k : k + 1],
            radius,
            words,
            starts,
            widths,
            r_hi,
            n_hi,
            tables,
            table_base,
            masks,
            mask_base,
            count_lo,
            count_hi,
            probe_key,
            probe_lo,
            probe_hi,
            cand,
            radii,
            one_rows,
            one_dist,
        )
        if count < 0 or count > one_rows.shape[0] or filled + count > out_rows.shape[0]:
            return k, filled
        for i in range(count):
            out_query[filled + i] = k
            out_rows[filled + i] = one_rows[i]
            out_dist[filled + i] = one_dist[i]
        filled += count
    return queries.shape[0], filled


@_jit
def frame_set_distances(
    a_words: Any, a_start: Any, a: Any, b_words: Any, b_start: Any, b: Any, radius: int, out: Any
) -> None:
    """vPDQ's distance of frame sets ``a[p]`` and ``b[p]`` for every ``p`` into
    ``out[p]``: 100 - floor(min(query %, compared %)), a frame matching when within
    ``radius`` bits of a frame of the other set (set ``a[p]`` is
    ``a_words[a_start[a[p]]:a_start[a[p] + 1]]``, likewise ``b``)."""
    width = 1
    for p in range(b.shape[0]):
        width = max(width, b_start[b[p] + 1] - b_start[b[p]])
    hit = np.zeros(width, np.bool_)
    for p in range(a.shape[0]):
        sa, ea = a_start[a[p]], a_start[a[p] + 1]
        sb, eb = b_start[b[p]], b_start[b[p] + 1]
        hit[: eb - sb] = False
        q_matched = 0
        for i in range(sa, ea):
            q0, q1, q2, q3 = a_words[i, 0], a_words[i, 1], a_words[i, 2], a_words[i, 3]
            found = False
            for j in range(sb, eb):
                if _distance(b_words, j, q0, q1, q2, q3) <= radius:
                    found = True
                    hit[j - sb] = True
            if found:
                q_matched += 1
        c_matched = 0
        for j in range(eb - sb):
            if hit[j]:
                c_matched += 1
        percent = min(q_matched * 100 / (ea - sa), c_matched * 100 / (eb - sb))
        out[p] = 100 - np.int64(np.floor(percent))
