"""ExactIndex for MD5/SHA-1/SHA-256 against a dict oracle."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.errors import InputError
from tipline.index import ExactIndex


@settings(max_examples=40, deadline=None)
@given(
    width=st.sampled_from([16, 20, 32]),
    data=st.lists(st.tuples(st.integers(0, 30), st.integers(-(2**62), 2**62)), max_size=60),
    probes=st.lists(st.integers(0, 35), min_size=1, max_size=10),
)
def test_matches_dict_oracle(width, data, probes):
    def value(k: int) -> bytes:  # includes values with leading/trailing zero bytes
        return (
            (bytes([k]) + bytes(width - 2) + bytes([k % 3]))
            if k % 2
            else bytes(width - 1) + bytes([k])
        )

    oracle: dict[bytes, list[int]] = {}
    for k, entry in data:
        oracle.setdefault(value(k), []).append(entry)
    index = ExactIndex.build([e for _, e in data], [value(k) for k, _ in data], width)
    for k in probes:
        assert index.search(value(k)).tolist() == sorted(oracle.get(value(k), []))
        assert index.search(value(k).hex()).tolist() == sorted(oracle.get(value(k), []))


def test_real_digests_and_array_input():
    blobs = [f"file-{i}".encode() for i in range(100)]
    md5 = np.frombuffer(b"".join(hashlib.md5(b).digest() for b in blobs), np.uint8).reshape(-1, 16)
    index = ExactIndex.build(np.arange(100) * 3, md5, 16)
    assert len(index) == 100
    assert index.search(hashlib.md5(b"file-42").hexdigest()).tolist() == [126]
    assert index.search(hashlib.md5(b"other").digest()).size == 0
    sha = ExactIndex.build([1], [hashlib.sha256(b"x").hexdigest()], 32)
    assert [r.tolist() for r in sha.search_batch([hashlib.sha256(b"x").digest(), bytes(32)])] == [
        [1],
        [],
    ]


def test_bad_input():
    with pytest.raises(InputError):
        ExactIndex.build([1], [b"short"], 16)
    with pytest.raises(InputError):
        ExactIndex.build([1], [bytes(16)], 17)
    index = ExactIndex.build([1], [bytes(20)], 20)
    with pytest.raises(InputError):
        index.search(bytes(16))
    with pytest.raises(InputError):
        index.search("nothex")
