"""PdqIndex (multi-index hashing) against a brute-force oracle, at every radius 0-48."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _index_oracle import brute_pdq, flip_bits
from tipline.errors import InputError
from tipline.index import PdqIndex


def _bank(seed: int, n_random: int, planted: list[int], copies: int):
    """Random hashes plus near-duplicates of a query planted at the given distances."""
    rng = np.random.default_rng(seed)
    query = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    rows = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(n_random)]
    for d in planted:
        rows.extend(flip_bits(query, d, rng) for _ in range(copies))
    rng.shuffle(rows)
    hashes = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)
    # a few ids carry two hashes, as an entry with several signals does
    ids = np.arange(len(rows), dtype=np.int64) * 7
    ids[1::9] = ids[0::9][: len(ids[1::9])]
    return ids, hashes, query, rng


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_random=st.integers(0, 400),
    copies=st.integers(1, 3),
    substrings=st.one_of(st.none(), st.integers(16, 48)),
    radii=st.lists(st.integers(0, 48), min_size=1, max_size=4),
)
def test_equals_brute_force_with_planted_near_duplicates(seed, n_random, copies, substrings, radii):
    ids, hashes, query, rng = _bank(seed, n_random, list(range(49)), copies)
    index = PdqIndex.build(ids, hashes, substrings=substrings)
    queries = [query, hashes[int(rng.integers(len(hashes)))].tobytes()]
    for radius in radii:
        for q in queries:
            got_ids, got_dist = index.search(q, radius)
            want_ids, want_dist = brute_pdq(ids, hashes, q, radius)
            assert got_ids.tolist() == want_ids
            assert got_dist.tolist() == want_dist
            assert got_ids.dtype == np.int64 and got_dist.dtype == np.int64


def test_every_planted_distance_is_found_at_threshold_31():
    ids, hashes, query, _ = _bank(7, 2000, list(range(49)), 1)
    _got_ids, got_dist = PdqIndex.build(ids, hashes).search(query, 31)
    assert sorted(got_dist.tolist()) == sorted(brute_pdq(ids, hashes, query, 31)[1])
    assert set(range(32)) <= set(got_dist.tolist())


def test_clustered_bank_many_near_duplicates():
    """Thousands of hashes in one tight cluster: exact and each id reported once."""
    rng = np.random.default_rng(3)
    centre = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    rows = [flip_bits(centre, int(rng.integers(0, 12)), rng) for _ in range(3000)]
    rows += [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3000)]
    hashes = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)
    ids = np.arange(len(rows), dtype=np.int64)
    index = PdqIndex.build(ids, hashes)
    for radius in (0, 5, 16, 31, 48):
        for q in (centre, rows[5], rows[4000]):
            got = index.search(q, radius)
            assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, q, radius)


def test_radius_above_48_and_full_scan():
    ids, hashes, query, _ = _bank(11, 300, [0, 50, 64, 90], 2)
    index = PdqIndex.build(ids, hashes)
    for radius in (49, 64, 100, 256):
        got = index.search(query, radius)
        assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, query, radius)
    assert len(index.search(query, 256)[0]) == len(set(ids.tolist()))


def test_batch_and_query_forms_agree():
    ids, hashes, query, _ = _bank(5, 500, [3, 20, 30], 2)
    index = PdqIndex.build(ids, hashes)
    batch = index.search_batch(hashes[:20], 31)
    for i, (b_ids, b_dist) in enumerate(batch):
        s_ids, s_dist = index.search(hashes[i].tobytes(), 31)
        assert b_ids.tolist() == s_ids.tolist() and b_dist.tolist() == s_dist.tolist()
        assert index.search(hashes[i].tobytes().hex(), 31)[0].tolist() == s_ids.tolist()
        assert index.search(hashes[i], 31)[0].tolist() == s_ids.tolist()
    assert [r[0].tolist() for r in index.search_batch([query, query.hex()], 10)] == [
        index.search(query, 10)[0].tolist()
    ] * 2


def test_empty_index():
    index = PdqIndex.build(np.zeros(0, np.int64), np.zeros((0, 32), np.uint8))
    assert len(index) == 0
    ids, dist = index.search(bytes(32), 31)
    assert ids.size == 0 and dist.size == 0


@pytest.mark.parametrize(
    ("query", "radius"),
    [(bytes(31), 31), ("zz" * 32, 31), (bytes(32), -1), (bytes(32), 257), (bytes(32), 3.0)],
)
def test_bad_queries_raise_input_error(query, radius):
    index = PdqIndex.build(np.arange(2), np.zeros((2, 32), np.uint8))
    with pytest.raises(InputError):
        index.search(query, radius)


def test_bad_build_input():
    with pytest.raises(InputError):
        PdqIndex.build(np.arange(3), np.zeros((3, 31), np.uint8))
    with pytest.raises(InputError):
        PdqIndex.build(np.arange(2), np.zeros((3, 32), np.uint8))
