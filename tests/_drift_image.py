"""A generated benign JPEG whose fast-decode PDQ differs from the reference PDQ."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pdqhash
from PIL import Image

from tipline.signals.decode import DecodeMode
from tipline.signals.hashing import HashOptions, hash_bytes


@cache
def drift_jpeg() -> tuple[bytes, str, str]:
    """``(jpeg bytes, reference PDQ hex, fast-decode PDQ hex)``, the two hashes different.

    Smooth random colour blobs with grain, 1600x1200 (big enough for the fast path's
    reduced luma decode). The reference is ``pdqhash.compute`` on Pillow's full RGB
    decode, computed here without tipline's decoder.
    """
    rng = np.random.default_rng(0)
    blobs = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(blobs.resize((1600, 1200), Image.Resampling.BICUBIC)).astype(int)
    grain = rng.integers(-40, 40, smooth.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        bits, _ = pdqhash.compute(np.asarray(im.convert("RGB")))
    reference = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()
    fast = hash_bytes(data, "drift", HashOptions(signals=("pdq",), decode=DecodeMode.FAST))
    assert fast.error is None
    fast_hex = fast.signals[0].value
    assert fast_hex != reference, "precondition: the fast decode must differ on this picture"
    return data, reference, fast_hex
