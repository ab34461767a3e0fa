"""Decoding: formats, every Pillow mode, EXIF orientation, reduced JPEG decode, bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tipline.errors import DecompressionBombError, MediaError, UnsupportedMediaError
from tipline.signals.decode import (
    FAST_MIN_SIDE,
    DecodeMode,
    decode_oriented,
    decode_pixels,
    to_rgb,
    unorient,
)
from tipline.signals.hexbits import hamming_hex
from tipline.signals.pdq import pdq_hash
from tipline.signals.sniff import SniffedKind, sniff

BIG = 10**9


def scene(width: int = 640, height: int = 400, seed: int = 1) -> Image.Image:
    """A smooth benign test picture with enough structure for a quality-100 PDQ."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", [DecodeMode.FAST, DecodeMode.EXACT])
def test_decompression_bomb_refused_before_decoding(mode: DecodeMode) -> None:
    with pytest.raises(DecompressionBombError, match="decompression bomb"):
        decode_pixels(png_claiming(50_000, 50_000), mode=mode, max_pixels=200_000_000)


def test_configured_pixel_limit_is_enforced() -> None:
    data = encode(scene(100, 100), "PNG")
    with pytest.raises(DecompressionBombError, match="10000 pixels"):
        decode_pixels(data, mode=DecodeMode.FAST, max_pixels=9_999)
    assert decode_pixels(data, mode=DecodeMode.FAST, max_pixels=10_000).shape == (100, 100, 3)


def test_pillow_warning_band_does_not_leak_a_warning() -> None:
    # Between Pillow's warning and error thresholds Pillow would warn; we must not.
    # (pytest turns warnings into errors, so a leak fails this test.)
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 10
    with pytest.raises(MediaError):  # header only: the pixel data is missing
        decode_pixels(png_claiming(side, side), mode=DecodeMode.FAST, max_pixels=BIG)


def test_truncated_jpeg() -> None:
    data = encode(scene(), "JPEG", quality=90)
    with pytest.raises(MediaError, match="truncated"):
        decode_pixels(data[: len(data) // 2], mode=DecodeMode.EXACT, max_pixels=BIG)


def test_text_is_not_an_image() -> None:
    with pytest.raises(UnsupportedMediaError):
        decode_pixels(b"hello, world\n" * 10, mode=DecodeMode.FAST, max_pixels=BIG)


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("GIF", {}),
        ("JPEG", {"quality": 95}),
    ],
)
def test_formats_decode_like_pillow(fmt: str, kw: dict[str, object]) -> None:
    data = encode(scene(), fmt, **kw)
    with Image.open(io.BytesIO(data)) as im:
        reference, _ = pdq_hash(np.asarray(im.convert("RGB")))
    exact = decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=BIG)
    assert pdq_hash(exact)[0] == reference, fmt
    got, quality = pdq_hash(decode_pixels(data, mode=DecodeMode.FAST, max_pixels=BIG))
    assert quality >= 50
    assert hamming_hex(reference, got) <= 16, fmt


def test_heif_and_avif_when_plugins_installed() -> None:
    im = scene()
    expected, _ = pdq_hash(np.asarray(im))
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = pillow_heif.from_pillow(im)
    buf = io.BytesIO()
    heif.save(buf, format="HEIF", quality=90)
    data = buf.getvalue()
    assert sniff(data).format == "heif"
    assert (
        hamming_hex(
            expected, pdq_hash(decode_pixels(data, mode=DecodeMode.FAST, max_pixels=BIG))[0]
        )
        <= 16
    )
    from PIL import features

    if not features.check("avif"):
        pytest.importorskip("pillow_avif")
    avif = encode(im, "AVIF", quality=90)
    assert sniff(avif).format == "avif"
    assert (
        hamming_hex(
            expected, pdq_hash(decode_pixels(avif, mode=DecodeMode.FAST, max_pixels=BIG))[0]
        )
        <= 16
    )


def test_gif_first_frame() -> None:
    first, second = scene(seed=1), scene(seed=2)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    got, _ = pdq_hash(decode_pixels(data, mode=DecodeMode.FAST, max_pixels=BIG))
    want_first, _ = pdq_hash(
        np.asarray(Image.open(io.BytesIO(encode(first, "GIF"))).convert("RGB"))
    )
    assert hamming_hex(got, want_first) <= 8
    assert hamming_hex(got, pdq_hash(np.asarray(second))[0]) > 31


ALL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "F", "HSV"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_converts_like_pillow(mode: str) -> None:
    """8-bit-range content of every mode converts exactly as Pillow's convert("RGB")."""
    im = scene().convert(mode)
    ours = np.asarray(to_rgb(im))
    assert ours.shape == (400, 640, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, np.asarray(im.convert("RGB")))
    original, _ = pdq_hash(np.asarray(scene()))
    if mode != "1":  # 1-bit dithering is lossy on purpose
        assert hamming_hex(original, pdq_hash(ours)[0]) <= 16


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "F"])
def test_modes_survive_a_file_round_trip(mode: str) -> None:
    im = scene().convert(mode)
    data = encode(im, "TIFF")
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == mode
    got, _ = pdq_hash(decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=BIG))
    assert got == pdq_hash(np.asarray(im.convert("RGB")))[0]


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = np.asarray(scene().convert("L")).astype(np.uint16) * 257
    im = Image.fromarray(grey)
    assert im.mode.startswith("I;16")
    ours = np.asarray(to_rgb(im))
    want = np.asarray(scene().convert("L"))
    assert np.abs(ours[..., 0].astype(int) - want.astype(int)).max() <= 1
    wide = Image.fromarray((grey.astype(np.int32) * 4), "I")
    assert np.asarray(to_rgb(wide)).std() > 10  # not a white page


