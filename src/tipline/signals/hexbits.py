"""Fixed-width bit strings as hex on the wire and bytes in memory; Hamming distance."""

from __future__ import annotations

from tipline.errors import HashFormatError

_HEX = frozenset("0123456789abcdef")


def parse_hex(text: str, n_bytes: int, kind: str) -> str:
    """Canonical lowercase hex of exactly ``n_bytes`` bytes, or HashFormatError."""
    value = text.strip().lower()
    if len(value) != 2 * n_bytes:
        raise HashFormatError(f"{kind} hash must be {2 * n_bytes} hex characters, got {len(value)}")
    if not _HEX.issuperset(value):
        raise HashFormatError(f"{kind} hash contains non-hex characters: {text.strip()!r}")
    return value


def hex_to_bytes(value: str) -> bytes:
    """Bytes of a hex string (caller has validated it)."""
    return bytes.fromhex(value)


def hamming_hex(a: str, b: str) -> int:
    """Number of differing bits between two equal-length hex strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hamming_bytes(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()
