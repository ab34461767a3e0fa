"""The python-threatexchange extension: tipline's PDQ index behind pytx's
SignalTypeIndex, checked query by query against pytx's own PDQIndex (differential)."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("threatexchange")

from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.pdq.pdq_index import PDQIndex

from tipline.errors import IndexCorruptError
from tipline.txext import TX_MANIFEST, TiplineHashedPdqSignal, TiplinePDQIndex, TiplinePdqSignal

ZERO = "0" * 64
ONES = "f" * 64
COMPARED = {"queries": 0}


def _flip(hex_hash: str, bits: int, rng: random.Random) -> str:
    value = int(hex_hash, 16)
    for b in rng.sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


def _answers(index: object, query: str) -> list[tuple[int, object]]:
    matches = index.query(query)  # type: ignore[attr-defined]
    return sorted(
        ((m.similarity_info.distance, m.metadata) for m in matches), key=lambda x: (x[0], str(x[1]))
    )


def _same(entries: list[tuple[str, object]], queries: list[str]) -> TiplinePDQIndex[object]:
    ours, theirs = TiplinePDQIndex.build(entries), PDQIndex.build(entries)
    for q in queries:
        assert _answers(ours, q) == _answers(theirs, q), q
    COMPARED["queries"] += len(queries)
    return ours


def _round_trip(index: TiplinePDQIndex[object]) -> TiplinePDQIndex[object]:
    buf = io.BytesIO()
    index.serialize(buf)
    assert not buf.getvalue().startswith(b"\x80")  # not a pickle stream
    buf.seek(0)
    return TiplinePDQIndex.deserialize(buf)


def test_manifest_loads_through_pytx() -> None:
    manifest = ThreatExchangeExtensionManifest.load_from_module_name("tipline.txext")
    assert manifest is TX_MANIFEST
    # pytx's CLI always loads its own ``pdq``: the extension's type needs its own name.
    assert [s.get_name() for s in manifest.signal_types] == ["tipline_pdq", "tipline_vpdq"]
    assert TiplineHashedPdqSignal.get_index_cls() is TiplinePDQIndex
    assert TiplinePdqSignal.get_name() == "pdq"
    assert TiplinePdqSignal.get_index_cls() is TiplinePDQIndex


def test_edge_cases_match_pdqindex() -> None:
    rng = random.Random(31)
    q = _flip(ZERO, 100, rng)
    entries: list[tuple[str, object]] = [
        (ZERO, 1),
        (ONES, 2),
        (ZERO, 3),  # duplicate hash: both returned
        (_flip(q, 31, rng), 4),  # exactly at the threshold: a match
        (_flip(q, 32, rng), 5),  # one past it: not a match
        (q, 6),
    ]
    queries = [ZERO, ONES, q, _flip(q, 1, rng), _flip(ZERO, 31, rng), _flip(ONES, 32, rng)]
    ours = _same(entries, queries)
    assert [m for _, m in _answers(ours, q)] == [6, 4]
    print(f"\nedge cases: compared {len(queries) + 5} queries with pytx's PDQIndex")
    single = _same([(ZERO, "only")], [ZERO, ONES, _flip(ZERO, 31, rng), _flip(ZERO, 32, rng)])
    assert _answers(single, ZERO) == [(0, "only")]
    assert _answers(_same([], [ZERO]), ZERO) == []


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), near=st.integers(0, 40))
def test_random_banks_match_pdqindex_also_after_adds_and_a_round_trip(
    seed: int, n: int, near: int
) -> None:
    rng = random.Random(seed)
    centres = [f"{rng.getrandbits(256):064x}" for _ in range(max(1, n // 10))]
    entries: list[tuple[str, object]] = [
        (_flip(rng.choice(centres), rng.randrange(0, 48), rng), i) for i in range(n)
    ]
    queries = [_flip(rng.choice(centres), rng.randrange(0, near + 1), rng) for _ in range(20)]
    ours = _same(entries, queries)
    theirs = PDQIndex.build(entries)
    more = [(_flip(rng.choice(centres), rng.randrange(0, 40), rng), n + i) for i in range(15)]
    ours.add(*more[0])
    theirs.add(*more[0])
    ours.add_all(more[1:])
    theirs.add_all(more[1:])
    loaded = _round_trip(ours)
    for q in queries:
        assert _answers(ours, q) == _answers(theirs, q) == _answers(loaded, q)
    COMPARED["queries"] += 2 * len(queries)
    print(f"\nrandom banks: {COMPARED['queries']} queries compared with pytx's PDQIndex so far")
    loaded.add(queries[0], "added after load")
    assert (0, "added after load") in _answers(loaded, queries[0])


def test_rebuild_threshold_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import tipline.txext.pdq as mod

    monkeypatch.setattr(mod, "REBUILD_AFTER", 7)  # base + delta both in play
    rng = random.Random(5)
    centre = f"{rng.getrandbits(256):064x}"
    entries: list[tuple[str, object]] = [
        (_flip(centre, rng.randrange(40), rng), i) for i in range(30)
    ]
    ours, theirs = TiplinePDQIndex[object](), PDQIndex[object]()
    for e in entries:
        ours.add(*e)
        theirs.add(*e)
    queries = [_flip(centre, k, rng) for k in range(0, 30, 3)]
    for q in queries:
        assert _answers(ours, q) == _answers(theirs, q)
    COMPARED["queries"] += len(queries)


def test_serialization_is_checked_and_json_only() -> None:
    index = TiplinePDQIndex.build([(ZERO, {"id": 1, "labels": ["a"]})])
    buf = io.BytesIO()
    index.serialize(buf)
    data = bytearray(buf.getvalue())
    assert _answers(TiplinePDQIndex.deserialize(io.BytesIO(bytes(data))), ZERO) == [
        (0, {"id": 1, "labels": ["a"]})
    ]
    data[data.index(b'"labels"') + 2] ^= 0xFF  # inside the metadata section
    with pytest.raises(IndexCorruptError):
        TiplinePDQIndex.deserialize(io.BytesIO(bytes(data)))
    with pytest.raises(TypeError, match="JSON"):
        TiplinePDQIndex.build([(ZERO, object())]).serialize(io.BytesIO())
    with pytest.raises(ValueError):
        TiplinePDQIndex.build([("not a hash", 1)])


def _pytx_cli_entries() -> list[tuple[str, object]]:
    """Entries as pytx's CLI indexes them: ``[(collab, FetchedSignalMetadata)]``."""
    from threatexchange.exchanges.fetch_state import (
        FetchedSignalMetadata,
        SignalOpinion,
        SignalOpinionCategory,
    )
    from threatexchange.exchanges.impl.fb_threatexchange_api import (
        FBThreatExchangeIndicatorRecord,
        FBThreatExchangeOpinion,
    )

    opinions = [
        FBThreatExchangeOpinion(True, SignalOpinionCategory.POSITIVE_CLASS, {"b", "a"}, 7, 12),
        SignalOpinion(False, SignalOpinionCategory.NEGATIVE_CLASS, set()),
    ]
    record = FBThreatExchangeIndicatorRecord(opinions)
    return [
        (ZERO, [("local", FetchedSignalMetadata())]),
        (ONES, [("te", record), ("local", FetchedSignalMetadata())]),
    ]


