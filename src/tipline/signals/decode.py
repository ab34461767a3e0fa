"""Decode image bytes into the pixels PDQ hashes.

Two paths:

* :attr:`DecodeMode.EXACT` is the reference: full-resolution Pillow decode, EXIF
  orientation, conversion to RGB. PDQ of its output is bit-identical to
  ``pdqhash.compute`` on ``Image.open(...).convert("RGB")`` for every 8-bit mode.
* :attr:`DecodeMode.FAST` decodes JPEG in the DCT domain at 1/2, 1/4 or 1/8 scale (the
  short side stays >= :data:`FAST_MIN_SIDE` px) and only the luma plane, which is what
  PDQ reads anyway; other formats are box-reduced to the same size. Its hashes stay
  within a few bits of the exact path (tests state the tolerance).

Pixels come back as an ``H x W x 3`` uint8 array (for the luma-only path a read-only
view that repeats one plane three times, so PDQ's RGB->luma step returns the plane).
"""

from __future__ import annotations

import enum
import io
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError, features

from tipline import _optional
from tipline.errors import DecompressionBombError, MediaError, UnsupportedMediaError
from tipline.signals.budget import PixelBudget


class DecodeMode(enum.Enum):
    """How photos are decoded before PDQ."""

    FAST = "fast"  # JPEG DCT-domain reduced decode (short side >= 512 px)
    EXACT = "exact"  # full-resolution reference decode


#: Short side, in pixels, that the fast path never goes below.
FAST_MIN_SIDE: Final = 512

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HIGH_DEPTH_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

RGBArray = npt.NDArray[np.uint8]

_plugins_loaded: set[str] = set()


def _load_plugin(fmt: str) -> None:
    """Register the HEIF/AVIF openers on first need (not at import)."""
    if fmt in _plugins_loaded:
        return
    if fmt == "heif":
        _optional.require("pillow_heif").register_heif_opener()
    elif fmt == "avif" and not features.check("avif"):
        _optional.require("pillow_avif")
    _plugins_loaded.add(fmt)


def open_image(data: bytes, *, max_pixels: int, fmt: str | None = None) -> Image.Image:
    """Open ``data`` lazily and check its header size against ``max_pixels``.

    Nothing is decoded yet. Raises DecompressionBombError, UnsupportedMediaError or
    MediaError; Pillow's own DecompressionBombWarning never escapes.
    """
    if fmt in ("heif", "avif"):
        _load_plugin(fmt)
    # Pillow's own bomb check (a module-global threshold, about 179M pixels) would fire
    # before ours and cap every configured limit there; ``max_pixels`` is the limit
    # applied, checked below as soon as the header is read. Nothing else in tipline
    # opens images, so the global is switched off rather than juggled per call.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(f"corrupt image header: {exc}") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels}"
        )
    return im


