"""vPDQ text format, parse errors, the brute-force matcher and the ``vpdq`` signal type."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.errors import HashFormatError, ImportFormatError
from tipline.signals.base import VideoFrame, get_signal_type
from tipline.signals.vpdq import (
    VPDQ_THRESHOLD,
    VpdqSignalType,
    format_vpdq_text,
    match_percentages,
    parse_vpdq_text,
    vpdq_distance,
)

H0 = "e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c"
H1 = "c0f11178372c6aaccddea259648fbfd62f434c89c9e99b249772be216c8d055c"
SAMPLE = f"0,100,{H0},0.000\n1,98,{H1},0.033"

frames_st = st.lists(
    st.builds(
        VideoFrame,
        index=st.integers(0, 10**7),
        quality=st.integers(0, 100),
        hash=st.binary(min_size=32, max_size=32),
        seconds=st.integers(0, 10**8).map(lambda ms: ms / 1000),
    ),
    min_size=1,
    max_size=30,
)


def _flip(h: bytes, bits: int) -> bytes:
    """``h`` with its first ``bits`` bits inverted."""
    n = int.from_bytes(h, "big") ^ (((1 << bits) - 1) << (256 - bits))
    return n.to_bytes(32, "big")


def _naive(
    query: list[VideoFrame], target: list[VideoFrame], dist: int = 31, quality: int = 50
) -> tuple[float, float]:
    """The obviously-correct reading of python-threatexchange's match_VPDQ_hash_brute."""

    def prep(frames: list[VideoFrame]) -> list[bytes]:
        firsts: dict[bytes, int] = {}  # dedupe: first occurrence of each hash wins
        for f in frames:
            firsts.setdefault(f.hash, f.quality)
        return [h for h, q in firsts.items() if q >= quality]

    q, t = prep(query), prep(target)
    if not q or not t:
        return 0.0, 0.0

    def ham(a: bytes, b: bytes) -> int:
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()

    qm = sum(any(ham(a, b) <= dist for b in t) for a in q)
    tm = sum(any(ham(b, a) <= dist for a in q) for b in t)
    return qm * 100 / len(q), tm * 100 / len(t)


def test_parse_sample_line_format() -> None:
    frames = parse_vpdq_text(SAMPLE + "\n")
    assert [f.index for f in frames] == [0, 1]
    assert frames[0].quality == 100 and frames[0].hash.hex() == H0
    assert frames[1].seconds == pytest.approx(0.033)
    assert format_vpdq_text(frames) == SAMPLE


def test_parse_accepts_threatexchange_json() -> None:
    text = json.dumps([f"{H0},100,0.000", f"{H0.upper()},40,1.000"])
    frames = parse_vpdq_text(text)
    assert [(f.index, f.quality, f.seconds) for f in frames] == [(0, 100, 0.0), (1, 40, 1.0)]
    assert frames[1].hash.hex() == H0


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (f"0,100,{H0},0.0\n1,100,{H0}", 2, "4 comma-separated"),
        (f"0,100,{H0},0.0\n\n-1,100,{H0},0.1", 3, "frame number"),
        (f"0,101,{H0},0.0", 1, "quality"),
        (f"0,x,{H0},0.0", 1, "quality"),
        (f"0,100,{H0[:-1]},0.0", 1, "64 hex"),
        (f"0,100,{H0[:-1]}g,0.0", 1, "non-hex"),
        (f"0,100,{H0},soon", 1, "seconds"),
        (f"0,100,{H0},nan", 1, "finite"),
        ("", 1, "no frames"),
        ("[1, 2]", 1, "item 0"),
        ("[", 1, "invalid JSON"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_vpdq_text(text, path="list.txt")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"list.txt:{line}: ")


@given(frames_st)
def test_text_round_trip(frames: list[VideoFrame]) -> None:
    text = format_vpdq_text(frames)
    assert parse_vpdq_text(text) == frames
    assert format_vpdq_text(parse_vpdq_text(text)) == text
    assert VpdqSignalType().parse(text) == text


