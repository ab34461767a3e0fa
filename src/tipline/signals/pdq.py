"""PDQ: Meta's 256-bit perceptual photo hash, with quality and dihedral variants.

Hashes are 64 lowercase hex characters, the same strings python-threatexchange and
HMA produce (bit 255 first). Quality is 0-100; hashes below
:data:`LOW_QUALITY_THRESHOLD` are returned with ``low_quality=True``, never blanked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

import numpy as np
import numpy.typing as npt
import pdqhash

from tipline.signals import pdq_fast
from tipline.signals.base import IndexKind, MediaKind, Signal
from tipline.signals.hexbits import hamming_hex, parse_hex

if TYPE_CHECKING:
    from tipline.signals.media import Photo

#: Variant name of the PDQ of a photo's pixels as stored, before its EXIF orientation
#: (what python-threatexchange and HMA compute: they ignore EXIF).
EXIF_RAW: Final = "exif_raw"
#: Quality (0-100) under which a PDQ hash is flagged as low quality.
LOW_QUALITY_THRESHOLD: Final = 50
#: Usual PDQ match threshold, in bits (ThreatExchange's default).
PDQ_THRESHOLD: Final = 31
PDQ_BYTES: Final = 32

#: Names of the dihedral variants, in the order ``pdqhash.compute_dihedral`` returns them.
DIHEDRAL_VARIANTS: Final[tuple[str, ...]] = (
    "orig",
    "rot90",
    "rot180",
    "rot270",
    "flipx",
    "flipy",
    "flipplus1",
    "flipminus1",
)


def bits_to_hex(bits: npt.NDArray[np.integer]) -> str:
    """Hex of a 256-element 0/1 vector from pdqhash (element 0 is the top bit)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq_hash(pixels: npt.NDArray[np.uint8]) -> tuple[str, int]:
    """``(hex, quality)`` of ``H x W x 3`` uint8 pixels."""
    bits, quality = pdqhash.compute(pixels)
    return bits_to_hex(bits), int(quality)


def pdq_dihedral(pixels: npt.NDArray[np.uint8]) -> tuple[list[tuple[str, str]], int]:
    """``([(variant, hex)] * 8, quality)``: hashes of the 8 rotations/flips of the image."""
    all_bits, quality = pdqhash.compute_dihedral(pixels)
    return [
        (name, bits_to_hex(bits)) for name, bits in zip(DIHEDRAL_VARIANTS, all_bits, strict=True)
    ], int(quality)


def pdq_hash_fast(pixels: npt.NDArray[np.uint8]) -> tuple[str, int]:
    """As :func:`pdq_hash` through the numba kernel of :mod:`tipline.signals.pdq_fast`
    (equal up to float rounding, several times faster); tiny images, and images whose
    DCT coefficients tie at the median (flat or periodic pictures, where float rounding
    decides the bits), use ``pdqhash``."""
    if min(pixels.shape[:2]) < pdq_fast.PHOTO_MIN_SIDE:
        return pdq_hash(pixels)
    result = pdq_fast.pdq_photo(pixels)
    if result is None:
        return pdq_hash(pixels)
    value, quality = result
    return value.hex(), quality


def pdq_dihedral_fast(pixels: npt.NDArray[np.uint8]) -> tuple[list[tuple[str, str]], int]:
    """As :func:`pdq_dihedral` through the numba kernel; tiny images and median ties
    use ``pdqhash`` (as :func:`pdq_hash_fast`)."""
    if min(pixels.shape[:2]) < pdq_fast.PHOTO_MIN_SIDE:
        return pdq_dihedral(pixels)
    result = pdq_fast.pdq_photo_dihedral(pixels)
    if result is None:
        return pdq_dihedral(pixels)
    hashes, quality = result
    return [(name, h.hex()) for name, h in zip(DIHEDRAL_VARIANTS, hashes, strict=True)], quality


def pdq_signals(
    pixels: npt.NDArray[np.uint8], *, dihedral: bool = False, fast: bool = False
) -> tuple[Signal, ...]:
    """PDQ signals of one image: one, or eight named variants when ``dihedral``.

    ``fast`` uses the numba kernel; otherwise ``pdqhash`` itself (the reference).
    """
    if not dihedral:
        value, quality = (pdq_hash_fast if fast else pdq_hash)(pixels)
        return (_signal(value, quality, None),)
    variants, quality = (pdq_dihedral_fast if fast else pdq_dihedral)(pixels)
    return tuple(_signal(value, quality, name) for name, value in variants)


def normalized_signals(pixels: npt.NDArray[np.uint8], *, fast: bool = False) -> tuple[Signal, ...]:
    """PDQ of each box :func:`tipline.signals.normalize.normalize_boxes` finds (the
    picture without borders, letterbox, caption bars, a screenshot's frame), as
    variants named after the box (``trim``, ``uncaption``...: one of
    :data:`tipline.signals.normalize.VARIANTS`)."""
    from tipline.signals.normalize import crops

    hasher = pdq_hash_fast if fast else pdq_hash
    out: list[Signal] = []
    for name, box in crops(pixels):
        value, quality = hasher(box)
        out.append(_signal(value, quality, name))
    return tuple(out)


def _signal(value: str, quality: int, variant: str | None) -> Signal:
    return Signal(
        type="pdq",
        value=value,
        quality=quality,
        low_quality=quality < LOW_QUALITY_THRESHOLD,
        variant=variant,
    )


class PdqSignalType:
    """The ``pdq`` signal type: Hamming distance in bits, default threshold 31."""

    name: ClassVar[str] = "pdq"
    media: ClassVar[MediaKind] = MediaKind.PHOTO
    default_threshold: ClassVar[int] = PDQ_THRESHOLD
    index: ClassVar[IndexKind] = IndexKind.HAMMING
    n_bytes: ClassVar[int] = PDQ_BYTES
    #: asked for on a video, ``pdq`` means vPDQ
    counterpart: ClassVar[str] = "vpdq"

    def hash_photo(self, photo: Photo) -> tuple[Signal, ...]:
        """One PDQ signal, or eight named variants when ``photo.dihedral``; with
        ``photo.normalize`` also the variants of :func:`normalized_signals`; with
        ``photo.exif_raw`` also the variant ``exif_raw`` (:data:`EXIF_RAW`), the hash of
        the pixels as stored, when the file has an EXIF orientation."""
        signals = pdq_signals(photo.pixels(), dihedral=photo.dihedral, fast=photo.fast)
        if photo.normalize:
            signals = (*signals, *normalized_signals(photo.pixels(), fast=photo.fast))
        if photo.exif_raw and not photo.dihedral:
            raw = photo.raw_pixels()
            if raw is not None:
                value, quality = (pdq_hash_fast if photo.fast else pdq_hash)(raw)
                signals = (*signals, _signal(value, quality, EXIF_RAW))
        return signals

    def parse(self, text: str) -> str:
        """Canonical 64-character lowercase hex; HashFormatError otherwise."""
        return parse_hex(text, PDQ_BYTES, "pdq")

    def distance(self, a: str, b: str) -> int:
        """Hamming distance in bits (0-256)."""
        return hamming_hex(a, b)

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        """Brute force: every ``(index, distance)`` with distance <= ``threshold`` bits."""
        q = int(query, 16)
        out: list[tuple[int, int]] = []
        for i, candidate in enumerate(candidates):
            d = (q ^ int(candidate, 16)).bit_count()
            if d <= threshold:
                out.append((i, d))
        return out
