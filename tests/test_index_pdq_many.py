"""PdqIndex.search_rows_many against one search_rows per query (its brute-force twin is
tests of search_rows): same hits, grouped by query, whatever the buffers' sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.index import pdq
from tipline.index.pdq import PdqIndex


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 400),
    queries=st.integers(0, 60),
    radius=st.integers(0, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_many_equals_one_by_one(size: int, queries: int, radius: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**63, (size, 4), dtype=np.uint64)
    # half the queries are near copies of indexed hashes (a dense cluster for some)
    base = words[rng.integers(0, size, queries)]
    flips = np.packbits(rng.random((queries, 256)) < rng.random() * 0.15, axis=1)
    near = base ^ flips.view(">u8").astype(np.uint64).reshape(-1, 4)
    fresh = rng.integers(0, 2**63, (queries, 4), dtype=np.uint64)
    q = np.where(rng.random((queries, 1)) < 0.5, near, fresh)
    index = PdqIndex.from_words(np.arange(size, dtype=np.int64) * 7, words)
    got_q, got_rows, got_dist = index.search_rows_many(q, radius)
    assert (np.diff(got_q) >= 0).all()
    for k in range(queries):
        rows, dist = index.search_rows(q[k : k + 1], radius)
        mine = got_q == k
        assert sorted(zip(got_rows[mine].tolist(), got_dist[mine].tolist(), strict=True)) == (
            sorted(zip(rows.tolist(), dist.tolist(), strict=True))
        )
        truth = np.bitwise_count(words ^ q[k]).sum(axis=1)
        found = index.ids[got_rows[mine]] // 7  # rows are in the index's own order
        assert sorted(found.tolist()) == np.flatnonzero(truth <= radius).tolist()


def test_many_handles_overflowing_buffers() -> None:
    # every query's hits overflow the 256-slot result buffer and the output arrays
    rng = np.random.default_rng(3)
    centre = rng.integers(0, 2**63, (1, 4), dtype=np.uint64)
    flips = np.packbits(rng.random((5000, 256)) < 0.02, axis=1)
    words = centre ^ flips.view(">u8").astype(np.uint64).reshape(-1, 4)
    index = PdqIndex.from_words(np.arange(5000, dtype=np.int64), words)
    q = np.repeat(centre, 3, axis=0)
    got_q, got_rows, _ = index.search_rows_many(q, 31)
    truth = np.flatnonzero(np.bitwise_count(words ^ centre).sum(axis=1) <= 31)
    assert truth.shape[0] > 1024
    for k in range(3):
        assert sorted(index.ids[got_rows[got_q == k]].tolist()) == truth.tolist()
    assert pdq.MAX_RADIUS == 256
