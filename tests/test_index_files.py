"""Index files: round trip, memory mapping, and detection of truncation and bit flips."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _index_oracle import brute_pdq
from tipline.errors import IndexCorruptError
from tipline.index import ExactIndex, PdqIndex
from tipline.index.files import ALIGN, FORMAT_VERSION, MAGIC, read_segment


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(42)
    hashes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    hashes[100:140] = hashes[0]  # duplicates
    return np.arange(3000, dtype=np.int64) + 10**12, hashes


@pytest.fixture()
def saved(bank, tmp_path: Path) -> Path:
    path = tmp_path / "bank.tpi"
    PdqIndex.build(*bank).save(path)
    return path


def test_round_trip_is_memory_mapped_and_equal(bank, saved: Path, tmp_path: Path):
    ids, hashes = bank
    opened = PdqIndex.open(saved)
    assert len(opened) == len(ids)
    assert not opened.words.flags.writeable  # a read-only mapping, not a copy
    for i in (0, 7, 2999):
        q = hashes[i].tobytes()
        got = opened.search(q, 31)
        assert (got[0].tolist(), got[1].tolist()) == brute_pdq(ids, hashes, q, 31)
    streamed = tmp_path / "streamed.tpi"
    PdqIndex.build_file(streamed, ids, hashes)
    assert streamed.read_bytes() == saved.read_bytes()


def test_layout_is_aligned_and_documented(saved: Path):
    raw = saved.read_bytes()
    magic, version, hlen, _, _ = struct.unpack_from("<8sIIII", raw)
    assert magic == MAGIC and version == FORMAT_VERSION
    header = json.loads(raw[24 : 24 + hlen])
    assert header["kind"] == "pdq" and header["file_size"] == len(raw)
    assert all(s["offset"] % ALIGN == 0 for s in header["sections"])


@pytest.mark.parametrize("keep", [0, 10, 24, 5000, -1])
def test_truncated_file_is_detected(saved: Path, keep: int):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:keep] if keep >= 0 else raw[:-1])
    with pytest.raises(IndexCorruptError, match=r"corrupt or truncated|bad magic"):
        PdqIndex.open(saved)
    with pytest.raises(IndexCorruptError):
        PdqIndex.open(saved, verify=False)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fraction=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(saved: Path, fraction: float, bit: int):
    raw = bytearray(saved.read_bytes())
    header_end = 24 + struct.unpack_from("<I", raw, 12)[0]
    sections = json.loads(raw[24:header_end])["sections"]
    used = [(0, header_end)] + [(s["offset"], s["offset"] + s["nbytes"]) for s in sections]
    total = sum(b - a for a, b in used)
    pick = int(fraction * total)
    for a, b in used:
        if pick < b - a:
            pos = a + pick
            break
        pick -= b - a
    raw[pos] ^= 1 << bit
    bad = saved.with_name("bad.tpi")
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError):
        PdqIndex.open(bad)


@pytest.mark.parametrize("pos", [0, 7, 8, 12, 16, 20, 23, 24])
def test_flips_in_the_fixed_prefix_are_detected(saved: Path, pos: int):
    raw = bytearray(saved.read_bytes())
    raw[pos] ^= 0x10
    saved.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError):
        PdqIndex.open(saved)


def test_wrong_kind_and_version(saved: Path, tmp_path: Path):
    with pytest.raises(IndexCorruptError, match="expected 'exact'"):
        read_segment(saved, "exact")
    raw = bytearray(saved.read_bytes())
    struct.pack_into("<I", raw, 8, FORMAT_VERSION + 1)
    newer = tmp_path / "newer.tpi"
    newer.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError, match="version"):
        PdqIndex.open(newer)
    other = tmp_path / "other.tpi"
    other.write_bytes(b"\x80\x04not an index at all" * 10)
    with pytest.raises(IndexCorruptError, match="bad magic"):
        PdqIndex.open(other)


def test_error_message_names_the_file(saved: Path):
    saved.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(IndexCorruptError) as info:
        PdqIndex.open(saved)
    assert str(saved) in str(info.value)


def test_exact_index_file_round_trip_and_corruption(tmp_path: Path):
    values = [bytes([i]) * 15 + b"\x00" for i in range(1, 51)] + [b"\x00" * 16]
    index = ExactIndex.build(np.arange(51), values, 16)
    path = tmp_path / "md5.tpi"
    index.save(path)
    opened = ExactIndex.open(path)
    assert opened.search(b"\x00" * 16).tolist() == [50]
    assert opened.search((bytes([3]) * 15 + b"\x00").hex()).tolist() == [2]
    raw = path.read_bytes()
    path.write_bytes(raw[:-8])
    with pytest.raises(IndexCorruptError):
        ExactIndex.open(path)
    flipped = bytearray(raw)
    flipped[-ALIGN] ^= 1  # inside the last section (ids)
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexCorruptError, match="checksum"):
        ExactIndex.open(path)
