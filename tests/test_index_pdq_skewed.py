"""PdqIndex's per-query radius split on heavily skewed banks, against brute force.

The index looks up every substring's buckets around the query and searches the
substrings whose outer shell holds the most rows one bit narrower. These tests build
banks where a few substrings are frozen across a big cluster (so their buckets at the
cluster's keys are huge) and check that (1) results still equal a brute-force scan at
every radius 0-48 with planted near-duplicates at every distance 0-48, and (2) the split
the index chose equals an independent computation of the shell sizes and really varies
from query to query.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _index_oracle import brute_pdq, flip_bits
from tipline.index import PdqIndex, pdq


def _flip_outside(
    centre: bytes, frozen: np.ndarray, n_bits: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(len(n_bits), 32) rows: ``centre`` with ``n_bits[i]`` distinct bits flipped in row
    ``i``, none of them in ``frozen`` (all rows at once: a row at a time cost ~0.1 s of
    CPU per thousand rows, most of these tests' time)."""
    free = np.nonzero(~frozen)[0]
    counts = np.minimum(np.asarray(n_bits), free.size)
    # a random order of the free bits per row; its first counts[i] are flipped
    order = np.argsort(rng.random((counts.size, free.size)), axis=1)
    flips = np.zeros((counts.size, free.size), dtype=np.uint8)
    np.put_along_axis(flips, order, np.arange(free.size) < counts[:, None], axis=1)
    bits = np.tile(np.unpackbits(np.frombuffer(centre, dtype=np.uint8)), (counts.size, 1))
    bits[:, free] ^= flips
    return np.packbits(bits, axis=1)


