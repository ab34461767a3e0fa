"""Vault item format: round trips around chunk boundaries, and every kind of damage
(flipped byte in header, body or tag; truncation, also at a chunk boundary; appended
bytes; chunks swapped; a file moved to another item; a wrong data key) is detected."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.errors import EvidenceIntegrityError, InputError, VaultKeyError
from tipline.services.vault import _format
from tipline.services.vault.keys import MasterKey, unwrap, wrap

KEY = bytes(range(32))
ID = "01JDX0000000000000000000AB"


def _seal(data: bytes, chunk: int, item_id: str = ID, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    sealed = _format.encrypt(key, item_id, io.BytesIO(data), out, chunk_size=chunk)
    blob = out.getvalue()
    assert sealed.size == len(data)
    assert sealed.blob_size == len(blob) == _format.blob_size_for(len(data), chunk)
    return blob


def _open(blob: bytes, item_id: str = ID, key: bytes = KEY) -> bytes:
    return b"".join(_format.decrypt_chunks(key, item_id, io.BytesIO(blob)))


class _Trickle(io.RawIOBase):
    """A stream that returns at most 3 bytes per read (short reads must be retried)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 3) if size >= 0 else 3)


@settings(max_examples=150, deadline=None)
@given(
    chunk=st.integers(1, 64),
    extra=st.integers(-2, 2),
    whole=st.integers(0, 4),
    seed=st.binary(min_size=1, max_size=1),
)
def test_round_trip_around_chunk_boundaries(
    chunk: int, extra: int, whole: int, seed: bytes
) -> None:
    size = max(0, whole * chunk + extra)
    data = (seed * size)[:size] if size else b""
    data = bytes((b + i) % 256 for i, b in enumerate(data))
    blob = _seal(data, chunk)
    assert _open(blob) == data
    # short reads from the source and the file change nothing
    out = io.BytesIO()
    _format.encrypt(KEY, ID, _Trickle(data), out, chunk_size=chunk)  # type: ignore[arg-type]
    assert b"".join(_format.decrypt_chunks(KEY, ID, _Trickle(out.getvalue()))) == data  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 40), where=st.integers(0, 10**6))
def test_any_flipped_bit_is_detected(data: bytes, chunk: int, where: int) -> None:
    blob = bytearray(_seal(data, chunk))
    position = where % len(blob)
    blob[position] ^= 1 << (where % 8)
    with pytest.raises(EvidenceIntegrityError):
        _open(bytes(blob))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), chunk=st.integers(1, 40), cut=st.integers(1))
def test_any_truncation_is_detected(data: bytes, chunk: int, cut: int) -> None:
    blob = _seal(data, chunk)
    keep = cut % len(blob)
    with pytest.raises(EvidenceIntegrityError):
        _open(blob[:keep])


def test_truncation_at_a_chunk_boundary_names_the_final_chunk() -> None:
    chunk = 16
    data = os.urandom(chunk * 3 + 5)
    blob = _seal(data, chunk)
    step = chunk + _format.TAG_BYTES
    # drop the last chunk: the file now ends cleanly after chunk 2, written as non-final
    cut = blob[: _format.HEADER_BYTES + 3 * step]
    with pytest.raises(EvidenceIntegrityError, match="final chunk 2 failed authentication"):
        _open(cut)
    # exact multiple of the chunk size: dropping the (full) final chunk is caught too
    data = os.urandom(chunk * 3)
    blob = _seal(data, chunk)
    with pytest.raises(EvidenceIntegrityError, match="final chunk 1"):
        _open(blob[: _format.HEADER_BYTES + 2 * step])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (0, "bad magic"),  # magic
        (9, "unsupported vault format"),  # version
        (12, "chunk size"),  # chunk size (top byte: out of range)
        (14, "chunk 0 failed"),  # chunk size (in range but not the one written)
        (18, "chunk 0 failed"),  # nonce prefix
        (30, "belongs to item"),  # item id
        (60, "chunk 0 failed"),  # reserved bytes (authenticated as AAD)
        (_format.HEADER_BYTES + 3, "chunk 0 failed"),  # body
        (-1, "final chunk 2 failed"),  # last tag byte
        (-_format.TAG_BYTES - 1, "final chunk 2"),  # last body byte
    ],
)
def test_flipped_byte_in_header_body_or_tag(where: int, message: str) -> None:
    blob = bytearray(_seal(os.urandom(40), 16))
    blob[where] ^= 0x80
    with pytest.raises(EvidenceIntegrityError, match=message):
        _open(bytes(blob))