def test_pytx_cli_metadata_round_trips_without_pickle() -> None:
    entries = _pytx_cli_entries()
    loaded = _round_trip(TiplinePDQIndex.build(entries))
    for hash_, meta in entries:
        (match,) = loaded.query(hash_)
        assert match.metadata == meta and match.similarity_info.distance == 0
        assert [type(m) for _, m in match.metadata] == [type(m) for _, m in meta]
    assert loaded.query("") == []  # no usable hash (pytx: quality < 50) matches nothing


def test_tagged_metadata_only_rebuilds_loaded_pytx_metadata() -> None:
    from tipline.txext import codec

    record = _pytx_cli_entries()[1][1][0][1]
    node = codec.encode(record)
    assert codec.decode(node) == record
    bad = [
        {**node, "class": "os:_wrap_close"},  # loaded, but not pytx metadata
        {**node, "class": "not_imported_module:Thing"},  # never imported by reading
        {**node, "fields": {}},  # fields must be exactly the dataclass's
        {
            "$": "enum",
            "class": "threatexchange.exchanges.fetch_state:SignalOpinionCategory",
            "value": 99,
        },
        {"$": "set", "items": [[1]]},  # unhashable member
        {"$": "nope"},
        {"plain": "object"},
    ]
    for b in bad:
        with pytest.raises(IndexCorruptError):
            codec.decode(b)
    assert "not_imported_module" not in __import__("sys").modules
    with pytest.raises(TypeError):
        codec.encode(object())
    with pytest.raises(TypeError):
        codec.encode(__import__("dataclasses").make_dataclass("X", ["a"])(1))
    deep: object = 1
    for _ in range(codec.MAX_DEPTH + 2):
        deep = (deep,)
    with pytest.raises(TypeError):
        codec.encode(deep)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=5)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner, inner)
            | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
            | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_tagged_metadata_round_trips(value: object) -> None:
    import json

    from tipline.txext import codec

    assert codec.decode(json.loads(json.dumps(codec.encode(value)))) == value


def _video(rng: random.Random, centres: list[str], frames: int, noise: int) -> str:
    """pytx's vPDQ JSON form: frames near ``centres`` (some repeated, some low quality)."""
    items = []
    for i in range(frames):
        h = _flip(rng.choice(centres), rng.randrange(0, noise + 1), rng)
        quality = rng.choice([100, 100, 100, 90, 60, 49, 20])
        items.append(f"{h},{quality},{float(i):.3}")
    return __import__("json").dumps(items)