def _skewed_bank(seed: int, n_cluster: int, n_random: int, frozen_bytes: list[int], copies: int):
    """A cluster sharing ``frozen_bytes`` with its centre, random rows, and hashes planted
    at every distance 0-48 from a query that is itself near the centre."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    frozen = np.zeros(256, bool)
    for b in frozen_bytes:
        frozen[8 * b : 8 * b + 8] = True
    cluster = _flip_outside(centre, frozen, rng.integers(0, 70, n_cluster), rng)
    random_rows = rng.integers(0, 256, (n_random, 32), dtype=np.uint8)
    query = flip_bits(centre, int(rng.integers(0, 12)), rng)
    planted = [flip_bits(query, d, rng) for d in range(49) for _ in range(copies)]
    rows = np.concatenate(
        [cluster, random_rows, np.frombuffer(b"".join(planted), dtype=np.uint8).reshape(-1, 32)]
    )
    hashes = np.ascontiguousarray(rows[rng.permutation(len(rows))])
    ids = np.arange(len(rows), dtype=np.int64) * 3
    ids[1::7] = ids[0::7][: len(ids[1::7])]  # some ids carry two hashes
    return ids, hashes, query, centre, rng


def _radii(index: PdqIndex, query: bytes, radius: int) -> np.ndarray | None:
    stats = index.probe_stats(query, radius)
    return None if stats is None else stats[0]


def _substring_keys(hashes: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """(n, m) integer value of each substring, from the bits (independent of the index)."""
    bits = np.unpackbits(np.asarray(hashes, dtype=np.uint8).reshape(-1, 32), axis=1)
    out = np.zeros((bits.shape[0], len(widths)), dtype=np.int64)
    for j, (s, w) in enumerate(zip(starts.tolist(), widths.tolist(), strict=True)):
        for b in range(s, s + w):
            out[:, j] = (out[:, j] << 1) | bits[:, b]
    return out


def _expected_radii(index: PdqIndex, hashes: np.ndarray, query: bytes, radius: int) -> list[int]:
    """The split the index should choose, from shell sizes counted by brute force."""
    starts, widths = index.starts, index.widths
    m = len(widths)
    r_hi, a = divmod(radius, m)
    keys = _substring_keys(hashes, starts, widths)
    qkeys = _substring_keys(np.frombuffer(query, dtype=np.uint8), starts, widths)[0]
    sub_dist = np.bitwise_count(keys ^ qkeys)
    shell = (sub_dist == r_hi).sum(axis=0)
    # the m - (a+1) densest shells drop one bit; ties go to the lower substring index
    dropped = sorted(range(m), key=lambda j: (-int(shell[j]), j))[: m - (a + 1)]
    return [r_hi - 1 if j in dropped else r_hi for j in range(m)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_cluster=st.integers(0, 4000),
    n_random=st.integers(0, 300),
    frozen_bytes=st.lists(st.integers(0, 31), max_size=20, unique=True),
    copies=st.integers(1, 2),
    substrings=st.one_of(st.none(), st.integers(11, 40)),
    radii=st.lists(st.integers(0, 48), min_size=1, max_size=4),
)
def test_skewed_bank_equals_brute_force(
    seed, n_cluster, n_random, frozen_bytes, copies, substrings, radii
):
    ids, hashes, query, centre, rng = _skewed_bank(seed, n_cluster, n_random, frozen_bytes, copies)
    index = PdqIndex.build(ids, hashes, substrings=substrings)
    queries = [query, centre, hashes[int(rng.integers(len(hashes)))].tobytes()]
    for radius in radii:
        for q in queries:
            got_ids, got_dist = index.search(q, radius)
            want_ids, want_dist = brute_pdq(ids, hashes, q, radius)
            assert got_ids.tolist() == want_ids
            assert got_dist.tolist() == want_dist


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    frozen_bytes=st.lists(st.integers(0, 31), min_size=1, max_size=16, unique=True),
    radius=st.integers(0, 31),  # 16 substrings of 1.4k hashes: MIH (not a scan) up to 31
)
def test_chosen_split_matches_shell_sizes(seed, frozen_bytes, radius):
    ids, hashes, query, centre, rng = _skewed_bank(seed, 1200, 200, frozen_bytes, 1)
    index = PdqIndex.build(ids, hashes, substrings=16)
    for q in (query, centre, hashes[int(rng.integers(len(hashes)))].tobytes()):
        got = _radii(index, q, radius)
        assert got is not None
        want = _expected_radii(index, hashes, q, radius)
        assert got.tolist() == want
        # exact by the generalised pigeonhole principle: sum of (r_j + 1) > radius
        assert int((got + 1).sum()) == radius + 1


def test_every_radius_searches_by_split_and_equals_brute_force():
    """A 6k-hash skewed bank is searched by the per-query split (not a scan) at 0-48."""
    ids, hashes, query, centre, rng = _skewed_bank(17, 5000, 1000, [2, 3, 9, 10, 11, 30], 1)
    index = PdqIndex.build(ids, hashes)
    queries = [query, centre, hashes[int(rng.integers(len(hashes)))].tobytes()]
    for radius in range(49):
        for q in queries:
            assert _radii(index, q, radius) is not None
            got_ids, got_dist = index.search(q, radius)
            assert (got_ids.tolist(), got_dist.tolist()) == brute_pdq(ids, hashes, q, radius)


def test_split_varies_with_the_query():
    """A query one bit off the cluster in substrings 0-2 drops exactly those to r-1."""
    ids, hashes, _query, centre, rng = _skewed_bank(5, 3000, 0, [0, 1, 2, 3, 4, 5], 1)
    index = PdqIndex.build(ids, hashes, substrings=16)  # 16-bit substrings: 0-2 frozen
    radius = 27  # r = 1: 12 substrings at radius 1, the 4 densest shells at radius 0
    bits = np.unpackbits(np.frombuffer(centre, dtype=np.uint8)).copy()
    bits[[5, 21, 37]] ^= 1  # the whole cluster now sits in the radius-1 shell of 0, 1, 2
    off_by_one = np.packbits(bits).tobytes()
    splits = set()
    for q in [off_by_one, *(rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(20))]:
        got = _radii(index, q, radius)
        assert got is not None
        assert got.tolist() == _expected_radii(index, hashes, q, radius)
        splits.add(tuple(got.tolist()))
    assert len(splits) > 1
    near = _radii(index, off_by_one, radius)
    assert near is not None
    assert near[:3].tolist() == [0, 0, 0] and int((near == 0).sum()) == 4
    got = index.search(off_by_one, radius)
    assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, off_by_one, radius)


def test_dense_cluster_falls_back_to_a_scan_and_stays_exact():
    """More candidates than a quarter of the bank: answered by a linear scan, exactly."""
    rng = np.random.default_rng(9)
    centre = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    frozen = np.zeros(256, bool)
    frozen[:96] = True
    hashes = _flip_outside(centre, frozen, rng.integers(0, 40, 20000), rng)
    ids = np.arange(len(hashes), dtype=np.int64)
    index = PdqIndex.build(ids, hashes)
    stats = index.probe_stats(centre, 31)
    assert stats is not None and stats[1] * pdq.SCAN_FRACTION > len(index)
    for radius in (3, 20, 31, 40):
        got = index.search(centre, radius)
        assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, centre, radius)
    assert len(index.search(centre, 31)[0]) > 256


def test_scratch_grows_for_big_candidate_lists(monkeypatch):
    """Candidate lists longer than the scratch: the buffer grows and results stay exact."""
    monkeypatch.setattr(pdq, "_INITIAL_CANDIDATES", 8)
    monkeypatch.setattr(pdq, "_KEPT_CANDIDATES", 64)
    ids, hashes, query, centre, rng = _skewed_bank(4, 2500, 2000, [7, 8, 9], 2)
    index = PdqIndex.build(ids, hashes)
    qs = [query, centre, *(hashes[int(i)].tobytes() for i in rng.integers(len(hashes), size=30))]
    sizes = []
    for q in qs:
        stats = index.probe_stats(q, 31)
        assert stats is not None
        sizes.append(stats[1])
        got = index.search(q, 31)
        assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, q, 31)
    assert any(k > 64 and k * pdq.SCAN_FRACTION < len(index) for k in sizes)


def test_threads_share_an_index():
    """Each thread has its own scratch buffers: concurrent results equal serial ones."""
    ids, hashes, query, centre, rng = _skewed_bank(21, 2000, 500, [4, 5, 6, 7, 20], 2)
    index = PdqIndex.build(ids, hashes)
    qs = [query, centre] + [hashes[int(i)].tobytes() for i in rng.integers(len(hashes), size=60)]
    serial = [index.search(q, 31) for q in qs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda q: index.search(q, 31), qs))
            for (a_ids, a_d), (b_ids, b_d) in zip(serial, parallel, strict=True):
                assert a_ids.tolist() == b_ids.tolist() and a_d.tolist() == b_d.tolist()
    for q, (s_ids, s_d) in zip(qs, serial, strict=True):
        assert (s_ids.tolist(), s_d.tolist()) == brute_pdq(ids, hashes, q, 31)


def _at_substring_distances(query: bytes, starts, widths, dists, rng) -> bytes:
    """``query`` with ``dists[j]`` distinct bits flipped inside each substring ``j``."""
    bits = np.unpackbits(np.frombuffer(query, dtype=np.uint8)).copy()
    for s, w, d in zip(starts.tolist(), widths.tolist(), dists, strict=True):
        bits[s + rng.choice(w, size=d, replace=False)] ^= 1
    return np.packbits(bits).tobytes()


@pytest.mark.parametrize(("substrings", "n_cluster", "radius"), [(16, 3000, 27), (11, 9000, 31)])
def test_pigeonhole_boundary_rows_through_every_substring(substrings, n_cluster, radius):
    """Rows at exactly ``radius`` that only one substring's chosen ball can find.

    For the split chosen for the query, a row with substring distances r_j + 1 everywhere
    except r_k in substring k is at distance sum(r_j + 1) - 1 = radius and is in no ball
    but k's. Every such row must be found (through dropped and kept substrings alike), and
    the same rows one bit further out must not be.
    """
    ids, hashes, _query, centre, rng = _skewed_bank(13, n_cluster, 0, [0, 1, 2, 3, 4, 5], 1)
    layout = PdqIndex.build(ids[:1], hashes[:1], substrings=substrings)
    starts, widths = layout.starts, layout.widths
    bits = np.unpackbits(np.frombuffer(centre, dtype=np.uint8)).copy()
    bits[[int(s) + 3 for s in starts[:3]]] ^= 1  # cluster in the outer shell of 0-2
    query = np.packbits(bits).tobytes()
    split = _expected_radii(layout, hashes, query, radius)
    assert sorted(split).count(radius // len(widths) - 1) >= 1  # something is dropped
    inside, outside = [], []
    for k in range(len(widths)):
        dists = [r + 1 for r in split]
        dists[k] = split[k]
        if split[k] < 0:
            continue  # a skipped substring finds nothing
        inside.append(_at_substring_distances(query, starts, widths, dists, rng))
        dists[k] = split[k] + 1
        outside.append(_at_substring_distances(query, starts, widths, dists, rng))
    extra = np.frombuffer(b"".join(inside + outside), dtype=np.uint8).reshape(-1, 32)
    all_hashes = np.concatenate([hashes, extra])
    base = int(ids.max()) + 1
    all_ids = np.concatenate([ids, np.arange(base, base + len(extra), dtype=np.int64)])
    index = PdqIndex.build(all_ids, all_hashes, substrings=substrings)
    got_split = _radii(index, query, radius)
    assert got_split is not None and got_split.tolist() == split
    got_ids, got_dist = index.search(query, radius)
    found = dict(zip(got_ids.tolist(), got_dist.tolist(), strict=True))
    for i in range(len(inside)):
        assert found.get(base + i) == radius
        assert base + len(inside) + i not in found
    assert (got_ids.tolist(), got_dist.tolist()) == brute_pdq(all_ids, all_hashes, query, radius)
