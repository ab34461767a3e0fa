"""The hashing pipeline: one read, digests of the decoded bytes, errors, process pool."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tipline.config import Settings
from tipline.errors import (
    DecompressionBombError,
    InputError,
    MediaError,
    MediaTooLargeError,
    UnsupportedMediaError,
)
from tipline.signals.hashing import (
    DecodeMode,
    HashOptions,
    HashResult,
    hash_bytes,
    hash_many,
    hash_path,
)
from tipline.signals.hexbits import hamming_hex
from tipline.signals.limits import MediaLimits
from tipline.signals.pdq import pdq_hash


def scene(width: int = 640, height: int = 400, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    """A folder of good and bad files."""
    files: dict[str, Path] = {}
    for i in range(3):
        p = tmp_path / f"good{i}.jpg"
        scene(seed=i).save(p, "JPEG", quality=90)
        files[f"good{i}"] = p
    png = tmp_path / "good.png"
    scene(seed=9).save(png, "PNG")
    files["png"] = png
    jpeg = files["good0"].read_bytes()
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 3])
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not a picture\n")
    files["bomb"] = tmp_path / "bomb.png"
    files["bomb"].write_bytes(png_claiming(50_000, 50_000))
    files["video"] = tmp_path / "broken.mp4"
    files["video"].write_bytes(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2" + b"\0" * 100)
    return files


def test_default_signals_and_digests_of_the_same_bytes(media: dict[str, Path]) -> None:
    path = media["good0"]
    result = hash_path(str(path), HashOptions())
    assert result.ok and result.media == "photo"
    assert [s.type for s in result.signals] == ["pdq", "md5", "sha256"]
    data = path.read_bytes()
    values = {s.type: s.value for s in result.signals}
    assert values["md5"] == hashlib.md5(data).hexdigest()
    assert values["sha256"] == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    with Image.open(path) as im:
        assert values["pdq"] == pdq_hash(np.asarray(im.convert("RGB")))[0]


def test_hash_bytes_equals_hash_path(media: dict[str, Path]) -> None:
    for key in ("good1", "png", "truncated", "text", "bomb", "empty"):
        path = media[key]
        a = hash_path(str(path), HashOptions(dihedral=True))
        b = hash_bytes(path.read_bytes(), str(path), HashOptions(dihedral=True))
        assert a.signals == b.signals, key
        assert type(a.error) is type(b.error), key


def test_signal_selection() -> None:
    buf = io.BytesIO()
    scene().save(buf, "PNG")
    result = hash_bytes(buf.getvalue(), "x.png", HashOptions(signals=("sha1", "md5")))
    assert [s.type for s in result.signals] == ["sha1", "md5"]
    result = hash_bytes(buf.getvalue(), "x.png", HashOptions(signals=("pdq",), dihedral=True))
    assert len(result.signals) == 8
    # Video names asked for on a photo map to their photo counterparts.
    result = hash_bytes(buf.getvalue(), "x.png", HashOptions(signals=("video_md5",)))
    assert [s.type for s in result.signals] == ["md5"]


@pytest.mark.parametrize(
    ("key", "error", "reason"),
    [
        ("truncated", MediaError, "truncated"),
        ("empty", MediaError, "empty file"),
        ("text", UnsupportedMediaError, "not a supported"),
        ("bomb", DecompressionBombError, "decompression bomb"),
    ],
)
def test_bad_files_give_one_clear_error(
    media: dict[str, Path], key: str, error: type[Exception], reason: str
) -> None:
    result = hash_path(str(media[key]), HashOptions())
    assert not result.ok
    assert isinstance(result.error, error)
    assert reason in str(result.error)
    assert result.signals == ()


def test_missing_path_and_directory(tmp_path: Path) -> None:
    missing = hash_path(str(tmp_path / "nope.jpg"), HashOptions())
    assert isinstance(missing.error, MediaError) and "no such file" in str(missing.error)
    folder = hash_path(str(tmp_path), HashOptions())
    assert isinstance(folder.error, MediaError) and "directory" in str(folder.error)


def test_size_limit(media: dict[str, Path]) -> None:
    small = MediaLimits(max_file_bytes=100)
    result = hash_path(str(media["good0"]), HashOptions(), limits=small)
    assert isinstance(result.error, MediaTooLargeError)
    result = hash_bytes(media["good0"].read_bytes(), "x", HashOptions(), limits=small)
    assert isinstance(result.error, MediaTooLargeError)


def test_pixel_limit_from_settings(media: dict[str, Path]) -> None:
    limits = MediaLimits.of(Settings(max_image_pixels=1000))
    result = hash_path(str(media["png"]), HashOptions(), limits=limits)
    assert isinstance(result.error, DecompressionBombError)


def test_video_goes_to_the_video_hasher(media: dict[str, Path]) -> None:
    """A broken MP4 is sniffed as video and fails with one error, whether or not the
    video hasher is installed; it never reaches the photo decoder."""
    result = hash_path(str(media["video"]), HashOptions())
    assert not result.ok
    assert result.signals == ()
    assert "not a supported" not in str(result.error)


def test_exact_mode_reaches_the_reference_decode(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    scene(2400, 1800).save(big, "JPEG", quality=92)
    exact = hash_path(str(big), HashOptions(signals=("pdq",), decode=DecodeMode.EXACT))
    with Image.open(big) as im:
        assert exact.signals[0].value == pdq_hash(np.asarray(im.convert("RGB")))[0]


def _summary(results: list[HashResult]) -> list[tuple[str, tuple[str, ...], str | None]]:
    return [
        (r.path, tuple(s.value for s in r.signals), type(r.error).__name__ if r.error else None)
        for r in results
    ]


def test_hash_many_in_processes_matches_sequential(media: dict[str, Path]) -> None:
    paths = [str(p) for p in media.values()] * 3
    sequential = list(hash_many(paths, HashOptions(), jobs=1))
    parallel = list(hash_many(iter(paths), HashOptions(), jobs=2, chunk=2))
    assert _summary(parallel) == _summary(sequential)
    assert [r.path for r in parallel] == paths
    assert sum(r.ok for r in parallel) == 4 * 3
    # errors survive the trip between processes with their message
    bad = next(r for r in parallel if r.path == str(media["bomb"]))
    assert isinstance(bad.error, DecompressionBombError)
    assert "decompression bomb" in str(bad.error)


def test_hash_many_rejects_unknown_signal(media: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="unknown signal"):
        list(hash_many([str(media["good0"])], HashOptions(signals=("nope",))))


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result = hash_path(str(fifo), HashOptions())
    assert isinstance(result.error, MediaError) and "regular file" in str(result.error)


def test_large_cmyk_jpeg_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    scene(2400, 1600).convert("CMYK").save(path, "JPEG", quality=92)
    fast = hash_path(str(path), HashOptions(signals=("pdq",)))
    exact = hash_path(str(path), HashOptions(signals=("pdq",), decode=DecodeMode.EXACT))
    assert fast.ok and exact.ok
    assert hamming_hex(fast.signals[0].value, exact.signals[0].value) <= 16


def test_hash_many_can_stop_early(media: dict[str, Path]) -> None:
    paths = [str(media["good0"])] * 200
    results = hash_many(paths, HashOptions(signals=("md5",)), jobs=2, chunk=1)
    first = next(results)
    assert first.ok
    results.close()  # cancels queued chunks and shuts the pool down


def test_signals_that_do_not_apply_give_none(media: dict[str, Path]) -> None:
    result = hash_path(str(media["video"]), HashOptions(signals=("sha1",)))
    assert result.ok and result.media == "video" and result.signals == ()


@pytest.mark.parametrize("size", [(1, 1), (1, 1000), (3, 700), (5000, 1)])
def test_tiny_and_thin_images_hash_as_low_quality(size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    result = hash_bytes(buf.getvalue(), "thin.png", HashOptions(dihedral=True))
    assert result.ok
    assert all(s.low_quality and len(s.value) == 64 for s in result.signals if s.type == "pdq")


def test_reference_video_through_hash_path(reference_dir: Path) -> None:
    video = reference_dir / "video" / "chair-19-sd-bar.mp4"
    result = hash_path(str(video), HashOptions(signals=("pdq", "md5")))
    assert result.ok, result.error
    assert result.media == "video"
    assert [s.type for s in result.signals] == ["vpdq", "video_md5"]
    assert result.signals[1].value == hashlib.md5(video.read_bytes()).hexdigest()
    assert len(result.signals[0].frames) >= 10


_ALLOCATION_CYCLES = """
import resource, sys
if sys.argv[1] == "worker":
    import tipline.signals.warm
def cycle():
    buffers = [b"x" * (2 << 20) for _ in range(3)]  # a photo's bytes, pixels, scratch
    del buffers
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="allocator tuning is glibc's"
)
def test_hashing_workers_reuse_freed_memory() -> None:
    """The worker pools' preload (``tipline.signals.warm``) keeps freed heap memory:
    twenty more rounds of allocating and freeing three 2 MB buffers fault in almost no
    new pages (a plain process gives the memory back and faults it in every round:
    about 1500 page faults per round). Counted, not timed."""
    import subprocess
    import sys

    def faults(kind: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _ALLOCATION_CYCLES, kind],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return int(out.stdout)

    assert faults("worker") < 1500  # less than one round's pages in twenty rounds
    from tipline.signals.warm import keep_freed_memory

    assert keep_freed_memory()  # applying it again is harmless