@settings(max_examples=60)
@given(frames_st, frames_st, st.integers(0, 256), st.integers(0, 101))
def test_match_percentages_equals_naive_loop(
    a: list[VideoFrame], b: list[VideoFrame], dist: int, quality: int
) -> None:
    assert match_percentages(a, b, dist, quality) == pytest.approx(_naive(a, b, dist, quality))


@settings(max_examples=60)
@given(frames_st, st.lists(st.integers(0, 60), min_size=1, max_size=30))
def test_match_percentages_near_copies(frames: list[VideoFrame], flips: list[int]) -> None:
    """A copy with some frames perturbed: exactly the frames moved <= 31 bits still match
    (checked against the naive loop, and symmetric between the sides)."""
    copy = [
        VideoFrame(f.index, f.quality, _flip(f.hash, flips[i % len(flips)]), f.seconds)
        for i, f in enumerate(frames)
    ]
    q, c = match_percentages(frames, copy)
    assert (q, c) == pytest.approx(_naive(frames, copy))
    assert match_percentages(copy, frames) == pytest.approx((c, q))


def test_quality_and_duplicates_are_filtered() -> None:
    good = bytes.fromhex(H0)
    far = bytes(32)  # 128+ bits from H0
    query = [VideoFrame(0, 100, good, 0.0), VideoFrame(1, 10, far, 1.0)]  # far is low quality
    target = [VideoFrame(0, 90, good, 0.0), VideoFrame(1, 90, good, 1.0)]  # duplicate
    assert match_percentages(query, target) == (100.0, 100.0)
    assert match_percentages(query, [VideoFrame(0, 49, good, 0.0)]) == (0.0, 0.0)
    # 31 bits is a match (inclusive), 32 is not.
    assert match_percentages(query, [VideoFrame(0, 90, _flip(good, 31), 0.0)]) == (100.0, 100.0)
    assert match_percentages(query, [VideoFrame(0, 90, _flip(good, 32), 0.0)]) == (0.0, 0.0)


def test_signal_type_distance_and_match() -> None:
    vt = get_signal_type("vpdq")
    assert isinstance(vt, VpdqSignalType)
    assert vt.default_threshold == VPDQ_THRESHOLD == 20
    good = bytes.fromhex(H0)
    a = [VideoFrame(i, 100, _flip(good, i), i / 1.0) for i in range(10)]
    # b: 8 of a's frames plus 2 unrelated ones -> query 80%, compared 80%.
    other = [VideoFrame(10 + i, 100, bytes([i + 1]) * 32, 0.0) for i in range(2)]
    b = a[:8] + other
    ta, tb = format_vpdq_text(a), format_vpdq_text(b)
    q, c = match_percentages(a, b)
    assert (q, c) == (100.0, 80.0)  # frames 8, 9 of a are within 31 bits of frame 7
    assert vt.distance(ta, tb) == 100 - math.floor(min(q, c)) == 20
    assert vt.distance(ta, ta) == 0
    assert vt.distance(ta, tb) == vt.distance(tb, ta)
    unrelated = format_vpdq_text(other)
    assert vt.distance(ta, unrelated) == 100
    assert vt.match(ta, [unrelated, tb, ta], 20) == [(1, 20), (2, 0)]
    assert vt.match(ta, [unrelated, tb, ta], 19) == [(2, 0)]


def test_signal_type_parse_raises_hash_format_error() -> None:
    with pytest.raises(HashFormatError, match="vpdq <input>:1"):
        VpdqSignalType().parse("0,100,zz,0.0")


@settings(max_examples=40)
@given(frames_st, frames_st)
def test_distance_symmetric_and_bounded(a: list[VideoFrame], b: list[VideoFrame]) -> None:
    d = vpdq_distance(a, b)
    assert 0 <= d <= 100
    assert d == vpdq_distance(b, a)
