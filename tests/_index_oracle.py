"""Brute-force twins of the fast indexes, written independently of tipline.index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tipline.signals.base import VideoFrame


def hamming(a: bytes, b: bytes) -> int:
    """Differing bits of two equal-length byte strings."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def brute_pdq(
    ids: npt.NDArray[np.int64],
    hashes: npt.NDArray[np.uint8],
    query: bytes,
    radius: int,
    disabled: frozenset[int] = frozenset(),
) -> tuple[list[int], list[int]]:
    """(ids, distances) within ``radius`` bits, min distance per id, by (distance, id)."""
    q = np.frombuffer(query, dtype=np.uint8)
    dist = np.unpackbits(hashes ^ q, axis=1).sum(axis=1)
    best: dict[int, int] = {}
    for i in np.nonzero(dist <= radius)[0].tolist():
        key = int(ids[i])
        if key in disabled:
            continue
        best[key] = min(best.get(key, 1 << 30), int(dist[i]))
    order = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
    return [k for k, _ in order], [d for _, d in order]


def flip_bits(h: bytes, n_bits: int, rng: np.random.Generator) -> bytes:
    """``h`` with exactly ``n_bits`` distinct random bits flipped."""
    bits = np.unpackbits(np.frombuffer(h, dtype=np.uint8)).copy()
    where = rng.choice(bits.size, size=n_bits, replace=False)
    bits[where] ^= 1
    return np.packbits(bits).tobytes()


def vpdq_pairwise(
    query: Sequence[VideoFrame],
    target: Sequence[VideoFrame],
    quality: int = 50,
    distance: int = 31,
) -> tuple[float, float]:
    """vpdq's brute-force matcher: dedupe by hash, drop low quality, O(n*m) comparisons."""

    def prep(frames: Sequence[VideoFrame]) -> list[bytes]:
        seen: set[bytes] = set()
        out = []
        for f in frames:
            if f.hash not in seen:
                seen.add(f.hash)
                if f.quality >= quality:
                    out.append(f.hash)
        return out

    q, t = prep(query), prep(target)
    if not q or not t:  # every usable frame hidden by a low-quality first copy: no match
        return 0.0, 0.0
    qm = sum(any(hamming(a, b) <= distance for b in t) for a in q)
    tm = sum(any(hamming(b, a) <= distance for a in q) for b in t)
    return qm * 100 / len(q), tm * 100 / len(t)
