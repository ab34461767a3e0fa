"""Real PDQ hashes of benign image variants: clustered data, index equals brute force."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _index_oracle import brute_pdq
from tipline.index import PdqIndex
from tipline.signals.pdq import pdq_hash


def _variants(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    out = [
        img,
        img.rotate(90, expand=True),
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        img.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        img.resize((w // 3, h // 3)),
        img.rotate(7),
    ]
    for quality in (90, 40, 10):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        out.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


@pytest.fixture(scope="module")
def variant_bank(reference_dir: Path):
    paths = sorted(
        p for p in (reference_dir / "pdq").rglob("*") if p.suffix.lower() in {".jpg", ".png"}
    )[:14]
    if len(paths) < 5:
        pytest.skip("too few reference images")
    hexes, owners = [], []
    for k, path in enumerate(paths):
        with Image.open(path) as im:
            img = im.convert("RGB")
        img.thumbnail((512, 512))
        for v in _variants(img):
            hexes.append(pdq_hash(np.asarray(v))[0])
            owners.append(k)
    hashes = np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(-1, 32)
    return np.arange(len(hexes), dtype=np.int64), hashes, owners


def test_variant_hashes_match_brute_force_at_all_radii(variant_bank):
    _ids, hashes, owners = variant_bank
    rng = np.random.default_rng(9)
    noisy = hashes ^ (rng.random(hashes.shape) < 0.02).astype(np.uint8)  # ~5 bits of noise
    all_hashes = np.concatenate([hashes, noisy, rng.integers(0, 256, (500, 32), np.uint8)])
    all_ids = np.arange(len(all_hashes), dtype=np.int64)
    index = PdqIndex.build(all_ids, all_hashes)
    for radius in (0, 8, 16, 31, 40, 48):
        for q in hashes:
            got = index.search(q.tobytes(), radius)
            assert (got[0].tolist(), got[1].tolist()) == brute_pdq(
                all_ids, all_hashes, q.tobytes(), radius
            )
    # a JPEG re-encode at quality 90 matches its original at the default threshold
    originals = [i for i, o in enumerate(owners) if i == 0 or owners[i - 1] != o]
    for i in originals:
        assert i + 6 in index.search(hashes[i].tobytes(), 31)[0].tolist()
