"""PDQ's fast path: blur-and-decimate at the 64x64 sample points only, in numba.

PDQ (``pdqhash.compute``) converts an image to float luma, blurs it with two box-filter
passes per axis (window ``ceil(n / 128)``), samples 64 x 64 points, takes a 16 x 16 DCT
and sets each bit above the median. The blur-and-sample step is linear, so it is
computed directly at the sample points as ``rows (64 x H) @ luma (H x W) @ cols (W x 64)``
with banded weights: about one multiply-add per pixel, reading the uint8 pixels once,
instead of several full-image float passes. The DCT, median and quality metric then run
batched in NumPy.

The result equals ``pdqhash.compute`` on the same pixels up to float rounding (a tested
brute-force twin). Photos in the fast decode mode and every video frame use it;
``--exact-decode`` keeps ``pdqhash`` itself.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final, cast

import numba
import numpy as np
import numpy.typing as npt
import pdqhash

from tipline.errors import MediaError

#: PDQ's smallest hashable width/height in pixels.
MIN_HASHABLE_DIM: Final = 5
#: Frames downsampled before one batched DCT/median/quality step.
_BATCH: Final = 256


@lru_cache(maxsize=256)
def _axis_weights(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Banded weights mapping ``n`` pixels to PDQ's 64 samples along one axis.

    Two box passes of window ``ceil(n / 128)`` then the sample at ``int((i + .5) n / 64)``:
    sample ``i`` is row ``pick`` of ``box @ box``, i.e. the average of the box rows in
    ``box[pick]``'s span (O(64 window^2), no n x n matrix). All 64 samples are built at
    once, one box row of each per step, each weight summed in the same order (box row
    by box row) as a per-sample loop would: the float64 sums, hence the float32
    weights, are the same (a new size costs a worker 0.2 ms, not 2 ms).
    Returns ``(start, weights)``: sample ``i`` is ``sum(weights[i] * x[start[i]:][:S])``.
    """
    window = (n + 2 * 64 - 1) // (2 * 64)
    half = (window + 2) // 2
    behind = window - half  # box of output o: [o - behind, o + half - 1], clipped
    picks = (((np.arange(64) + 0.5) * n) / 64).astype(np.int64)
    lo = np.maximum(0, picks - behind)
    hi = np.minimum(n - 1, picks + half - 1)
    first = np.maximum(0, lo - behind)  # sample i reads pixels first[i]..last[i]
    last = np.minimum(n - 1, hi + half - 1)
    width = int(min(n, int((last - first + 1).max())))
    start = np.minimum(first, n - width)
    pixels = start[:, None] + np.arange(width)[None, :]
    span = hi - lo + 1
    full = np.zeros((64, width))
    for step in range(int(span.max())):
        k = lo + step  # the box row each sample adds at this step
        live = k <= hi
        klo = np.maximum(0, k - behind)
        khi = np.minimum(n - 1, k + half - 1)
        share = np.where(live, 1.0 / (span * (khi - klo + 1)), 0.0)
        inside = (pixels >= klo[:, None]) & (pixels <= khi[:, None]) & live[:, None]
        full += np.where(inside, share[:, None], 0.0)  # + 0.0 elsewhere: exact
    return start.astype(np.int64), full.astype(np.float32)


_R: Final = np.float32(0.299)
_G: Final = np.float32(0.587)
_B: Final = np.float32(0.114)


