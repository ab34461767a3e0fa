"""VideoIndex (frame index + per-video aggregation) against vpdq's pairwise matcher."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _index_oracle import flip_bits, vpdq_pairwise
from tipline.index import VideoIndex
from tipline.signals.base import VideoFrame


def _video(rng: np.random.Generator, pool: list[bytes], n: int) -> list[VideoFrame]:
    frames = []
    for i in range(n):
        base = pool[int(rng.integers(len(pool)))]
        noise = int(rng.choice([0, 0, 5, 20, 30, 31, 32, 40, 128]))
        h = base if noise == 0 else flip_bits(base, min(noise, 256), rng)
        quality = int(rng.choice([100, 90, 50, 49, 10]))
        frames.append(VideoFrame(index=i, quality=quality, hash=h, seconds=float(i)))
    return frames


def _product_oracle():
    """``tipline.signals.vpdq.match_percentages`` when the video helper has landed it."""
    try:
        module = importlib.import_module("tipline.signals.vpdq")
    except ImportError:
        return None
    return getattr(module, "match_percentages", None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_videos=st.integers(1, 12), pool_size=st.integers(1, 12))
def test_percentages_equal_pairwise_oracle(seed, n_videos, pool_size):
    rng = np.random.default_rng(seed)
    pool = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(pool_size)]
    bank = {vid * 11: _video(rng, pool, int(rng.integers(1, 25))) for vid in range(n_videos)}
    index = VideoIndex.build(bank.items())
    query = _video(rng, pool, int(rng.integers(1, 25)))
    got = {m.video_id: (m.query_percent, m.compared_percent) for m in index.search(query)}
    want = {}
    usable_q = any(f.quality >= 50 for f in query)
    for vid, frames in bank.items():
        if not usable_q or not any(f.quality >= 50 for f in frames):
            continue
        q_pct, c_pct = vpdq_pairwise(query, frames)
        if q_pct > 0:
            want[vid] = (q_pct, c_pct)
    assert got.keys() == want.keys()
    for vid, (q_pct, c_pct) in want.items():
        assert got[vid][0] == q_pct and got[vid][1] == c_pct
    product = _product_oracle()
    if product is not None:
        for vid, pcts in want.items():
            assert tuple(product(query, bank[vid])) == pcts


def test_duplicate_frames_low_quality_first_and_save_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3))
    # vpdq dedupes before the quality filter: a low-quality first copy hides the good one
    bank_video = [
        VideoFrame(0, 10, a, 0.0),
        VideoFrame(1, 100, a, 1.0),
        VideoFrame(2, 100, b, 2.0),
        VideoFrame(3, 100, b, 3.0),
    ]
    index = VideoIndex.build([(5, bank_video)])
    query = [VideoFrame(0, 100, a, 0.0), VideoFrame(1, 100, b, 1.0), VideoFrame(2, 100, c, 2.0)]
    (match,) = index.search(query)
    assert (match.query_percent, match.compared_percent) == vpdq_pairwise(query, bank_video)
    assert match.video_id == 5 and match.compared_percent == 100.0
    path = tmp_path / "videos.tpi"
    index.save(path)
    assert VideoIndex.open(path).search(query) == index.search(query)
    assert index.search([VideoFrame(0, 10, b, 0.0)]) == []


def test_empty_bank_and_empty_query():
    index = VideoIndex.build([])
    assert len(index) == 0
    assert index.search([VideoFrame(0, 100, bytes(32), 0.0)]) == []
    assert VideoIndex.build([(1, [VideoFrame(0, 100, bytes(32), 0.0)])]).search([]) == []


def test_a_query_whose_usable_frames_are_hidden_by_low_quality_copies_matches_nothing():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    index = VideoIndex.build([(7, [VideoFrame(0, 100, a, 0.0)])])
    # the query's only good frame repeats a low-quality first frame: vpdq dedupes first
    query = [VideoFrame(0, 49, a, 0.0), VideoFrame(1, 100, a, 1.0)]
    assert vpdq_pairwise(query, [VideoFrame(0, 100, a, 0.0)]) == (0.0, 0.0)
    assert index.search(query) == []
