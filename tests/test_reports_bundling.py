"""Viral bundling plans: checked against the rules they promise, on random inputs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.errors import InputError
from tipline.services.reports.bundling import Upload, plan

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)


def _flip(base: bytes, bits: list[int]) -> bytes:
    value = int.from_bytes(base, "big")
    for b in bits:
        value ^= 1 << b
    return value.to_bytes(32, "big")


def _dist(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def test_many_users_one_cluster_is_one_bundle() -> None:
    rng = random.Random(1)
    meme = rng.randbytes(32)
    uploads = [
        Upload(
            f"s{i}", f"user-{i}", T0 + timedelta(seconds=i), _flip(meme, rng.sample(range(256), 6))
        )
        for i in range(60)
    ]
    other = [Upload(f"o{i}", f"user-{i}", T0, rng.randbytes(32)) for i in range(3)]
    late = Upload("late", "user-x", T0 + 2 * WINDOW, meme)
    no_hash = Upload("nohash", "user-y", T0, None)
    result = plan([*uploads, *other, late, no_hash], window=WINDOW, threshold=50, max_distance=31)
    assert [sorted(u.key for u in b) for b in result.bundles] == [sorted(u.key for u in uploads)]
    assert {u.key for u in result.singles} == {"o0", "o1", "o2", "late", "nohash"}


def test_one_user_uploading_many_times_is_not_viral() -> None:
    meme = bytes(32)
    uploads = [Upload(f"s{i}", "same-user", T0 + timedelta(seconds=i), meme) for i in range(100)]
    result = plan(uploads, window=WINDOW, threshold=3, max_distance=0)
    assert result.bundles == [] and len(result.singles) == 100


def test_bad_settings() -> None:
    with pytest.raises(InputError):
        plan([], window=WINDOW, threshold=1, max_distance=10)
    with pytest.raises(InputError):
        plan([], window=timedelta(0), threshold=2, max_distance=10)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 40),
    threshold=st.integers(2, 6),
    max_distance=st.integers(0, 64),
)
def test_plan_keeps_its_promises(seed: int, n: int, threshold: int, max_distance: int) -> None:
    rng = random.Random(seed)
    bases = [rng.randbytes(32) for _ in range(3)]
    uploads = [
        Upload(
            f"k{i}",
            f"u{rng.randrange(8)}",
            T0 + timedelta(minutes=rng.randrange(150)),
            None
            if rng.random() < 0.1
            else _flip(rng.choice(bases), rng.sample(range(256), rng.randrange(20))),
        )
        for i in range(n)
    ]
    result = plan(uploads, window=WINDOW, threshold=threshold, max_distance=max_distance)
    keys = [u.key for b in result.bundles for u in b] + [u.key for u in result.singles]
    assert sorted(keys) == sorted(u.key for u in uploads)  # each upload exactly once
    for bundle in result.bundles:
        founder = min(bundle, key=lambda u: (u.at, u.key))
        assert len({u.uploader for u in bundle}) >= threshold
        for u in bundle:
            assert u.pdq is not None and founder.pdq is not None
            assert _dist(u.pdq, founder.pdq) <= max_distance
            assert timedelta(0) <= u.at - founder.at <= WINDOW
