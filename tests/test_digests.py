"""Digest signal types: known vectors, parsing, brute-force match, entry points."""

from __future__ import annotations

import hashlib
from importlib.metadata import entry_points

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipline.errors import HashFormatError
from tipline.signals.base import MediaKind, SignalType
from tipline.signals.digests import (
    Md5SignalType,
    Sha1SignalType,
    Sha256SignalType,
    VideoMd5SignalType,
    VideoSha256SignalType,
    digest,
)

TYPES = [Md5SignalType, Sha1SignalType, Sha256SignalType, VideoMd5SignalType, VideoSha256SignalType]


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (Md5SignalType, "900150983cd24fb0d6963f7d28e17f72"),
        (Sha1SignalType, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (Sha256SignalType, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (VideoMd5SignalType, "900150983cd24fb0d6963f7d28e17f72"),
        (
            VideoSha256SignalType,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
    ],
)
def test_known_vectors(cls: type, expected: str) -> None:
    signal_type = cls()
    assert signal_type.compute(b"abc") == expected
    assert digest(signal_type.name, b"abc") == expected
    assert signal_type.parse(expected.upper()) == expected


@pytest.mark.parametrize("cls", TYPES)
def test_protocol_and_media(cls: type) -> None:
    signal_type = cls()
    assert isinstance(signal_type, SignalType)
    assert signal_type.default_threshold == 0
    assert signal_type.media is (
        MediaKind.VIDEO if "video" in signal_type.name else MediaKind.PHOTO
    )


@pytest.mark.parametrize("cls", TYPES)
@pytest.mark.parametrize("text", ["", "xyz", "0" * 10, "0" * 200, "g" * 32])
def test_parse_rejects_malformed(cls: type, text: str) -> None:
    with pytest.raises(HashFormatError):
        cls().parse(text)


def test_entry_points_point_at_these_classes() -> None:
    eps = {ep.name: ep for ep in entry_points(group="tipline.signals")}
    for cls in TYPES:
        assert eps[cls.name].load() is cls


@given(st.binary(), st.lists(st.binary(max_size=8), max_size=20), st.integers(0, 1))
def test_match_equals_brute_force(query: bytes, pool: list[bytes], threshold: int) -> None:
    sha = Sha256SignalType()
    q = sha.compute(query)
    candidates = [sha.compute(b) for b in [*pool, query]]
    got = sha.match(q, candidates, threshold)
    expected = [
        (i, 0 if c == q else 1)
        for i, c in enumerate(candidates)
        if (0 if c == q else 1) <= threshold
    ]
    assert got == expected
    assert (len(candidates) - 1, 0) in got


@given(st.binary())
def test_digest_matches_hashlib(data: bytes) -> None:
    assert Md5SignalType().compute(data) == hashlib.md5(data).hexdigest()
    assert Sha256SignalType().compute(data) == hashlib.sha256(data).hexdigest()
