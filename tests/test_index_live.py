"""LiveIndex: immediate add/disable/enable, background merge under concurrent search."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _index_oracle import brute_pdq, flip_bits
from tipline.errors import IndexCorruptError
from tipline.index import LiveIndex


def _hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def test_add_disable_enable_take_effect_immediately(tmp_path: Path):
    rng = np.random.default_rng(1)
    base = _hashes(rng, 500)
    live = LiveIndex.create(tmp_path, np.arange(500), base)
    assert live.generation == 1 and len(live) == 500
    new = np.frombuffer(flip_bits(base[3].tobytes(), 4, rng), np.uint8).reshape(1, 32)
    live.add([9000], new)
    ids, dist = live.search(base[3].tobytes(), 31)
    assert ids.tolist() == [3, 9000] and dist.tolist() == [0, 4]
    live.disable([3])
    assert live.search(base[3].tobytes(), 31)[0].tolist() == [9000]
    live.disable([9000])
    assert live.search(base[3].tobytes(), 31)[0].size == 0
    live.enable([3, 9000])
    assert live.search(base[3].tobytes(), 31)[0].tolist() == [3, 9000]


def test_merge_persists_delta_and_tombstones(tmp_path: Path):
    rng = np.random.default_rng(2)
    base = _hashes(rng, 300)
    live = LiveIndex.create(tmp_path, np.arange(300), base)
    extra = _hashes(rng, 50)
    live.add(np.arange(1000, 1050), extra)
    live.disable([5, 1001])
    live.merge()
    assert live.generation == 2 and live.delta_size == 0
    reopened = LiveIndex.open(tmp_path)
    assert reopened.generation == 2 and len(reopened) == 350
    assert reopened.disabled == frozenset({5, 1001})
    assert reopened.search(extra[0].tobytes(), 0)[0].tolist() == [1000]
    assert reopened.search(extra[1].tobytes(), 0)[0].size == 0
    assert reopened.search(base[5].tobytes(), 0)[0].size == 0
    reopened.enable([5])
    assert reopened.search(base[5].tobytes(), 0)[0].tolist() == [5]
    assert sorted(p.name for p in tmp_path.glob("pdq-*.tpi")) == [
        "pdq-00000001.tpi",
        "pdq-00000002.tpi",
    ]


def test_other_process_view_refreshes_to_new_generation(tmp_path: Path):
    rng = np.random.default_rng(3)
    base = _hashes(rng, 200)
    writer = LiveIndex.create(tmp_path, np.arange(200), base)
    reader = LiveIndex.open(tmp_path)
    extra = _hashes(rng, 1)
    writer.add([777], extra)
    assert reader.search(extra[0].tobytes(), 0)[0].size == 0
    assert reader.refresh() is False
    writer.merge()
    assert reader.refresh() is True and reader.generation == 2
    assert reader.search(extra[0].tobytes(), 0)[0].tolist() == [777]


def test_background_merge_while_searching(tmp_path: Path):
    rng = np.random.default_rng(4)
    base = _hashes(rng, 3000)
    live = LiveIndex.create(tmp_path, np.arange(3000), base)
    added = _hashes(rng, 200)
    live.add(np.arange(10_000, 10_200), added)
    all_ids = np.concatenate([np.arange(3000), np.arange(10_000, 10_200)])
    all_hashes = np.concatenate([base, added])
    queries = [all_hashes[i].tobytes() for i in range(0, 3200, 97)]
    expected = [brute_pdq(all_ids, all_hashes, q, 31) for q in queries]
    errors: list[str] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            for q, want in zip(queries, expected, strict=True):
                got = live.search(q, 31)
                if (got[0].tolist(), got[1].tolist()) != want:
                    errors.append(f"{got} != {want}")

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    merge = live.merge(background=True)
    assert merge is not None
    merge.join(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert live.generation == 2 and live.delta_size == 0


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "disable", "enable", "merge"]), st.integers(0, 2**31)),
        min_size=1,
        max_size=12,
    )
)
def test_random_operation_sequences_match_oracle(tmp_path_factory, ops):
    d = tmp_path_factory.mktemp("live")
    rng = np.random.default_rng(len(ops))
    hashes = _hashes(rng, 100)
    ids = np.arange(100, dtype=np.int64)
    live = LiveIndex.create(d, ids, hashes)
    disabled: set[int] = set()
    for op, arg in ops:
        r = np.random.default_rng(arg)
        if op == "add":
            k = int(r.integers(1, 5))
            src = hashes[r.integers(0, len(hashes), k)]
            new = np.stack(
                [
                    np.frombuffer(flip_bits(h.tobytes(), int(r.integers(0, 40)), r), np.uint8)
                    for h in src
                ]
            )
            new_ids = r.integers(0, 200, k)
            live.add(new_ids, new)
            ids = np.concatenate([ids, new_ids])
            hashes = np.concatenate([hashes, new])
        elif op == "merge":
            live.merge()
        else:
            chosen = {int(x) for x in r.integers(0, 200, 3)}
            (live.disable if op == "disable" else live.enable)(list(chosen))
            disabled = disabled | chosen if op == "disable" else disabled - chosen
        q = hashes[int(r.integers(0, len(hashes)))].tobytes()
        got = live.search(q, 31)
        assert (got[0].tolist(), got[1].tolist()) == brute_pdq(
            ids, hashes, q, 31, frozenset(disabled)
        )


def test_missing_or_damaged_directory(tmp_path: Path):
    with pytest.raises(IndexCorruptError, match="CURRENT"):
        LiveIndex.open(tmp_path)
    LiveIndex.create(tmp_path, np.arange(3), np.zeros((3, 32), np.uint8))
    (tmp_path / "pdq-00000001.tpi").write_bytes(b"TIPLIDX\x00" + bytes(100))
    with pytest.raises(IndexCorruptError):
        LiveIndex.open(tmp_path)
    (tmp_path / "CURRENT").write_text("garbage")
    with pytest.raises(IndexCorruptError, match="generation"):
        LiveIndex.open(tmp_path)


def test_empty_base_then_add_and_merge(tmp_path: Path):
    live = LiveIndex.create(tmp_path, [], np.zeros((0, 32), np.uint8))
    assert len(live) == 0 and live.search(bytes(32), 31)[0].size == 0
    live.add([42], np.full((1, 32), 0xAB, np.uint8))
    live.merge()
    assert LiveIndex.open(tmp_path).search(bytes([0xAB]) * 32, 0)[0].tolist() == [42]


def test_add_past_threshold_merges_in_background(tmp_path: Path):
    rng = np.random.default_rng(8)
    live = LiveIndex.create(tmp_path, np.arange(100), _hashes(rng, 100), auto_merge_at=50)
    extra = _hashes(rng, 60)
    live.add(np.arange(1000, 1060), extra)
    assert live.search(extra[59].tobytes(), 0)[0].tolist() == [1059]  # immediately
    for merge in [t for t in threading.enumerate() if t.name == "tipline-index-merge"]:
        merge.join()  # add() started it before returning
    assert live.generation == 2 and live.last_merge_error is None
    assert live.search(extra[59].tobytes(), 0)[0].tolist() == [1059]
    live.merge()  # nothing changed: no new generation
    assert live.generation == 2
