"""The vault item file format: chunked AES-256-GCM with an authenticated chunk order.

A file is a 64-byte header followed by chunks::

    header  magic "TPLVAULT" | version u16 (1) | flags u16 (0) | chunk size u32 |
            nonce prefix (7 random bytes) | item id (32 bytes, ASCII, NUL-padded) |
            9 zero bytes                                   (big-endian, 64 bytes)
    chunk i AES-256-GCM(data key, nonce_i, plaintext_i, aad=header) = ciphertext_i | tag_i

Every chunk holds ``chunk size`` plaintext bytes except the last, which holds 0 to
``chunk size`` bytes (an empty item is one empty final chunk: a bare 16-byte tag).
``nonce_i`` = nonce prefix | i (u32) | final flag (1 on the last chunk, else 0), the
STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár (2015). Why this detects
every change:

* each chunk authenticates its own bytes and the whole header (item id included), so a
  flipped byte anywhere, or a file copied over another item's, fails;
* the index in the nonce fixes each chunk's position (no reordering or duplication);
* the final flag marks the last chunk, and the reader derives "final" from reaching the
  end of the file, so a file cut at a chunk boundary ends on a chunk written as
  non-final and fails, and bytes appended after the final chunk fail as well.

Memory is one chunk of ciphertext plus one of lookahead, whatever the item size. Each
item has its own random data key (see :mod:`tipline.services.vault.keys`), so nonces
never repeat under one key; the random prefix is belt and braces.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tipline.errors import EvidenceIntegrityError, InputError

MAGIC = b"TPLVAULT"
VERSION = 1
HEADER = struct.Struct(">8sHHI7s32s9x")
HEADER_BYTES = HEADER.size  # 64
TAG_BYTES = 16
KEY_BYTES = 32
_PREFIX_BYTES = 7
_ID_BYTES = 32
_MAX_CHUNKS = 2**32
#: largest chunk a reader accepts from a header (bounds memory on hostile files)
MAX_CHUNK_BYTES = 64 * 1024**2

assert HEADER_BYTES == 64


@dataclass(frozen=True, slots=True)
class Sealed:
    """What :func:`encrypt` wrote: plaintext size (bytes), plaintext and file SHA-256 (hex)."""

    size: int
    sha256: str
    blob_sha256: str
    blob_size: int


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header."""

    version: int
    chunk_size: int
    prefix: bytes
    item_id: str
    raw: bytes


def encode_header(item_id: str, chunk_size: int, prefix: bytes) -> bytes:
    """The 64 header bytes (InputError on an id that is not 1-32 ASCII characters)."""
    raw_id = item_id.encode("ascii", "strict") if item_id.isascii() else b""
    if not 1 <= len(raw_id) <= _ID_BYTES or b"\0" in raw_id:
        raise InputError("vault item id must be 1-32 ASCII characters")
    if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
        raise InputError(f"chunk size must be 1..{MAX_CHUNK_BYTES} bytes")
    if len(prefix) != _PREFIX_BYTES:
        raise InputError("nonce prefix must be 7 bytes")
    return HEADER.pack(MAGIC, VERSION, 0, chunk_size, prefix, raw_id.ljust(_ID_BYTES, b"\0"))


def decode_header(raw: bytes, *, expected_id: str) -> Header:
    """Parse and check a header; EvidenceIntegrityError names what is wrong."""
    if len(raw) < HEADER_BYTES:
        raise EvidenceIntegrityError(
            f"truncated: {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, flags, chunk_size, prefix, raw_id = HEADER.unpack(raw[:HEADER_BYTES])
    if magic != MAGIC:
        raise EvidenceIntegrityError("not a vault item file (bad magic bytes)")
    if version != VERSION or flags != 0:
        raise EvidenceIntegrityError(f"unsupported vault format version {version}.{flags}")
    if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
        raise EvidenceIntegrityError(f"header chunk size {chunk_size} is out of range")
    item_id = raw_id.rstrip(b"\0").decode("ascii", "replace")
    if item_id != expected_id:
        raise EvidenceIntegrityError(
            f"file belongs to item {item_id!r}, not {expected_id!r} (swapped or misplaced)"
        )
    return Header(version, chunk_size, prefix, item_id, raw[:HEADER_BYTES])


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\1" if final else b"\0")


def _read_full(src: BinaryIO, n: int) -> bytes:
    """``n`` bytes, or fewer only at the end of the stream (short reads are retried)."""
    data = src.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    have = len(data)
    while have < n:
        more = src.read(n - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def encrypt(
    key: bytes,
    item_id: str,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
) -> Sealed:
    """Encrypt ``src`` (read to its end) into ``dst``; returns sizes and digests.

    ``progress`` is called with the plaintext bytes of each chunk written.
    """
    if len(key) != KEY_BYTES:
        raise InputError("data key must be 32 bytes")
    prefix = os.urandom(_PREFIX_BYTES)
    header = encode_header(item_id, chunk_size, prefix)
    aead = AESGCM(key)
    plain_hash = hashlib.sha256()
    blob_hash = hashlib.sha256(header)
    dst.write(header)
    size = 0
    blob_size = HEADER_BYTES
    index = 0
    current = _read_full(src, chunk_size)
    while True:
        if index >= _MAX_CHUNKS:
            raise InputError("item too large for the vault format (2**32 chunks)")
        ahead = _read_full(src, chunk_size) if len(current) == chunk_size else b""
        final = not ahead
        sealed = aead.encrypt(_nonce(prefix, index, final), current, header)
        dst.write(sealed)
        plain_hash.update(current)
        blob_hash.update(sealed)
        size += len(current)
        blob_size += len(sealed)
        if progress is not None:
            progress(len(current))
        if final:
            break
        current = ahead
        index += 1
    return Sealed(size, plain_hash.hexdigest(), blob_hash.hexdigest(), blob_size)


def blob_size_for(size: int, chunk_size: int) -> int:
    """Bytes of the file holding ``size`` plaintext bytes in ``chunk_size`` chunks."""
    chunks = max(1, -(-size // chunk_size))
    return HEADER_BYTES + size + chunks * TAG_BYTES


def decrypt_chunks(key: bytes, item_id: str, src: BinaryIO) -> Iterator[bytes]:
    """Yield the plaintext of ``src`` chunk by chunk, each authenticated before it is
    yielded. Raises EvidenceIntegrityError at the first chunk that fails (its index in
    the message); the caller must discard what it got so far."""
    header = decode_header(_read_full(src, HEADER_BYTES), expected_id=item_id)
    aead = AESGCM(key)
    step = header.chunk_size + TAG_BYTES
    index = 0
    current = _read_full(src, step)
    while True:
        if len(current) < TAG_BYTES:
            raise EvidenceIntegrityError(
                f"truncated: chunk {index} has {len(current)} bytes, less than its tag"
            )
        ahead = _read_full(src, step) if len(current) == step else b""
        final = not ahead
        try:
            plain = aead.decrypt(_nonce(header.prefix, index, final), current, header.raw)
        except InvalidTag:
            what = "final chunk" if final else "chunk"
            raise EvidenceIntegrityError(
                f"{what} {index} failed authentication (tampered or truncated file,"
                " or a wrong data key)"
            ) from None
        yield plain
        if final:
            return
        current = ahead
        index += 1