def test_appended_bytes_reordered_and_duplicated_chunks_fail() -> None:
    chunk = 8
    blob = _seal(os.urandom(chunk * 3), chunk)
    head, step = _format.HEADER_BYTES, chunk + _format.TAG_BYTES
    chunks = [blob[head + i * step : head + (i + 1) * step] for i in range(3)]
    with pytest.raises(EvidenceIntegrityError):
        _open(blob + b"\0")
    with pytest.raises(EvidenceIntegrityError):
        _open(blob + chunks[2])
    with pytest.raises(EvidenceIntegrityError, match="chunk 0"):
        _open(blob[:head] + chunks[1] + chunks[0] + chunks[2])
    with pytest.raises(EvidenceIntegrityError, match="chunk 1"):
        _open(blob[:head] + chunks[0] + chunks[0] + chunks[2])


def test_file_of_another_item_is_refused_even_with_a_rewritten_header() -> None:
    other = "01JDX0000000000000000000CD"
    blob = _seal(b"evidence of item CD", 16, item_id=other)
    with pytest.raises(EvidenceIntegrityError, match="belongs to item"):
        _open(blob)
    # rewriting the id in the header does not help: the header is authenticated
    forged = blob.replace(other.encode(), ID.encode())
    with pytest.raises(EvidenceIntegrityError, match="chunk 0 failed"):
        _open(forged)


def test_wrong_data_key_fails_and_nothing_is_yielded() -> None:
    blob = _seal(os.urandom(100), 10)
    chunks = _format.decrypt_chunks(bytes(32), ID, io.BytesIO(blob))
    with pytest.raises(EvidenceIntegrityError, match="chunk 0"):
        next(chunks)


def test_empty_item_and_tiny_files() -> None:
    blob = _seal(b"", 16)
    assert len(blob) == _format.HEADER_BYTES + _format.TAG_BYTES
    assert _open(blob) == b""
    with pytest.raises(EvidenceIntegrityError, match="shorter than the 64-byte header"):
        _open(blob[:10])
    with pytest.raises(EvidenceIntegrityError, match="less than its tag"):
        _open(blob[: _format.HEADER_BYTES])


def test_bad_arguments_are_input_errors() -> None:
    with pytest.raises(InputError):
        _seal(b"x", 0)
    with pytest.raises(InputError):
        _seal(b"x", 16, item_id="")
    with pytest.raises(InputError):
        _seal(b"x", 16, item_id="ü")
    with pytest.raises(InputError):
        _format.encrypt(b"short", ID, io.BytesIO(b""), io.BytesIO(), chunk_size=16)


def test_wrapped_key_is_bound_to_its_item_and_master_key() -> None:
    master = MasterKey.generate()
    wrapped = wrap(master, KEY, ID)
    assert unwrap(master, wrapped, ID) == KEY
    with pytest.raises(EvidenceIntegrityError, match="altered or moved"):
        unwrap(master, wrapped, "01JDX0000000000000000000CD")
    with pytest.raises(EvidenceIntegrityError, match="altered or moved"):
        unwrap(MasterKey.generate(), wrapped, ID)
    with pytest.raises(EvidenceIntegrityError, match="wrong length"):
        unwrap(master, wrapped[:-1], ID)


def test_master_key_parsing_and_repr_never_shows_the_key() -> None:
    key = MasterKey.generate()
    text = key.to_base64()
    assert MasterKey.from_base64(text) == key
    urlsafe = text.replace("+", "-").replace("/", "_")
    assert MasterKey.from_base64(urlsafe) == key
    assert text not in repr(key) and key.key_id in repr(key)
    assert len(key.key_id) == 16
    with pytest.raises(VaultKeyError, match="not valid base64"):
        MasterKey.from_base64("not base64 at all!")
    with pytest.raises(VaultKeyError, match="got 16 bytes"):
        MasterKey.from_base64("A" * 22 + "==")


def test_memory_stays_at_a_few_chunks_whatever_the_item_size(tmp_path: Path) -> None:
    """A 48 MiB item through 1 MiB chunks: peak Python allocations stay under 8 MiB
    both ways (a whole-buffer design would need 96 MiB or more)."""
    chunk = 1024**2
    source = tmp_path / "plain.bin"
    with source.open("wb") as out:
        for i in range(48):
            out.write(bytes([i]) * chunk)
    sealed = tmp_path / "item.tpv"
    tracemalloc.start()
    try:
        with source.open("rb") as src, sealed.open("wb") as dst:
            _format.encrypt(KEY, ID, src, dst, chunk_size=chunk)
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        with sealed.open("rb") as src:
            for part in _format.decrypt_chunks(KEY, ID, src):
                total += len(part)
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 48 * chunk
    assert encrypt_peak < 8 * chunk and decrypt_peak < 8 * chunk, (encrypt_peak, decrypt_peak)
