"""Independent brute-force PDQ radius search for the matching benchmark's recall check.

A plain popcount loop over every (query, bank row) pair, compiled by numba; it shares no
code with :mod:`tipline.index`. About 3 ns per pair on one core, so checking 2,000
queries against 10M hashes takes about a minute.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

#: Bank rows per block: 8192 x 32 bytes stay in cache while every query visits them.
BLOCK = 8192


@numba.njit(inline="always")
def _distance(words: Any, i: int, qwords: Any, j: int) -> Any:
    """Hamming distance of bank row ``i`` and query ``j`` (SWAR popcount of 4 words)."""
    m1 = np.uint64(0x5555555555555555)
    m2 = np.uint64(0x3333333333333333)
    m4 = np.uint64(0x0F0F0F0F0F0F0F0F)
    h01 = np.uint64(0x0101010101010101)
    d = np.uint64(0)
    for w in range(4):
        x = words[i, w] ^ qwords[j, w]
        x = x - ((x >> np.uint64(1)) & m1)
        x = (x & m2) + ((x >> np.uint64(2)) & m2)
        x = (x + (x >> np.uint64(4))) & m4
        d += (x * h01) >> np.uint64(56)
    return d


@numba.njit
def _block_hits(words: Any, lo: int, hi: int, qwords: Any, j: int, limit: Any, buf: Any) -> int:
    """Rows ``lo..hi`` within ``limit`` bits of query ``j`` into ``buf``; their count."""
    k = 0
    for i in range(lo, hi):
        if _distance(words, i, qwords, j) <= limit:
            buf[k] = i
            k += 1
    return k


@numba.njit
def pairs_within(words: Any, qwords: Any, radius: int) -> tuple[Any, Any]:
    """(query numbers, row numbers) of every pair within ``radius`` bits, by row block.

    ``words`` is the bank as ``(n, 4)`` uint64, ``qwords`` the queries likewise.
    """
    limit = np.uint64(radius)
    n, nq = words.shape[0], qwords.shape[0]
    buf = np.empty(BLOCK, np.int64)
    out_q = np.empty(1 << 16, np.int64)
    out_r = np.empty(1 << 16, np.int64)
    k = 0
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        for j in range(nq):
            m = _block_hits(words, lo, hi, qwords, j, limit, buf)
            for t in range(m):
                if k == out_q.shape[0]:
                    out_q = np.concatenate((out_q, np.empty_like(out_q)))
                    out_r = np.concatenate((out_r, np.empty_like(out_r)))
                out_q[k] = j
                out_r[k] = buf[t]
                k += 1
    return out_q[:k], out_r[:k]
