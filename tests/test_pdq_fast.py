"""The numba PDQ kernel (photos' fast path and every video frame) against its
brute-force twin, ``pdqhash``: same pixels, same hashes up to float rounding."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pdqhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tipline.signals import pdq_fast
from tipline.signals.decode import DecodeMode, decode_pixels
from tipline.signals.hashing import HashOptions, hash_bytes
from tipline.signals.hexbits import hamming_hex
from tipline.signals.pdq import (
    LOW_QUALITY_THRESHOLD,
    bits_to_hex,
    pdq_dihedral,
    pdq_dihedral_fast,
    pdq_hash,
    pdq_hash_fast,
)

BIG = 10**9


def _ham(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _dense_axis_weights(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The kernel's weights the slow way: PDQ's box filter as an n x n matrix, applied
    twice, rows picked at the 64 sample points."""
    window = (n + 127) // 128
    half = (window + 2) // 2
    o = np.arange(n)
    lo, hi = np.maximum(0, o - (window - half)), np.minimum(n - 1, o + half - 1)
    inside = (o[None, :] >= lo[:, None]) & (o[None, :] <= hi[:, None])  # row o: lo..hi
    box = inside / (hi - lo + 1)[:, None]
    # the 64 sampled rows of box @ box (a 64 x n by n x n product: the n x n one cost
    # up to 0.3 s of CPU per example)
    full = box[[int(((i + 0.5) * n) / 64) for i in range(64)]] @ box
    support = [np.flatnonzero(row) for row in full]
    width = min(n, max(int(s[-1] - s[0] + 1) for s in support))
    start = np.array([min(int(s[0]), n - width) for s in support], dtype=np.int64)
    return start, np.stack([full[i, start[i] : start[i] + width] for i in range(64)]).astype(
        np.float32
    )


