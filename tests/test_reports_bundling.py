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
    with pytest.raises(InputError):
        plan([], window=WINDOW, threshold=2, max_distance=10, max_files=0)


@pytest.mark.parametrize(
    ("max_files", "sizes", "singles"),
    [(None, [7], 0), (8, [7], 0), (7, [7], 0), (6, [6, 1], 0), (3, [3, 3, 1], 0), (1, [1] * 5, 2)],
)
def test_the_file_cap_closes_a_cluster_at_the_boundary(
    max_files: int | None, sizes: list[int], singles: int
) -> None:
    """7 uploads of one picture by 7 accounts, threshold 3: the cap splits them in time
    order; a part after full ones counts their uploaders, so even a part of one upload
    is a (viral) bundle once the cluster has 3 accounts."""
    uploads = [Upload(f"s{i}", f"user-{i}", T0 + timedelta(seconds=i), bytes(32)) for i in range(7)]
    result = plan(uploads, window=WINDOW, threshold=3, max_distance=0, max_files=max_files)
    assert [len(b) for b in result.bundles] == sizes and len(result.singles) == singles
    keys = [u.key for u in result.singles] + [u.key for b in result.bundles for u in b]
    assert keys == [u.key for u in uploads]


def test_an_upload_joins_only_a_cluster_with_room_for_all_its_files() -> None:
    at = [T0 + timedelta(seconds=i) for i in range(5)]
    uploads = [
        Upload("a", "user-a", at[0], bytes(32), files=2),
        Upload("b", "user-b", at[1], bytes(32), files=2),  # 4 > 3: founds a second
        Upload("c", "user-c", at[2], bytes(32)),  # fills the first (3 of 3)
        Upload("d", "user-d", at[3], bytes(32), files=4),  # more than a bundle holds
        Upload("e", "user-e", at[4], bytes(32)),  # the second, with room
    ]
    result = plan(uploads, window=WINDOW, threshold=2, max_distance=0, max_files=3)
    assert [[u.key for u in b] for b in result.bundles] == [["a", "c"], ["b", "e"]]
    assert [u.key for u in result.singles] == ["d"]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 40),
    threshold=st.integers(2, 6),
    max_distance=st.integers(0, 64),
    max_files=st.one_of(st.none(), st.integers(1, 12)),
)
def test_plan_keeps_its_promises(
    seed: int, n: int, threshold: int, max_distance: int, max_files: int | None
) -> None:
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
            rng.choice([1, 1, 1, 2, 3]),
        )
        for i in range(n)
    ]
    result = plan(
        uploads,
        window=WINDOW,
        threshold=threshold,
        max_distance=max_distance,
        max_files=max_files,
    )
    keys = [u.key for b in result.bundles for u in b] + [u.key for u in result.singles]
    assert sorted(keys) == sorted(u.key for u in uploads)  # each upload exactly once
    for bundle in result.bundles:
        founder = min(bundle, key=lambda u: (u.at, u.key))
        assert max_files is None or sum(u.files for u in bundle) <= max_files
        # below the threshold alone only when it continues a full cluster: at least
        # max_files files of nearby uploads came before it
        earlier = sum(
            u.files
            for u in uploads
            if u not in bundle
            and u.pdq is not None
            and founder.pdq is not None
            and (u.at, u.key) < (founder.at, founder.key)
            and _dist(u.pdq, founder.pdq) <= 2 * max_distance
        )
        assert len({u.uploader for u in bundle}) >= threshold or (
            max_files is not None and earlier >= max_files
        )
        for u in bundle:
            assert u.pdq is not None and founder.pdq is not None
            assert _dist(u.pdq, founder.pdq) <= max_distance
            assert timedelta(0) <= u.at - founder.at <= WINDOW