@numba.njit(cache=True, nogil=True)
def _cols_pass(
    row: npt.NDArray[np.float32],
    col_start: npt.NDArray[np.int64],
    col_w: npt.NDArray[np.float32],
    dst: npt.NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """The 64 column samples of one float32 pixel row (banded weights).

    Each sample sums its float32 products in float64, in order along the row. (Slicing
    the band first gives numba a unit-stride loop: a third faster, same arithmetic.)
    """
    width = col_w.shape[1]
    for j in range(64):
        weights = col_w[j]
        band = row[col_start[j] : col_start[j] + width]
        acc = 0.0
        for k in range(width):
            acc += weights[k] * band[k]
        dst[j] = acc


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _cols_pass_any_order(
    row: npt.NDArray[np.float32],
    col_start: npt.NDArray[np.int64],
    col_w: npt.NDArray[np.float32],
    dst: npt.NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """:func:`_cols_pass` with the float64 sums free to be reordered (vectorised).

    Only used where :func:`integer_sums_exact` proves every order gives the same sum:
    integer pixels and weights that keep each sum exact in float64.
    """
    width = col_w.shape[1]
    for j in range(64):
        weights = col_w[j]
        band = row[col_start[j] : col_start[j] + width]
        acc = 0.0
        for k in range(width):
            acc += weights[k] * band[k]
        dst[j] = acc


def integer_sums_exact(weights: npt.NDArray[np.float32]) -> bool:
    """True when a row of 0-255 integer pixels gives the same sample in any summation
    order: every float32 product ``w * x`` then sums exactly in float64.

    A product of ``x >= 1`` is at least the smallest weight ``w_min``, so as a float32
    it is a whole multiple of ``q = ulp32(w_min)``; so is every partial sum, which is
    at most ``255 * (1 + 2**-23) * sum(w)``. Under ``2**53 * q`` every partial sum is a
    float64, every addition is exact, and the order cannot change the result. With
    PDQ's weights this holds for every axis up to at least 250,000 pixels.
    """
    nonzero = weights[weights > 0]
    if nonzero.size == 0:
        return True
    _, exponent = math.frexp(float(nonzero.min()))  # w_min = m * 2**exponent, m in [.5, 1)
    quantum = 2.0 ** (exponent - 1 - 23)
    largest = 255.0 * (1.0 + 2.0**-23) * float(weights.astype(np.float64).sum(axis=1).max())
    return largest < 2.0**53 * quantum


@lru_cache(maxsize=256)
def _any_order_ok(n: int) -> bool:
    return integer_sums_exact(_axis_weights(n)[1])


@numba.njit(cache=True, nogil=True)
def _rows_pass(
    tmp: npt.NDArray[np.float32],
    row_start: npt.NDArray[np.int64],
    row_w: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """The 64 x 64 samples from the ``H x 64`` column samples."""
    for i in range(64):
        r0 = row_start[i]
        for j in range(64):
            acc = 0.0
            for k in range(row_w.shape[1]):
                acc += row_w[i, k] * tmp[r0 + k, j]
            out[i, j] = acc


@numba.njit(cache=True, nogil=True)
def _sample64(
    luma: npt.NDArray[np.generic],
    row_start: npt.NDArray[np.int64],
    row_w: npt.NDArray[np.float32],
    col_start: npt.NDArray[np.int64],
    col_w: npt.NDArray[np.float32],
    tmp: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
    any_order: bool,
) -> None:  # pragma: no cover - compiled
    """PDQ's blurred 64 x 64 samples of an ``H x W`` uint8 grey or float32 luma frame.

    Each row is first widened to float32 (exact for both), so the inner loop multiplies
    float32 by float32 with no int-to-float conversion per weight: the products are the
    same float32 values ``float32 * uint8`` gives. ``any_order`` (integer pixels whose
    column sums :func:`integer_sums_exact` proves exact) lets the column sums vectorise.
    """
    row = np.empty(luma.shape[1], dtype=np.float32)
    for r in range(luma.shape[0]):
        src = luma[r]
        for c in range(row.shape[0]):
            row[c] = src[c]
        if any_order:
            _cols_pass_any_order(row, col_start, col_w, tmp[r])
        else:
            _cols_pass(row, col_start, col_w, tmp[r])
    _rows_pass(tmp, row_start, row_w, out)


@numba.njit(cache=True, nogil=True)
def _sample64_rgb(
    rgb: npt.NDArray[np.uint8],
    row_start: npt.NDArray[np.int64],
    row_w: npt.NDArray[np.float32],
    col_start: npt.NDArray[np.int64],
    col_w: npt.NDArray[np.float32],
    tmp: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """As :func:`_sample64` for ``H x W x 3`` RGB, with PDQ's float32 luma."""
    luma = np.empty(rgb.shape[1], dtype=np.float32)
    for r in range(rgb.shape[0]):
        for c in range(rgb.shape[1]):
            luma[c] = (
                _R * np.float32(rgb[r, c, 0])
                + _G * np.float32(rgb[r, c, 1])
                + _B * np.float32(rgb[r, c, 2])
            )
        _cols_pass(luma, col_start, col_w, tmp[r])
    _rows_pass(tmp, row_start, row_w, out)


def _dct_matrix() -> npt.NDArray[np.float32]:
    i = np.arange(1, 17)[:, None]
    j = np.arange(64)[None, :]
    scale = math.sqrt(2.0 / 64)
    matrix: npt.NDArray[np.float32] = (scale * np.cos((math.pi / 2 / 64) * i * (2 * j + 1))).astype(
        np.float32
    )
    return matrix


_DCT: Final = _dct_matrix()


class LumaHasher:
    """PDQ of many same-size luma frames: :meth:`add` one ``H x W`` frame at a time
    (uint8 grey or float32 luma), :meth:`finish` gives ``(hashes, qualities)`` for a
    batch. Not thread-safe; one per decoding stream.

    With ``exact_ties`` (video frames), a frame whose DCT coefficients tie at the
    median (:func:`ties_at_median`: flat, striped or symmetric frames such as a black
    or a test-card frame) is hashed by ``pdqhash`` itself at :meth:`add`, as photos
    are, so float rounding never decides its bits."""

    def __init__(
        self, height: int, width: int, batch: int = _BATCH, *, exact_ties: bool = False
    ) -> None:
        """Weights for ``height x width`` frames; at most ``batch`` frames per finish."""
        if height < MIN_HASHABLE_DIM or width < MIN_HASHABLE_DIM:
            raise MediaError(f"{width}x{height} frames are too small for PDQ")
        self.height, self.width = height, width
        self._rows = _axis_weights(height)
        self._cols = _axis_weights(width)
        self._tmp = np.empty((height, 64), dtype=np.float32)
        self._out = np.empty((batch, 64, 64), dtype=np.float32)
        self._n = 0
        self._exact_ties = exact_ties
        self._exact: dict[int, tuple[bytes, int]] = {}

    @property
    def full(self) -> bool:
        """True when the batch must be :meth:`finish`-ed before the next :meth:`add`."""
        return self._n == self._out.shape[0]

    def add(self, pixels: npt.NDArray[np.generic]) -> None:
        """Blur and decimate one frame into the batch: ``H x W`` grey/luma or
        ``H x W x 3`` uint8 RGB."""
        if pixels.shape[:2] != (self.height, self.width):
            raise MediaError(f"frame is {pixels.shape}, expected {(self.height, self.width)}")
        if pixels.ndim == 3:
            rgb = cast(npt.NDArray[np.uint8], pixels)
            _sample64_rgb(rgb, *self._rows, *self._cols, self._tmp, self._out[self._n])
        else:
            any_order = pixels.dtype == np.uint8 and _any_order_ok(self.width)
            _sample64(pixels, *self._rows, *self._cols, self._tmp, self._out[self._n], any_order)
        if self._exact_ties and ties_at_median(self._out[self._n : self._n + 1]):
            self._exact[self._n] = _reference_pdq(pixels)
        self._n += 1

    def finish(self) -> tuple[list[bytes], list[int]]:
        """``(32-byte hashes, qualities 0-100)`` of the frames added since the last call."""
        a = self._out[: self._n]
        self._n = 0
        hashes, qualities = pdq_from_64x64(a)
        for slot, (value, quality) in self._exact.items():
            hashes[slot], qualities[slot] = value, quality
        self._exact.clear()
        return hashes, qualities


def _reference_pdq(pixels: npt.NDArray[np.generic]) -> tuple[bytes, int]:
    """``pdqhash.compute`` of one frame (grey frames as three equal channels; float
    luma rounded to bytes, the nearest picture ``pdqhash`` reads)."""
    if pixels.ndim == 2:
        grey = (
            np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
            if pixels.dtype.kind == "f"
            else pixels.astype(np.uint8, copy=False)
        )
        rgb = np.ascontiguousarray(np.broadcast_to(grey[:, :, None], (*grey.shape, 3)))
    else:
        rgb = np.ascontiguousarray(pixels, dtype=np.uint8)
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def pdq_from_64x64(a: npt.NDArray[np.float32]) -> tuple[list[bytes], list[int]]:
    """PDQ hashes and qualities of ``N x 64 x 64`` blurred-and-decimated luma buffers."""
    if len(a) == 0:
        return [], []
    # Quality: PDQ's sum of truncated vertical and horizontal gradients, /90, capped.
    dv = np.trunc((a[:, :-1, :] - a[:, 1:, :]) * np.float32(100) / np.float32(255))
    dh = np.trunc((a[:, :, :-1] - a[:, :, 1:]) * np.float32(100) / np.float32(255))
    grad = np.abs(dv).sum(axis=(1, 2), dtype=np.int64) + np.abs(dh).sum(axis=(1, 2), dtype=np.int64)
    quality = np.minimum(grad // 90, 100)
    # 2-D DCT keeping frequencies 1..16 on each axis, then bits above the median
    # (the 128th smallest of 256, as PDQ's Torben median).
    coeffs = (_DCT @ a @ _DCT.T).reshape(len(a), 256)
    median = np.partition(coeffs, 127, axis=1)[:, 127:128]
    bits = coeffs > median
    # Bit k = 16 i + j; hex is bit 255 first, so pack the bits in reverse order.
    packed = np.packbits(bits[:, ::-1], axis=1)
    return [row.tobytes() for row in packed], [int(q) for q in quality]


#: Median gap (in DCT units) at or under which the kernel defers to ``pdqhash``: the
#: bits are then decided by float rounding. Images whose exact coefficients tie at the
#: median (flat, one-axis-only, periodic or symmetric synthetic pictures) leave a gap
#: of at most ~1e-4 in the kernel's float32 DCT (measured over 1,008 checkerboards,
#: stripes and rectangles, 705 of which ``pdqhash`` hashed 1-150 bits apart); the
#: kernel's coefficients differ from ``pdqhash``'s by at most ~2e-3 on photos up to
#: 5640 x 3172 (measured), and photos' gaps are rarely under 1e-3.
TIE_GAP: Final = 1e-3


def ties_at_median(a: npt.NDArray[np.float32]) -> bool:
    """True when any of the ``N x 64 x 64`` sample buffers has DCT coefficients within
    :data:`TIE_GAP` of each other across the median (the 128th and 129th smallest),
    so float rounding, not the picture, would decide which side of the median they fall."""
    coeffs = (_DCT @ a @ _DCT.T).reshape(len(a), 256).astype(np.float64)
    pair = np.partition(coeffs, (127, 128), axis=1)
    return bool((pair[:, 128] - pair[:, 127] <= TIE_GAP).any())


def pdq_hash_luma(pixels: npt.NDArray[np.generic]) -> tuple[bytes, int]:
    """``(32-byte hash, quality)`` of one frame (fast path): ``H x W`` luma/grey or
    ``H x W x 3`` uint8 RGB."""
    hasher = LumaHasher(pixels.shape[0], pixels.shape[1], batch=1)
    hasher.add(pixels)
    hashes, qualities = hasher.finish()
    return hashes[0], qualities[0]


def rgb_to_luma(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """PDQ's luma (0.299 R + 0.587 G + 0.114 B) of ``H x W x 3`` pixels, float32."""
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    luma: npt.NDArray[np.float32] = (
        np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b
    )
    return luma


# ---------------------------------------------------------------------------------------
# Photos: one image at a time, and the eight dihedral variants.

#: Smallest side hashed by the kernel; smaller images repeat sample points, where PDQ's
#: own float rounding decides ties, so they go to ``pdqhash`` (it costs nothing there).
PHOTO_MIN_SIDE: Final = 64


def _pixels_for_kernel(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``pixels`` as the kernel reads them: a view repeating one plane three times (the
    fast decoder's luma-only output) is hashed as that grey plane."""
    if pixels.ndim == 3 and pixels.strides[2] == 0:
        return pixels[:, :, 0]
    return pixels


def sample64(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """PDQ's blurred 64 x 64 luma samples of ``H x W x 3`` RGB or ``H x W`` grey pixels."""
    src = _pixels_for_kernel(pixels)
    hasher = LumaHasher(src.shape[0], src.shape[1], batch=1)
    hasher.add(src)
    out: npt.NDArray[np.float32] = hasher._out[0]
    return out


def pdq_photo(pixels: npt.NDArray[np.uint8]) -> tuple[bytes, int] | None:
    """``(32-byte hash, quality)`` of one photo, equal to ``pdqhash.compute`` up to
    float rounding; None when coefficients tie at the median (:func:`ties_at_median`):
    the caller then asks ``pdqhash`` itself."""
    a = sample64(pixels)[None]
    if ties_at_median(a):
        return None
    hashes, qualities = pdq_from_64x64(a)
    return hashes[0], qualities[0]


def pdq_photo_dihedral(pixels: npt.NDArray[np.uint8]) -> tuple[list[bytes], int] | None:
    """The 8 dihedral hashes in ``pdqhash.compute_dihedral``'s order (orig, rot90,
    rot180, rot270, flipx, flipy, flipplus1, flipminus1) and the quality.

    Moving the image moves its 64 x 64 samples the same way, so each variant is the
    DCT of the moved sample grid (as PDQ derives them from one DCT). None when any
    variant's coefficients tie at the median (:func:`ties_at_median`).
    """
    a = sample64(pixels)
    variants = np.stack(
        [
            a,
            np.rot90(a, 1),
            np.rot90(a, 2),
            np.rot90(a, 3),
            a[::-1, :],
            a[:, ::-1],
            a.T,
            np.rot90(a, 2).T,
        ]
    )
    stacked = np.ascontiguousarray(variants)
    if ties_at_median(stacked):
        return None
    hashes, qualities = pdq_from_64x64(stacked)
    return hashes, qualities[0]


def warm_up() -> None:
    """Load the compiled kernels now (about 0.2 s the first time in a process) for the
    array kinds photos and frames arrive as: grey, RGB, writeable or read-only."""
    for shape in ((64, 64), (64, 64, 3)):
        pixels = np.zeros(shape, np.uint8)
        pdq_photo(pixels)
        pixels.setflags(write=False)
        pdq_photo(pixels)