def _looped_axis_weights(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The weights one sample and one box row at a time (the kernel's first version):
    the vectorised build must give the same float32 weights bit for bit."""
    window = (n + 127) // 128
    half = (window + 2) // 2

    def span(o: int) -> tuple[int, int]:
        return max(0, o - (window - half)), min(n - 1, o + half - 1)

    full = np.zeros((64, n))
    for i in range(64):
        lo, hi = span(int(((i + 0.5) * n) / 64))
        for k in range(lo, hi + 1):
            klo, khi = span(k)
            full[i, klo : khi + 1] += 1.0 / ((hi - lo + 1) * (khi - klo + 1))
    support = [np.flatnonzero(row) for row in full]
    width = min(n, max(int(s[-1] - s[0] + 1) for s in support))
    start = np.array([min(int(s[0]), n - width) for s in support], dtype=np.int64)
    return start, np.stack([full[i, start[i] : start[i] + width] for i in range(64)]).astype(
        np.float32
    )


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.integers(5, 3000), st.integers(3000, 40000)))
def test_axis_weights_equal_the_looped_build_bit_for_bit(n: int) -> None:
    start, weights = pdq_fast._axis_weights(n)
    want_start, want_weights = _looped_axis_weights(n)
    assert np.array_equal(start, want_start)
    assert weights.dtype == want_weights.dtype and np.array_equal(weights, want_weights)


@settings(max_examples=60, deadline=None)
@given(st.integers(5, 1500))
def test_axis_weights_equal_the_dense_box_filter(n: int) -> None:
    start, weights = pdq_fast._axis_weights(n)
    want_start, want_weights = _dense_axis_weights(n)
    assert np.array_equal(start, want_start)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-6, atol=1e-9)


def _ordered_pass(
    x: npt.NDArray[np.float32], start: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """One blur-and-decimate pass along axis 1 of ``x``, the kernel's arithmetic spelled
    out: float32 products, summed in float64 strictly in order (``cumsum`` is
    sequential), rounded to float32."""
    width = weights.shape[1]
    out = np.empty((x.shape[0], 64), np.float32)
    for j in range(64):
        products = x[:, start[j] : start[j] + width] * weights[j]  # float32
        out[:, j] = np.cumsum(products.astype(np.float64), axis=1)[:, -1]
    return out


def _ordered_sample64(grey: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    """Brute-force twin of the kernel's 64 x 64 samples: columns, then rows."""
    tmp = _ordered_pass(grey.astype(np.float32), *pdq_fast._axis_weights(grey.shape[1]))
    return _ordered_pass(tmp.T.copy(), *pdq_fast._axis_weights(grey.shape[0])).T


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(64, 700), st.integers(64, 700), st.integers(0, 2**32 - 1), st.booleans())
def test_kernel_samples_are_bit_identical_to_the_ordered_sums(
    height: int, width: int, seed: int, smooth: bool
) -> None:
    """The fast path's samples are pinned bit for bit, not just "within rounding": a
    change of summation order or precision in the kernel (which would move hashes by a
    bit near the median) fails here. Grey, RGB-stacked and luma-plane views alike."""
    rng = np.random.default_rng(seed)
    if smooth:
        walk = np.cumsum(rng.normal(0, 4, (height, width)), axis=1) + 128
        grey = np.clip(walk, 0, 255).astype(np.uint8)
    else:
        grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    want = _ordered_sample64(grey)
    assert np.array_equal(pdq_fast.sample64(grey), want)
    plane = np.lib.stride_tricks.as_strided(
        grey, shape=(height, width, 3), strides=(*grey.strides, 0), writeable=False
    )
    assert np.array_equal(pdq_fast.sample64(plane), want)
    # float32 luma (not integers) takes the strictly ordered pass
    luma = grey.astype(np.float32) * np.float32(0.7)
    hasher = pdq_fast.LumaHasher(height, width, batch=1)
    hasher.add(luma)
    assert np.array_equal(hasher._out[0], _ordered_sample64(luma))


@settings(max_examples=60, deadline=None)
@given(st.integers(5, 4000), st.integers(0, 2**32 - 1))
def test_integer_column_sums_do_not_depend_on_order(n: int, seed: int) -> None:
    """What lets the column pass vectorise: for PDQ's weights of any axis length (in
    reach here), the float64 sum of float32 products of 0-255 pixels is the same in
    every order, so reordering cannot move a single bit."""
    start, weights = pdq_fast._axis_weights(n)
    assert pdq_fast.integer_sums_exact(weights)
    rng = np.random.default_rng(seed)
    row = rng.integers(0, 256, n).astype(np.float32)
    row[rng.random(n) < 0.3] = rng.choice([0, 1, 255])  # flat runs, extremes
    for j in rng.choice(64, 8, replace=False):
        products = weights[j] * row[start[j] : start[j] + weights.shape[1]]  # float32
        in_order = 0.0
        for p in products:
            in_order += float(p)
        for _ in range(4):
            shuffled = 0.0
            for p in rng.permutation(products):
                shuffled += float(p)
            assert shuffled == in_order
        assert np.float32(math.fsum(map(float, products))) == np.float32(in_order)


def test_sums_that_could_round_keep_the_ordered_pass() -> None:
    """The guard refuses weights whose sums could round (a tiny weight beside a large
    total), so such frames keep the strictly ordered pass."""
    weights = np.full((64, 4), 0.25, dtype=np.float32)
    assert pdq_fast.integer_sums_exact(weights)
    weights[0, 0] = np.float32(1e-9)
    assert not pdq_fast.integer_sums_exact(weights)


def _reference_photos(reference_dir: Path) -> list[Path]:
    root = reference_dir / "pdq"
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".webp"})


def test_photo_kernel_equals_pdqhash_on_reference_images(reference_dir: Path) -> None:
    """Meta's reference images at full resolution: every hash, quality and dihedral
    variant of a hashable image (quality >= 50) is bit-identical to pdqhash's."""
    photos = _reference_photos(reference_dir)
    assert len(photos) >= 40
    for path in photos:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        want, want_q = pdq_hash(rgb)
        got, got_q = pdq_hash_fast(rgb)
        want_dih, _ = pdq_dihedral(rgb)
        got_dih, dih_q = pdq_dihedral_fast(rgb)
        assert got_q == want_q == dih_q, path.name
        assert [name for name, _ in got_dih] == [name for name, _ in want_dih]
        # Flat images (quality < 50) have near-zero DCT coefficients whose signs are
        # decided by float rounding in any implementation.
        tolerance = 0 if want_q >= LOW_QUALITY_THRESHOLD else 4
        assert hamming_hex(got, want) <= tolerance, path.name
        for (name, g), (_, w) in zip(got_dih, want_dih, strict=True):
            assert hamming_hex(g, w) <= tolerance, (path.name, name)