def _load(im: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise MediaError(f"truncated image data ({text})") from None
        raise MediaError(f"cannot decode {im.format or 'image'} data: {text}") from None
    except (SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise MediaError(f"cannot decode {im.format or 'image'} data: {exc}") from None


def _orient(im: Image.Image) -> tuple[Image.Image, int]:
    """Apply the EXIF orientation tag (values 2-8; anything else is left alone);
    returns the image and the orientation applied (1 when none)."""
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a broken EXIF block must not stop hashing the pixels
        return im, 1
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return im, 1
    return im.transpose(method), int(orientation or 1)


def unorient(pixels: RGBArray, orientation: int) -> RGBArray:
    """Undo EXIF ``orientation`` (2-8) on ``H x W x 3`` pixels: the pixels as stored in
    the file, which is what hashers that ignore EXIF (python-threatexchange, HMA) see.
    A pure permutation of the pixels (contiguous copy); 1 or unknown: unchanged."""
    inverse = {
        2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT is its own inverse
        3: lambda a: a[::-1, ::-1],  # ROTATE_180
        4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
        6: lambda a: np.rot90(a, 1),  # undo ROTATE_270 (90 degrees clockwise)
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
        8: lambda a: np.rot90(a, -1),  # undo ROTATE_90 (90 degrees counter-clockwise)
    }.get(orientation)
    if inverse is None:
        return pixels
    return np.ascontiguousarray(inverse(pixels))


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """8-bit grey from 16/32-bit integer or float images.

    Values already within 0..255 are used as they are (what ``convert("RGB")`` does);
    wider ranges are scaled, 16-bit by 1/257, others by their min..max, instead of
    being clipped to white.
    """
    arr = np.asarray(im)
    lo = float(arr.min()) if arr.size else 0.0
    hi = float(arr.max()) if arr.size else 0.0
    if lo >= 0.0 and hi <= 255.0:
        return im.convert("L")
    if lo >= 0.0 and hi <= 65535.0 and not np.issubdtype(arr.dtype, np.floating):
        scaled = np.rint(arr.astype(np.float64) / 257.0)
    else:
        span = hi - lo if hi > lo else 1.0
        scaled = np.rint((arr.astype(np.float64) - lo) * (255.0 / span))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha dropped, as the reference does)."""
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_l(im).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError:
        pass
    try:
        return im.convert("RGBA").convert("RGB")
    except ValueError:
        raise UnsupportedMediaError(f"image mode {im.mode!r} cannot be converted") from None


def _repeat_plane(plane: npt.NDArray[np.uint8]) -> RGBArray:
    """A read-only H x W x 3 view repeating one plane (no copy)."""
    h, w = plane.shape
    view: RGBArray = np.lib.stride_tricks.as_strided(
        plane, shape=(h, w, 3), strides=(plane.strides[0], plane.strides[1], 0), writeable=False
    )
    return view


def _draft_request(width: int, height: int) -> tuple[int, int]:
    """Size to ask ``Image.draft`` for so the short side stays >= FAST_MIN_SIDE."""
    short = min(width, height)
    return (
        max(1, -(-width * FAST_MIN_SIDE // short)),
        max(1, -(-height * FAST_MIN_SIDE // short)),
    )


def decode_pixels(
    data: bytes,
    *,
    mode: DecodeMode,
    max_pixels: int,
    fmt: str | None = None,
    budget: PixelBudget | None = None,
) -> RGBArray:
    """Decode ``data`` to ``H x W x 3`` uint8 pixels for PDQ.

    ``fmt`` is the sniffed format (used to load HEIF/AVIF plugins lazily).
    Raises MediaError subclasses for undecodable input. Pillow's warnings about
    corrupt metadata in hostile files are silenced: the pixels either decode or fail.
    With ``budget``, the pixels to be decoded (after any DCT-domain reduction) are
    reserved from it for the decode (BusyError when they do not fit).
    """
    return decode_oriented(data, mode=mode, max_pixels=max_pixels, fmt=fmt, budget=budget)[0]


def decode_oriented(
    data: bytes,
    *,
    mode: DecodeMode,
    max_pixels: int,
    fmt: str | None = None,
    budget: PixelBudget | None = None,
) -> tuple[RGBArray, int]:
    """:func:`decode_pixels`, and the EXIF orientation it applied (1 when none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_pixels(data, mode=mode, max_pixels=max_pixels, fmt=fmt, budget=budget)


def _reserved(budget: PixelBudget | None, im: Image.Image) -> AbstractContextManager[None]:
    """The budget reservation for decoding ``im`` at its current (drafted) size."""
    if budget is None:
        return nullcontext()
    width, height = im.size
    return budget.reserve(width * height)


def _decode_pixels(
    data: bytes, *, mode: DecodeMode, max_pixels: int, fmt: str | None, budget: PixelBudget | None
) -> tuple[RGBArray, int]:
    if fmt is None:
        from tipline.signals.sniff import sniff

        fmt = sniff(data[:64]).format
    im = open_image(data, max_pixels=max_pixels, fmt=fmt)
    # Multi-frame formats (GIF, TIFF, WebP) open on their first frame; asking for
    # n_frames would scan the whole file, so it is never touched.
    if (
        mode is DecodeMode.FAST
        and im.format == "JPEG"
        and im.mode in ("RGB", "L")
        and min(im.size) >= 2 * FAST_MIN_SIDE
    ):
        # Large Y'CbCr (or grey) JPEG: decode only the luma plane (PDQ reads luma
        # anyway) at 1/2..1/8 scale in the DCT domain. Smaller ones gain nothing from
        # it and take the exact path below.
        im.draft("L", _draft_request(*im.size))
        with _reserved(budget, im):
            _load(im)
            im, orientation = _orient(im)
            return _repeat_plane(np.asarray(im)), orientation
    if mode is DecodeMode.FAST and im.format == "JPEG" and min(im.size) >= 2 * FAST_MIN_SIDE:
        # CMYK and other JPEGs still get the DCT-domain reduction, in their own mode.
        im.draft(im.mode, _draft_request(*im.size))
    with _reserved(budget, im):
        _load(im)
        im, orientation = _orient(im)
        rgb = to_rgb(im)
        if mode is DecodeMode.FAST:
            factor = min(rgb.size) // FAST_MIN_SIDE
            if factor >= 2:
                rgb = rgb.reduce(factor)
        pixels: RGBArray = np.asarray(rgb)
    return pixels, orientation
