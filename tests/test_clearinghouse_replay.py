"""The hash-level replay: generator shape, exact agreement with a brute-force
transcription of dedup/clusters, independence of epochs and workers, Ray."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests._replay_brute import as_link_set, brute_replay

from tipline.errors import InputError
from tipline.services.clearinghouse.dedup import MAX_LINKS, DedupSettings
from tipline.services.clearinghouse.replay import (
    LocalSearcher,
    ReplayResult,
    Signals,
    pair_scores,
    replay,
    report_groups,
    vpdq_pair_distances,
    words_of,
)
from tipline.services.clearinghouse.replay_search import (
    GrowingIndex,
    IndexReader,
    frames_to_search,
    pack,
    unpack,
)
from tipline.services.clearinghouse.replay_stream import (
    VIDEO,
    ReplaySpec,
    Stream,
    generate,
    load_stream,
    save_stream,
)
from tipline.signals.base import VideoFrame
from tipline.signals.vpdq import vpdq_distance

SETTINGS = DedupSettings()
#: small, but with everything that decides links: bursts of noisy re-shares (more than
#: MAX_LINKS indexed variants), look-alike items, low quality, exact copies, videos
DENSE = ReplaySpec(
    reports=400,
    seed=7,
    viral_share=0.5,
    burst_reports=200,
    viral_exact_share=0.1,
    lookalike_share=0.15,
    low_quality_share=0.08,
    mean_frames=4.0,
)


def _local(stream: Stream, epochs: int, dedup: DedupSettings = SETTINGS) -> ReplayResult:
    return replay(stream, dedup, LocalSearcher(dedup), epochs=epochs)


def _same(result: ReplayResult, brute: tuple[list[int], list[bool], set[Any]]) -> None:
    cluster, indexed, links = brute
    assert result.cluster.tolist() == cluster
    assert result.indexed.tolist() == indexed
    assert as_link_set(result.links) == links
    assert len(links) == result.links.shape[0]


def test_generated_stream_has_the_shape_asked_for() -> None:
    spec = ReplaySpec(reports=6000, seed=1)
    stream = generate(spec)
    assert stream.reports == 6000
    assert 2.6 <= stream.files / stream.reports <= 3.1
    items = np.unique(stream.file_item).shape[0]
    assert 2.9 <= stream.files / items <= 3.3
    assert 0.40 <= stream.video_file_share() <= 0.54
    # exact copies share a content; new copies of one item are perceptually near
    assert stream.content_kind.shape[0] < stream.files
    assert np.array_equal(np.diff(stream.frame_start) > 0, stream.content_kind == VIDEO)
    again = generate(spec)
    assert np.array_equal(again.file_content, stream.file_content)
    assert np.array_equal(again.frames, stream.frames)
    other = generate(ReplaySpec(reports=6000, seed=2))
    assert not np.array_equal(other.content_pdq[:100], stream.content_pdq[:100])


def test_saved_stream_loads_memory_mapped_and_replays_the_same(tmp_path: Path) -> None:
    stream = generate(ReplaySpec(reports=300, seed=4))
    save_stream(stream, tmp_path / "s")
    back = load_stream(tmp_path / "s")
    assert isinstance(back.frames, np.memmap)
    for name in ("report_start", "file_content", "file_item", "content_pdq", "frames"):
        assert np.array_equal(getattr(back, name), getattr(stream, name))
    again = _local(back, 2)
    first = _local(stream, 2)
    assert np.array_equal(again.cluster, first.cluster)
    assert np.array_equal(again.links, first.links)
    (tmp_path / "s" / "frames.npy").unlink()
    with pytest.raises(InputError):
        load_stream(tmp_path / "s")
    np.save(tmp_path / "s" / "frames.npy", stream.frames[:-1], allow_pickle=False)
    with pytest.raises(InputError):
        load_stream(tmp_path / "s")


def test_generator_refuses_nonsense() -> None:
    with pytest.raises(InputError):
        generate(ReplaySpec(reports=0))
    with pytest.raises(InputError):
        generate(ReplaySpec(video_share=1.5))


@pytest.fixture(scope="module")
def dense() -> tuple[Stream, tuple[list[int], list[bool], set[Any]]]:
    stream = generate(DENSE)
    return stream, brute_replay(stream, SETTINGS)


def test_replay_equals_brute_force_on_a_dense_stream(
    dense: tuple[Stream, tuple[list[int], list[bool], set[Any]]],
) -> None:
    stream, brute = dense
    result = _local(stream, epochs=3)
    _same(result, brute)
    # the stream exercises what decides links and the index
    per_file = np.bincount(result.links[:, 0], minlength=stream.files)
    assert per_file.max() == MAX_LINKS
    assert 0 < result.indexed.sum() < stream.files
    signals = set(result.links[:, 2].tolist())
    assert signals == {0, 3, 4}
    _, recall = pair_scores(result.cluster, stream.file_item)
    assert recall < 1.0  # low-quality items are found by exact copies only


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    reports=st.integers(1, 70),
    epochs=st.integers(1, 5),
    near=st.integers(0, 31),
    pdq=st.integers(10, 40),
    vpdq=st.integers(0, 60),
)
def test_replay_equals_brute_force(
    seed: int, reports: int, epochs: int, near: int, pdq: int, vpdq: int
) -> None:
    spec = ReplaySpec(
        reports=reports,
        seed=seed,
        viral_share=0.3,
        burst_reports=15,
        viral_exact_share=0.2,
        lookalike_share=0.2,
        low_quality_share=0.1,
        mean_frames=3.0,
    )
    dedup = DedupSettings(pdq_distance=pdq, vpdq_distance=vpdq, near_copy_bits=near)
    stream = generate(spec)
    _same(_local(stream, epochs, dedup), brute_replay(stream, dedup))


@settings(max_examples=30, deadline=None)
@given(
    sets=st.lists(
        st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=5,
    )
)
def test_vectorised_vpdq_distance_is_vpdq_distance(sets: list[tuple[int, int, int]]) -> None:
    # pairs of frame sets: random frames, some copied with a few bits flipped
    frames, starts, pairs = [], [0], []
    for na, nb, seed in sets:
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 256, (na, 32), dtype=np.uint8)
        b = rng.integers(0, 256, (nb, 32), dtype=np.uint8)
        shared = min(na, nb, int(rng.integers(0, 7)))
        noise = (rng.random((shared, 256)) < rng.random() * 0.2).astype(np.uint8)
        b[:shared] = a[:shared] ^ np.packbits(noise, axis=1)
        for block in (a, b):
            frames.append(block)
            starts.append(starts[-1] + block.shape[0])
        pairs.append((len(starts) - 3, len(starts) - 2))
    all_frames = np.concatenate(frames)
    signals = Signals(
        has_pdq=np.zeros(len(starts) - 1, dtype=bool),
        pdq_words=np.zeros((len(starts) - 1, 4), dtype=np.uint64),
        usable_start=np.array(starts, dtype=np.int64),
        usable_words=words_of(all_frames),
    )
    a_idx = np.array([p[0] for p in pairs], dtype=np.int64)
    b_idx = np.array([p[1] for p in pairs], dtype=np.int64)
    got = vpdq_pair_distances(signals, a_idx, b_idx).tolist()

    def video(c: int) -> list[VideoFrame]:
        rows = all_frames[starts[c] : starts[c + 1]]
        return [VideoFrame(k, 100, r.tobytes(), float(k)) for k, r in enumerate(rows)]

    assert got == [vpdq_distance(video(a), video(b)) for a, b in pairs]


def test_epochs_do_not_change_the_outcome() -> None:
    stream = generate(ReplaySpec(reports=900, seed=11))
    one, many = _local(stream, 1), _local(stream, 7)
    assert many.epochs == 7
    assert np.array_equal(one.cluster, many.cluster)
    assert np.array_equal(one.indexed, many.indexed)
    assert np.array_equal(one.links, many.links)


def test_pair_scores_and_report_groups() -> None:
    # found {0,1,2} {3}; truth {0,1} {2,3}: 1 of 3 found pairs true, 1 of 2 true found
    assert pair_scores([0, 0, 0, 3], [5, 5, 6, 6]) == (1 / 3, 1 / 2)
    assert pair_scores([0, 1], [0, 1]) == (0.0, 0.0)
    stream = generate(ReplaySpec(reports=400, seed=3, shared_ip_share=0.0))
    groups = report_groups(stream)
    account = stream.report_account
    for a in range(0, 400, 7):  # same account, same group; one group, a shared key
        same = np.flatnonzero(account == account[a])
        assert (groups[same] == groups[a]).all()
        members = np.flatnonzero(groups == groups[a])
        assert np.unique(account[members]).shape[0] == 1  # no shared addresses here


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    radius=st.integers(0, 64),
)
def test_growing_index_finds_what_brute_force_finds(
    batches: list[int], seed: int, radius: int
) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        _grow_and_search(Path(tmp), rng, batches, radius)


def _grow_and_search(
    directory: Path, rng: np.random.Generator, batches: list[int], radius: int
) -> None:
    # main rebuilt every few batches, a delta between; the reader maps the files
    index = GrowingIndex(directory, "photo", min_main=16)
    reader = IndexReader(directory)
    added = np.zeros((0, 4), dtype=np.uint64)
    for size in batches:
        base = added[rng.integers(0, added.shape[0], size)] if added.shape[0] else None
        fresh = words_of(rng.integers(0, 256, (size, 32), dtype=np.uint8))
        if base is not None:  # near copies of earlier hashes, so searches find something
            flips = words_of(np.packbits(rng.random((size, 256)) < 0.08, axis=1))
            fresh = np.where(rng.random((size, 1)) < 0.5, base ^ flips, fresh)
        ids = 1000 + np.arange(added.shape[0], added.shape[0] + size, dtype=np.int64)
        index.add(ids, fresh)
        added = np.concatenate([added, fresh])
        assert len(index) == added.shape[0]
        reader.use(index.manifest())
        for q in added[rng.integers(0, added.shape[0], 3)] if added.shape[0] else []:
            _, numbers, dist = reader.search(q.reshape(1, 4), radius)
            truth = np.bitwise_count(added ^ q).sum(axis=1)
            expect = np.flatnonzero(truth <= radius)
            order = np.argsort(numbers)
            assert numbers[order].tolist() == (1000 + expect).tolist()
            assert dist[order].tolist() == truth[expect].tolist()
    assert index.main is not None or sum(batches) <= 4


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 64), min_size=1, max_size=8), distance=st.integers(0, 120))
def test_frames_searched_are_enough_to_find_every_match(counts: list[int], distance: int) -> None:
    # a video of n frames is within the distance of another only when at least
    # ceil(n * (100 - d) / 100) of its frames match (its percentage, floored, >= 100 - d)
    n = np.array(counts, dtype=np.int64)
    searched = frames_to_search(n, distance)
    assert ((searched >= 1) & (searched <= n)).all()
    for frames, k in zip(counts, searched.tolist(), strict=True):
        # the most frames that can match while missing all k searched ones
        best = frames - k
        within = 100 - int(np.floor(best * 100 / frames)) <= distance
        assert not within or distance >= 100


def test_blobs_round_trip_and_refuse_other_types() -> None:
    arrays = {
        "a": np.arange(5, dtype=np.int64),
        "w": np.arange(8, dtype=np.uint64).reshape(2, 4),
        "e": np.zeros((0, 4), dtype=np.uint64),
        "b": np.array([True, False]),
    }
    back = unpack(pack(arrays))
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    with pytest.raises(InputError):
        unpack(pack({"x": np.zeros(2, dtype=np.float64)}))


# Ray's own sockets are sometimes finalised after the cluster stops on a loaded machine
# (an "Exception ignored in BaseConnection.__del__" from Ray internals, as in test_scan_ray).
@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_replay_on_ray_equals_brute_force_and_local(
    ray_cluster: Any, dense: tuple[Stream, tuple[list[int], list[bool], set[Any]]]
) -> None:
    from tipline.services.clearinghouse.replay_ray import RaySearch

    stream, brute = dense
    searcher = RaySearch("auto", SETTINGS, workers=2)
    try:
        on_ray = replay(stream, SETTINGS, searcher, epochs=4)
        stats = searcher.stats()
    finally:
        searcher.close()
    _same(on_ray, brute)
    assert len(stats) == 2 and all(s["cpu_seconds"] > 0 and s["peak_mib"] > 0 for s in stats)
    bigger = generate(ReplaySpec(reports=800, seed=5))
    searcher = RaySearch("auto", SETTINGS)
    try:
        on_ray = replay(bigger, SETTINGS, searcher, epochs=3)
    finally:
        searcher.close()
    local = _local(bigger, 5)
    assert np.array_equal(on_ray.cluster, local.cluster)
    assert np.array_equal(on_ray.links, local.links)