def test_photo_kernel_equals_pdqhash_on_wallpapers() -> None:
    # under 4 MB: a 16 MB wallpaper costs 0.7 s of CPU to entropy-decode, even reduced
    wallpapers = sorted(Path("/usr/share/backgrounds").rglob("*.jpg"))
    photos = [p for p in wallpapers if p.stat().st_size < 4 << 20][:4]
    if not photos:
        pytest.skip("no wallpapers under /usr/share/backgrounds")
    for path in photos:
        with Image.open(path) as im:
            im.draft("RGB", (480, 270))  # decoded reduced (DCT scaling), then resized
            rgb = np.asarray(im.convert("RGB").resize((480, 270)))
        bits, quality = pdqhash.compute(rgb)
        h, q = pdq_fast.pdq_hash_luma(pdq_fast.rgb_to_luma(rgb))
        assert (h.hex(), q) == (bits_to_hex(bits), quality), path.name
        assert pdq_hash_fast(rgb) == (bits_to_hex(bits), quality), path.name


def test_luma_plane_view_is_hashed_as_its_plane() -> None:
    """The fast decoder returns large JPEGs as one luma plane repeated three times
    (stride 0); the kernel reads the plane once and gets what the RGB stack gets."""
    pic = Image.radial_gradient("L").resize((1400, 1100)).rotate(17)
    buf = io.BytesIO()
    pic.save(buf, "JPEG", quality=90)
    pixels = decode_pixels(buf.getvalue(), mode=DecodeMode.FAST, max_pixels=BIG)
    assert pixels.strides[2] == 0
    stacked = np.ascontiguousarray(pixels)
    assert pdq_hash_fast(pixels) == pdq_hash_fast(stacked)
    assert hamming_hex(pdq_hash_fast(pixels)[0], pdq_hash(stacked)[0]) <= 2


