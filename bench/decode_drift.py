"""How far the fast decode's PDQ is from the reference decode's, on natural photos.

tipline hashes photos with a fast decode by default (JPEG decoded in the DCT domain at
1/2..1/8 scale, luma plane only; other formats box-reduced), which gives a PDQ a few
bits away from the reference (full decode, RGB, ``pdqhash.compute``; what
python-threatexchange and HMA compute). That is why hashes going INTO a bank always
use the reference decode, and only queries may use the fast one.

For every wallpaper installed under ``/usr/share/backgrounds`` (and
``/usr/share/wallpapers``; ``scripts/setup`` installs ``mate-backgrounds``) as it is,
and for the same pictures re-encoded as JPEG at 3 MP and 12 MP (:mod:`corpus`), this
prints the Hamming distance in bits between :func:`tipline.signals.hashing.hash_bytes`
with ``DecodeMode.FAST`` and with ``DecodeMode.EXACT``: mean, median, max and how
many pictures took a reduced path at all (small pictures are decoded exactly either
way). Pictures whose PDQ quality is below 50 either way (flat or transparent ones, whose
hash is noise) are counted apart. Distances are deterministic: nothing here depends on
timing.

Usage: ``python bench/decode_drift.py [--megapixels 3 12]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus, source_images
from tipline.signals.decode import FAST_MIN_SIDE, DecodeMode, open_image
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.hexbits import hamming_hex
from tipline.signals.pdq import LOW_QUALITY_THRESHOLD

PDQ_ONLY = {mode: HashOptions(signals=("pdq",), decode=mode) for mode in DecodeMode}


def pdq(data: bytes, name: str, mode: DecodeMode) -> tuple[str, int]:
    """PDQ ``(hex, quality)`` of ``data`` decoded in ``mode``; SystemExit if unhashable."""
    result = hash_bytes(data, name, PDQ_ONLY[mode])
    if result.error is not None:
        raise SystemExit(f"{name}: {result.error.message}")
    signal = result.signals[0]
    return signal.value, signal.quality or 0


@dataclass
class Drift:
    bits: list[int]  # fast vs reference, pictures whose PDQ quality is usable both ways
    low_quality: list[int]  # the same for pictures below LOW_QUALITY_THRESHOLD
    reduced: int  # usable pictures big enough for the fast path to decode them reduced


def drift(paths: Sequence[Path]) -> Drift:
    """Bits between fast and reference PDQ for every file of ``paths``."""
    out = Drift([], [], 0)
    for path in paths:
        data = path.read_bytes()
        fast, q_fast = pdq(data, str(path), DecodeMode.FAST)
        ref, q_ref = pdq(data, str(path), DecodeMode.EXACT)
        usable = min(q_fast, q_ref) >= LOW_QUALITY_THRESHOLD
        with open_image(data, max_pixels=1 << 40) as im:
            out.reduced += usable and min(im.size) >= 2 * FAST_MIN_SIDE
        (out.bits if usable else out.low_quality).append(hamming_hex(fast, ref))
    return out


def _stats(name: str, bits: list[int], reduced: int | str, low: list[int]) -> str:
    values, counts = np.unique(bits, return_counts=True)
    hist = " ".join(f"{v}:{c}" for v, c in zip(values.tolist(), counts.tolist(), strict=True))
    low_text = f"{len(low)} (max {max(low)})" if low else "0"
    return (
        f"{name:<26} {len(bits):>5} {reduced:>7} {np.mean(bits):>5.1f} "
        f"{np.median(bits):>6.1f} {max(bits):>4} {low_text:>12}  {hist}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="*", default=[3.0, 12.0])
    args = parser.parse_args(argv)
    sources = source_images()
    if not sources:
        raise SystemExit("no wallpapers found; run scripts/setup (installs mate-backgrounds)")
    sets: list[tuple[str, list[Path]]] = [("wallpapers as installed", sources)]
    sets += [(f"re-encoded JPEG {mp:g} MP", build_corpus(mp)) for mp in args.megapixels]
    print(
        "PDQ bits between the fast decode (default) and the reference decode, pictures "
        f"with PDQ quality >= {LOW_QUALITY_THRESHOLD} both ways"
    )
    header = (
        f"{'set':<26} {'files':>5} {'reduced':>7} {'mean':>5} {'median':>6} {'max':>4} "
        f"{'low quality':>12}  histogram (bits:files)"
    )
    print(header)
    print("-" * len(header))
    every: list[int] = []
    every_low: list[int] = []
    for name, paths in sets:
        d = drift(paths)
        every += d.bits
        every_low += d.low_quality
        print(_stats(name, d.bits, d.reduced, d.low_quality))
    print(_stats("all", every, "", every_low))
    print(
        "low quality: flat or transparent pictures whose PDQ is noise (quality below "
        f"{LOW_QUALITY_THRESHOLD}, flagged low_quality and not used for matching by HMA)"
    )


if __name__ == "__main__":
    main()