def test_fast_jpeg_decode_is_reduced_and_oriented(tmp_path: Path) -> None:
    im = scene(2400, 1600)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate 90 degrees clockwise
    data = encode(im, "JPEG", quality=92, exif=exif.tobytes())
    fast = decode_pixels(data, mode=DecodeMode.FAST, max_pixels=BIG)
    exact = decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=BIG)
    assert exact.shape == (2400, 1600, 3)  # portrait after orientation
    assert fast.shape[0] > fast.shape[1]
    assert FAST_MIN_SIDE <= min(fast.shape[:2]) < 1600
    upright = np.asarray(im.transpose(Image.Transpose.ROTATE_270))
    assert hamming_hex(pdq_hash(exact)[0], pdq_hash(upright)[0]) <= 8
    assert hamming_hex(pdq_hash(fast)[0], pdq_hash(exact)[0]) <= 16


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(orientation: int) -> None:
    im = scene(1200, 1100)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(im, "JPEG", quality=92, exif=exif.tobytes())
    ours = decode_pixels(data, mode=DecodeMode.EXACT, max_pixels=BIG)
    from PIL import ImageOps

    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(ours, want)


@settings(max_examples=40, deadline=None)
@given(
    orientation=st.integers(1, 8),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_unorient_gives_the_pixels_as_stored(
    orientation: int, width: int, height: int, seed: int
) -> None:
    """What python-threatexchange and HMA hash (the stored pixels, EXIF ignored) is
    recovered exactly from the oriented decode: both PDQs come from one decode."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(pixels), "PNG", exif=exif.tobytes())
    oriented, applied = decode_oriented(data, mode=DecodeMode.EXACT, max_pixels=BIG)
    assert applied == orientation
    assert np.array_equal(unorient(oriented, applied), pixels)


@pytest.mark.parametrize(
    ("head", "kind", "fmt"),
    [
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, SniffedKind.PHOTO, "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, SniffedKind.PHOTO, "png"),
        (b"GIF89a" + b"\0" * 20, SniffedKind.PHOTO, "gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", SniffedKind.PHOTO, "webp"),
        (b"II*\x00" + b"\0" * 20, SniffedKind.PHOTO, "tiff"),
        (b"BM" + b"\0" * 30, SniffedKind.PHOTO, "bmp"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", SniffedKind.PHOTO, "heif"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", SniffedKind.PHOTO, "avif"),
        (b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41", SniffedKind.VIDEO, "mp4"),
        (b"\0\0\0\x14ftypqt  \0\0\0\0qt  ", SniffedKind.VIDEO, "mov"),
        (b"\x1a\x45\xdf\xa3" + b"\0" * 20, SniffedKind.VIDEO, "matroska"),
        (b"RIFF\0\0\0\0AVI LIST", SniffedKind.VIDEO, "avi"),
        (b"hello world, this is text", SniffedKind.UNSUPPORTED, "unknown"),
        (b"", SniffedKind.UNSUPPORTED, "unknown"),
    ],
)
def test_sniff(head: bytes, kind: SniffedKind, fmt: str) -> None:
    got = sniff(head)
    assert (got.kind, got.format) == (kind, fmt)


def _small_files() -> list[bytes]:
    im = scene(96, 64)
    return [
        encode(im, "JPEG", quality=80),
        encode(im, "PNG"),
        encode(im, "GIF"),
        encode(im, "WEBP", quality=80),
        encode(im, "BMP"),
        encode(im, "TIFF"),
    ]


SMALL_FILES = _small_files()


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(SMALL_FILES) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10**6),
)
def test_corrupted_files_fail_only_with_tipline_errors(
    index: int, edits: list[tuple[int, int]], cut: int
) -> None:
    """Hostile bytes: decoding either works or raises a MediaError subclass, never a
    stray Pillow/numpy exception (the pipeline reports those as bugs)."""
    data = bytearray(SMALL_FILES[index])
    for pos, value in edits:
        data[pos % len(data)] = value
    blob = bytes(data[: max(1, cut % (len(data) + 1))])
    for mode in (DecodeMode.FAST, DecodeMode.EXACT):
        try:
            pixels = decode_pixels(blob, mode=mode, max_pixels=10**7)
        except MediaError:
            continue
        assert pixels.ndim == 3 and pixels.shape[2] == 3


@given(st.binary(max_size=600))
def test_sniff_never_raises(head: bytes) -> None:
    assert sniff(head).kind in SniffedKind