def test_fast_decode_uses_the_kernel_and_exact_decode_uses_pdqhash() -> None:
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    pic = Image.fromarray(coarse).resize((600, 400), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pic.save(buf, "PNG")
    data = buf.getvalue()
    rgb = np.asarray(Image.open(buf).convert("RGB"))
    fast = hash_bytes(data, "x", HashOptions(signals=("pdq",)))
    exact = hash_bytes(data, "x", HashOptions(signals=("pdq",), decode=DecodeMode.EXACT))
    assert fast.signals[0].value == pdq_hash_fast(rgb)[0]
    assert exact.signals[0].value == pdq_hash(rgb)[0]
    assert hamming_hex(fast.signals[0].value, exact.signals[0].value) <= 2


def test_tiny_images_fall_back_to_pdqhash() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    assert pdq_hash_fast(rgb) == pdq_hash(rgb)
    assert pdq_dihedral_fast(rgb) == pdq_dihedral(rgb)


_COLOUR = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


def _pattern(
    kind: str, height: int, width: int, square: int, c0: tuple[int, ...], c1: tuple[int, ...]
) -> Any:
    """HMA-style synthetic test pictures: checkerboard, stripes, two-tone, flat."""
    yy, xx = np.mgrid[:height, :width]
    mask = {
        "checker": (yy // square + xx // square) % 2 == 1,
        "vstripes": (xx // square) % 2 == 1,
        "hstripes": (yy // square) % 2 == 1,
        "twotone": xx >= width // 2,
        "flat": np.zeros((height, width), bool),
    }[kind]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = c0
    rgb[mask] = c1
    return rgb


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["checker", "vstripes", "hstripes", "twotone", "flat"]),
    st.sampled_from([(512, 512), (768, 1024), (1024, 768), (256, 256), (333, 517), (64, 64)]),
    st.sampled_from([1, 2, 4, 5, 7, 8, 16, 20, 32, 50, 64, 100]),
    _COLOUR,
    _COLOUR,
)
def test_synthetic_patterns_hash_exactly_as_pdqhash(
    kind: str,
    size: tuple[int, int],
    square: int,
    c0: tuple[int, int, int],
    c1: tuple[int, int, int],
) -> None:
    """Flat and periodic pictures tie many DCT coefficients at the median, so float
    rounding decides their bits (the kernel alone was 1-150 bits from pdqhash on 705 of
    1,008 such pictures); the fast path then defers to pdqhash: distance 0, every
    dihedral variant too."""
    rgb = _pattern(kind, *size, square, c0, c1)
    assert pdq_hash_fast(rgb) == pdq_hash(rgb)
    assert pdq_dihedral_fast(rgb) == pdq_dihedral(rgb)


def test_median_ties_are_detected_on_synthetic_pictures_not_on_photos(
    reference_dir: Path,
) -> None:
    """The tie check fires on a flat and a striped picture (the kernel's own bits
    differ from pdqhash's there) and on few reference photos (those are hashed by the
    kernel, bit for bit as pdqhash, by the reference-image test)."""
    for rgb in (
        _pattern("flat", 512, 512, 1, (128, 128, 128), (128, 128, 128)),
        _pattern("vstripes", 512, 512, 16, (0, 0, 0), (255, 255, 255)),
    ):
        assert pdq_fast.ties_at_median(pdq_fast.sample64(rgb)[None])
        assert pdq_fast.pdq_photo(rgb) is None
        hashes, _ = pdq_fast.pdq_from_64x64(pdq_fast.sample64(rgb)[None])
        assert hashes[0].hex() != pdq_hash(rgb)[0]
    photos = _reference_photos(reference_dir)
    deferred = 0
    for path in photos:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        if min(rgb.shape[:2]) >= pdq_fast.PHOTO_MIN_SIDE:
            deferred += pdq_fast.pdq_photo(rgb) is None
    assert deferred <= len(photos) // 10


def _blocky(height: int, width: int, block: int, noise: float, seed: int, channels: int) -> Any:
    rng = np.random.default_rng(seed)
    shape = (height // block + 1, width // block + 1) + ((channels,) if channels > 1 else ())
    coarse = rng.integers(0, 256, shape).astype(float)
    kron = np.ones((block, block, 1)) if channels > 1 else np.ones((block, block))
    img = np.kron(coarse, kron)[:height, :width]
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(64, 400),
    st.integers(64, 400),
    st.integers(2, 16),
    st.floats(1, 30),
    st.integers(0, 2**32 - 1),
)
def test_kernel_matches_pdqhash_on_grey(
    height: int, width: int, block: int, noise: float, seed: int
) -> None:
    """Grey frames: within float rounding of pdqhash on the same pixels.

    Noise is at least 1 grey level: noiseless block images whose block size divides 64
    have many DCT coefficients that are exactly 0 in exact arithmetic, so their bits are
    decided by rounding noise in any implementation (PDQ's own instability, not ours).
    Frames under 64 pixels repeat samples and hit the same ties."""
    grey = _blocky(height, width, block, noise, seed, 1)
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.stack([grey] * 3, axis=2)))
    h, q = pdq_fast.pdq_hash_luma(grey)
    assert abs(q - quality) <= 1
    assert _ham(h, bytes.fromhex(bits_to_hex(bits))) <= 4


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(64, 300),
    st.integers(64, 300),
    st.integers(2, 16),
    st.floats(1, 30),
    st.integers(0, 2**32 - 1),
)
def test_photo_kernel_matches_pdqhash_on_colour(
    height: int, width: int, block: int, noise: float, seed: int
) -> None:
    """Colour images: the hash, the quality and all eight dihedral variants stay within
    float rounding of pdqhash's."""
    rgb = _blocky(height, width, block, noise, seed, 3)
    want, want_q = pdq_hash(rgb)
    got, got_q = pdq_hash_fast(rgb)
    assert abs(got_q - want_q) <= 1
    assert hamming_hex(got, want) <= 4
    want_dih, _ = pdq_dihedral(rgb)
    got_dih, _ = pdq_dihedral_fast(rgb)
    for (name, g), (want_name, w) in zip(got_dih, want_dih, strict=True):
        assert name == want_name
        assert hamming_hex(g, w) <= 4, name


def test_worker_preload_module_loads_the_kernels() -> None:
    """Importing ``tipline.signals.warm`` (the worker pools' forkserver preload) leaves
    the kernels compiled for grey and RGB input, read-only or not, so forked workers
    start with them."""
    code = (
        "import tipline.signals.warm\n"
        "from tipline.signals import pdq_fast\n"
        "print(len(pdq_fast._sample64.signatures), len(pdq_fast._sample64_rgb.signatures))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    grey, rgb = (int(x) for x in out.stdout.split())
    assert grey >= 2 and rgb >= 2