def _video_answers(index: object, query: str) -> list[tuple[float, float, object]]:
    found = [
        (
            m.similarity_info.query_match_percent,
            m.similarity_info.compared_match_percent,
            m.metadata,
        )
        for m in index.query(query)  # type: ignore[attr-defined]
    ]
    return sorted(found, key=lambda x: (x[0], x[1], str(x[2])))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25))
def test_vpdq_index_matches_pytx_vpdqindex(seed: int, n: int) -> None:
    pytest.importorskip("vpdq")
    from threatexchange.extensions.vpdq.vpdq_index import VPDQIndex

    from tipline.txext import TiplineVPDQIndex

    rng = random.Random(seed)
    centres = [f"{rng.getrandbits(256):064x}" for _ in range(12)]
    entries: list[tuple[str, object]] = []
    while len(entries) < n:
        video = _video(rng, rng.sample(centres, rng.randrange(1, 5)), rng.randrange(1, 12), 20)
        try:
            VPDQIndex.build([(video, 0)])
        except ValueError:  # no usable frame: both refuse it
            with pytest.raises(ValueError):
                TiplineVPDQIndex.build([(video, 0)])
            continue
        entries.append((video, {"id": len(entries)}))
    queries = [entries[rng.randrange(len(entries))][0] for _ in range(5)] + [
        _video(rng, rng.sample(centres, rng.randrange(1, 4)), rng.randrange(1, 12), 40)
        for _ in range(10)
    ]
    ours, theirs = TiplineVPDQIndex.build(entries), VPDQIndex.build(entries)
    loaded = TiplineVPDQIndex.deserialize(io.BytesIO(_bytes(ours)))
    for q in queries:
        assert _video_answers(ours, q) == _video_answers(theirs, q) == _video_answers(loaded, q)
    extra = entries[0][0]
    ours.add(extra, "added")
    theirs.add(extra, "added")
    loaded.add(extra, "added")
    for q in queries[:5]:
        assert _video_answers(ours, q) == _video_answers(theirs, q) == _video_answers(loaded, q)
    COMPARED["queries"] += 3 * len(queries)
    print(f"\nvPDQ: {COMPARED['queries']} queries compared with pytx so far")


def _bytes(index: object) -> bytes:
    buf = io.BytesIO()
    index.serialize(buf)  # type: ignore[attr-defined]
    assert not buf.getvalue().startswith(b"\x80")
    return buf.getvalue()


def test_vpdq_index_file_is_checked() -> None:
    from tipline.txext import TiplineVPDQIndex, TiplineVpdqSignal

    (example,) = TiplineVpdqSignal.get_examples()
    assert TiplineVpdqSignal.validate_signal_str(example) == example
    assert TiplineVpdqSignal.compare_hash(example, example).match
    data = bytearray(_bytes(TiplineVPDQIndex.build([(example, "x")])))
    assert [
        m.metadata for m in TiplineVPDQIndex.deserialize(io.BytesIO(bytes(data))).query(example)
    ] == ["x"]
    data[data.index(b"f8f8f0ce") + 3] ^= 0x01  # inside the videos section
    with pytest.raises(IndexCorruptError):
        TiplineVPDQIndex.deserialize(io.BytesIO(bytes(data)))
    with pytest.raises(ValueError):
        TiplineVPDQIndex.build([("not a video hash", 1)])


def test_vpdq_low_quality_first_occurrence_is_dropped_before_dedup_as_pytx() -> None:
    pytest.importorskip("vpdq")
    import json

    from threatexchange.extensions.vpdq.vpdq_index import VPDQIndex

    from tipline.txext import TiplineVPDQIndex

    rng = random.Random(7)
    a, b, c = (f"{rng.getrandbits(256):064x}" for _ in range(3))
    # ``a`` first at quality 20, again at 100: pytx filters first, so ``a`` counts.
    bank = json.dumps([f"{a},20,0.0", f"{b},100,1.0", f"{a},100,2.0", f"{c},100,3.0"])
    entries: list[tuple[str, object]] = [(bank, "bank")]
    queries = [
        json.dumps([f"{a},100,0.0"]),
        json.dumps([f"{a},100,0.0", f"{b},100,1.0"]),
        json.dumps([f"{a},30,0.0", f"{a},100,1.0", f"{c},100,2.0"]),
        json.dumps([f"{_flip(c, 31, rng)},100,0.0", f"{_flip(b, 32, rng)},100,1.0"]),
    ]
    ours, theirs = TiplineVPDQIndex.build(entries), VPDQIndex.build(entries)
    for q in queries:
        assert _video_answers(ours, q) == _video_answers(theirs, q), q
    assert _video_answers(ours, queries[0]) == [(100.0, 100 / 3, "bank")]
    with pytest.raises(ValueError):  # nothing usable: both refuse it
        TiplineVPDQIndex.build([(json.dumps([f"{a},49,0.0"]), 1)])
    with pytest.raises(ValueError):
        VPDQIndex.build([(json.dumps([f"{a},49,0.0"]), 1)])
