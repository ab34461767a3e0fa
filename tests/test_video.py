"""Video hashing: vPDQ conformance with Meta's reference lists, the fast PDQ kernel vs
``pdqhash``, the pipeline's signals and digests, and bad input (real ffmpeg processes)."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np
import pdqhash
import psutil
import pytest

from tipline.errors import DecompressionBombError, MediaError, UnsupportedMediaError
from tipline.signals.base import VideoFrame
from tipline.signals.hashing import HashOptions, hash_path, hash_video
from tipline.signals.limits import MediaLimits
from tipline.signals.pdq import bits_to_hex
from tipline.signals.video import (
    hash_video_frames,
    iter_video_frames,
    probe_video,
)
from tipline.signals.vpdq import MATCH_PERCENT, match_percentages, parse_vpdq_text

# Without ffmpeg these tests skip on a developer machine; in CI (CI=true) they must run.
pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None and os.environ.get("CI", "").lower() != "true",
    reason="ffmpeg not installed (apt-get install ffmpeg)",
)

#: Videos that must match chair-orig-22-sd-bar / pattern-hd-no-bar (issue 2).
CHAIR_COPIES = (
    "chair-19-sd-bar",
    "chair-20-sd-bar",
    "chair-22-sd-grey-bar",
    "chair-22-sd-sepia-bar",
    "chair-22-with-small-logo-bar",
)
CHAIR_ORIG = "chair-orig-22-sd-bar"
PATTERN_PAIR = ("pattern-longer-no-bar", "pattern-hd-no-bar")
#: Reference frames per second (all reference videos are 30 fps).
REF_FPS = 30


def _subject(name: str) -> str:
    return name.split("-")[0]  # chair / doorknob / pattern / test


def _ham(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _verdict(a: list[VideoFrame], b: list[VideoFrame]) -> bool:
    q, c = match_percentages(a, b)
    return q >= MATCH_PERCENT and c >= MATCH_PERCENT


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _no_ffmpeg_children() -> bool:
    return not [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


# ---------------------------------------------------------------------------------------
# Reference data (cached per session: every frame of every reference video once).


@pytest.fixture(scope="session")
def video_dir(reference_dir: Path) -> Path:
    return reference_dir / "video"


@pytest.fixture(scope="session")
def video_names(video_dir: Path) -> list[str]:
    return sorted(p.stem for p in video_dir.glob("*.mp4"))


@pytest.fixture(scope="session")
def reference_lists(video_dir: Path, video_names: list[str]) -> dict[str, list[VideoFrame]]:
    folder = video_dir / "vpdq-sample-hashes"
    return {
        n: parse_vpdq_text((folder / f"{n}.txt").read_text(), path=f"{n}.txt") for n in video_names
    }


@pytest.fixture(scope="session")
def every_frame(video_dir: Path, video_names: list[str]) -> dict[str, list[VideoFrame]]:
    return {n: hash_video_frames(str(video_dir / f"{n}.mp4"), fps=0) for n in video_names}


def _one_fps(frames: list[VideoFrame]) -> list[VideoFrame]:
    return [f for f in frames if f.index % REF_FPS == 0]


# ---------------------------------------------------------------------------------------
# Conformance.


@pytest.mark.slow
def test_every_frame_matches_reference_lists(
    every_frame: dict[str, list[VideoFrame]],
    reference_lists: dict[str, list[VideoFrame]],
) -> None:
    """Each video hashed at every frame matches its reference list (80% both ways), frame
    numbers and times agree, and per-frame drift stays within measured bounds."""
    print("\nvideo                           frames  mean  max  exact  usable-mean usable-max")
    for name, ours in every_frame.items():
        ref = reference_lists[name]
        assert [f.index for f in ours] == [f.index for f in ref], name
        assert max(abs(a.seconds - b.seconds) for a, b in zip(ours, ref, strict=True)) < 5e-4
        assert max(abs(a.quality - b.quality) for a, b in zip(ours, ref, strict=True)) <= 2
        d = np.array([_ham(a.hash, b.hash) for a, b in zip(ours, ref, strict=True)])
        usable = np.array([b.quality >= 50 for b in ref])
        print(
            f"{name:32s}{len(d):6d} {d.mean():5.2f} {d.max():4d} {np.mean(d == 0):6.2f}"
            f" {d[usable].mean():11.2f} {d[usable].max():10d}"
        )
        q, c = match_percentages(ours, ref)
        assert q >= MATCH_PERCENT and c >= MATCH_PERCENT, (name, q, c)
        # Bounds measured with Debian's FFmpeg 5.1: all frames mean <= 1.4, max 6 bits
        # (the vpdq package's own drift from these lists); doorknob is a low-contrast
        # clip (mean quality 45) drifting up to 76 bits, so only its usable frames are
        # bounded (mean 5.4, max 22 bits measured).
        if _subject(name) == "doorknob":
            assert d[usable].mean() <= 8.0 and d[usable].max() <= 28, name
        else:
            assert d.mean() <= 2.0 and d.max() <= 8, name


@pytest.mark.slow
def test_match_verdicts_equal_reference_verdicts(
    every_frame: dict[str, list[VideoFrame]],
    reference_lists: dict[str, list[VideoFrame]],
) -> None:
    """All-pairs video verdicts from our hashes equal those from the reference lists, and
    the reference lists show exactly the pairs the issue names."""
    names = sorted(every_frame)
    ours = {
        (a, b) for a in names for b in names if a < b and _verdict(every_frame[a], every_frame[b])
    }
    refs = {
        (a, b)
        for a in names
        for b in names
        if a < b and _verdict(reference_lists[a], reference_lists[b])
    }
    assert ours == refs
    for copy in CHAIR_COPIES:
        assert tuple(sorted((copy, CHAIR_ORIG))) in refs
    assert tuple(sorted(PATTERN_PAIR)) in refs
    with_orig = {p for p in refs if CHAIR_ORIG in p}
    assert {n for p in with_orig for n in p} - {CHAIR_ORIG} == set(CHAIR_COPIES)
    assert {p for p in refs if "pattern-hd-no-bar" in p} == {tuple(sorted(PATTERN_PAIR))}
    assert all(_subject(a) == _subject(b) for a, b in refs)


@pytest.mark.slow
def test_one_fps_decode_equals_every_frame_subset(
    video_dir: Path, every_frame: dict[str, list[VideoFrame]]
) -> None:
    """The 1 frame/s path (ffmpeg select filter) hashes exactly frames 0, 30, 60..."""
    for name in (CHAIR_ORIG, "pattern-hd-no-bar"):
        one = hash_video_frames(str(video_dir / f"{name}.mp4"), fps=1.0)
        assert one == _one_fps(every_frame[name])
        assert [f.seconds for f in one] == pytest.approx([float(i) for i in range(len(one))])


@pytest.mark.slow
def test_one_fps_matches_on_the_query_side(
    every_frame: dict[str, list[VideoFrame]],
    reference_lists: dict[str, list[VideoFrame]],
) -> None:
    """At 1 frame/s each video's frames are found in its own reference list and in the
    lists of the copies the issue names (query side >= 80%), and never in another
    subject's list. (The compared side cannot reach 80%: a 1 frame/s query holds 1/30 of
    the frames; two 1 frame/s lists of trimmed copies sample different instants.)"""
    one = {n: _one_fps(f) for n, f in every_frame.items()}
    for name, frames in one.items():
        assert match_percentages(frames, reference_lists[name])[0] >= MATCH_PERCENT, name
        for other, ref in reference_lists.items():
            if _subject(other) != _subject(name):
                q, c = match_percentages(frames, ref)
                assert q < MATCH_PERCENT and c < MATCH_PERCENT, (name, other, q, c)
    for copy in CHAIR_COPIES:
        q, _ = match_percentages(one[copy], reference_lists[CHAIR_ORIG])
        assert q >= MATCH_PERCENT, (copy, q)
        q, _ = match_percentages(one[CHAIR_ORIG], reference_lists[copy])
        assert q >= MATCH_PERCENT, (copy, q)
    q, _ = match_percentages(one[PATTERN_PAIR[0]], reference_lists[PATTERN_PAIR[1]])
    assert q >= MATCH_PERCENT


# ---------------------------------------------------------------------------------------
# Synthetic benign videos and bad input.


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("video")
    out = {
        "video": d / "testsrc.mp4",  # 6 s, 10 fps, with faststart (moov first)
        "long": d / "long.mp4",  # 40 s: more frames than one hashing batch
        "late_moov": d / "late-moov.mp4",
        "audio": d / "sine.m4a",
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
    }
    src = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=6"]
    enc = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    _ffmpeg(*src, *enc, "-movflags", "+faststart", str(out["video"]))
    _ffmpeg(*src, *enc, str(out["late_moov"]))
    # only stopped early (test_decoder_is_killed_and_reaped): encoded fast, 1.5 -> 0.2 CPU-s
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=40", *enc,
        "-preset", "ultrafast", str(out["long"]),
    )  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(out["audio"]))
    out["empty"].write_bytes(b"")
    out["text"].write_text("not a video\n")
    data = out["video"].read_bytes()
    out["truncated"] = d / "truncated.mp4"  # moov intact, media data cut
    out["truncated"].write_bytes(data[: len(data) // 4])
    late = out["late_moov"].read_bytes()
    out["truncated_moov"] = d / "truncated-moov.mp4"  # index lost with the tail
    out["truncated_moov"].write_bytes(late[: len(late) // 2])
    return out


def test_synthetic_video_signals_and_digests(media: dict[str, Path]) -> None:
    path = str(media["video"])
    signals = hash_video(path)
    assert [s.type for s in signals] == ["vpdq", "video_md5", "video_sha256"]
    vpdq_sig, md5, sha256 = signals
    data = media["video"].read_bytes()
    assert md5.value == hashlib.md5(data).hexdigest()
    assert sha256.value == hashlib.sha256(data).hexdigest()
    frames = vpdq_sig.frames
    assert [f.index for f in frames] == list(range(0, 60, 10))
    assert [f.seconds for f in frames] == pytest.approx([0, 1, 2, 3, 4, 5])
    assert parse_vpdq_text(vpdq_sig.value) == list(frames)
    assert not vpdq_sig.low_quality and vpdq_sig.quality == 100
    # every frame, and only the signals asked for
    only = hash_video(path, ("vpdq",), fps=0)
    assert [s.type for s in only] == ["vpdq"] and len(only[0].frames) == 60
    assert [f for f in only[0].frames if f.index % 10 == 0] == list(frames)
    digests = hash_video(path, ("video_sha256",))
    assert [(s.type, s.value) for s in digests] == [("video_sha256", sha256.value)]
    # the same through the hashing pipeline (sniffing, option translation)
    result = hash_path(path, HashOptions(signals=("pdq", "md5")))
    assert result.ok and result.media == "video"
    assert [s.type for s in result.signals] == ["vpdq", "video_md5"]


@pytest.mark.parametrize(("pixels", "pix_fmt"), [("rgb", "rgb24"), ("grey", "gray")])
def test_synthetic_video_equals_pdqhash_on_decoded_frames(
    media: dict[str, Path], pixels: Literal["rgb", "grey"], pix_fmt: str
) -> None:
    """Brute-force twin end to end: pdqhash on every frame ffmpeg decodes."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(media["video"]),
         "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    decoded = np.frombuffer(raw, np.uint8).reshape(60, 240, 320, -1)
    fast = hash_video_frames(str(media["video"]), fps=0, pixels=pixels)
    assert len(fast) == 60
    drift = []
    for frame, pix in zip(fast, decoded, strict=True):
        rgb = np.ascontiguousarray(np.broadcast_to(pix, (240, 320, 3)))
        bits, quality = pdqhash.compute(rgb)
        assert abs(frame.quality - quality) <= 1
        drift.append(_ham(frame.hash, bytes.fromhex(bits_to_hex(bits))))
    assert max(drift) <= 2 and np.mean(drift) <= 0.2, drift


@pytest.mark.parametrize("pixels", ["rgb", "grey"])
@pytest.mark.parametrize(
    "source",
    [
        "color=c=gray:s=320x240:r=5:d=2",  # flat: every coefficient ties at the median
        "color=c=black:s=320x240:r=5:d=2,drawbox=x=160:w=160:h=240:c=white:t=fill",
        "nullsrc=s=320x240:r=5:d=2,geq=lum='if(mod(floor(X/16),2),235,16)':cb=128:cr=128",
        "smptebars=s=320x240:r=5:d=2",
    ],
)
def test_frames_that_tie_at_the_median_hash_exactly_as_pdqhash(
    tmp_path: Path, source: str, pixels: Literal["rgb", "grey"]
) -> None:
    """Flat, two-tone and striped frames leave DCT coefficients tied at the median, where
    float rounding would decide the kernel's bits (a flat grey frame was 111 bits from
    pdqhash); such frames are hashed by pdqhash itself: distance 0 on every frame."""
    path = tmp_path / "synthetic.mp4"
    _ffmpeg("-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    pix_fmt = "rgb24" if pixels == "rgb" else "gray"
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path),
         "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    decoded = np.frombuffer(raw, np.uint8).reshape(-1, 240, 320, 3 if pixels == "rgb" else 1)
    frames = hash_video_frames(str(path), fps=0, pixels=pixels)
    assert len(frames) == len(decoded) == 10
    for frame, pix in zip(frames, decoded, strict=True):
        bits, quality = pdqhash.compute(np.ascontiguousarray(np.broadcast_to(pix, (240, 320, 3))))
        assert frame.hash.hex() == bits_to_hex(bits)
        assert frame.quality == quality


def test_vpdq_package_gives_the_same_verdict(media: dict[str, Path]) -> None:
    vpdq = pytest.importorskip("vpdq")
    theirs = [
        VideoFrame(f.frame_number, f.quality, bytes.fromhex(f.hex), f.timestamp)
        for f in vpdq.computeHash(str(media["video"]), seconds_per_hash=0)
    ]
    ours = hash_video_frames(str(media["video"]), fps=0)
    assert [f.index for f in ours] == [f.index for f in theirs]
    assert _verdict(ours, theirs) and _verdict(theirs, ours)
    drift = [_ham(a.hash, b.hash) for a, b in zip(ours, theirs, strict=True)]
    # RGB24 pipe + float32 luma: the vpdq package's own pixels, so (nearly) its hashes.
    assert np.mean([d == 0 for d in drift]) >= 0.95 and max(drift) <= 4, drift
    assert [f.quality for f in ours] == [f.quality for f in theirs]


@pytest.mark.parametrize(
    ("key", "error", "fragment"),
    [
        ("audio", UnsupportedMediaError, "no video stream"),
        ("empty", MediaError, "cannot read video"),
        ("text", MediaError, "cannot read video"),
        ("truncated", MediaError, "corrupt or truncated video"),
        ("truncated_moov", MediaError, "cannot read video"),
    ],
)
def test_bad_input_gives_one_clear_error(
    media: dict[str, Path], key: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as info:
        hash_video(str(media[key]))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and "file:" not in message
    assert _no_ffmpeg_children()


def test_pipeline_reports_bad_video_without_raising(media: dict[str, Path]) -> None:
    for key, kind in (("audio", UnsupportedMediaError), ("truncated", MediaError)):
        result = hash_path(str(media[key]), HashOptions())
        assert not result.ok and isinstance(result.error, kind), key
    with pytest.raises(MediaError, match="cannot read video"):
        hash_video_frames(str(media["video"].with_name("missing.mp4")))


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"max_image_pixels": 320 * 240 - 1}, "pixels"),
        ({"max_video_seconds": 5.0}, "exceeds the limit"),
    ],
)
def test_limits_refuse_before_decoding(
    media: dict[str, Path], limits: dict[str, float], fragment: str
) -> None:
    strict = MediaLimits(**limits)  # type: ignore[arg-type]
    with pytest.raises(DecompressionBombError, match=fragment):
        probe_video(str(media["video"]), limits=strict)
    with pytest.raises(DecompressionBombError):
        hash_video(str(media["video"]), limits=strict)


def test_probe_reports_stream(media: dict[str, Path]) -> None:
    info = probe_video(str(media["video"]))
    assert (info.width, info.height, info.frame_rate, info.frames) == (320, 240, 10.0, 60)
    assert info.duration == pytest.approx(6.0, abs=0.1)
    assert info.codec == "h264"


@pytest.mark.parametrize("stop", ["close", "timeout"])
def test_decoder_is_killed_and_reaped(media: dict[str, Path], stop: str) -> None:
    """Stopping early (consumer closes the iterator, or the timeout fires) leaves no
    ffmpeg process behind."""
    path = str(media["long"])
    if stop == "close":
        it = iter_video_frames(path, fps=0)
        next(it)  # the first batch is hashed while ffmpeg still has frames to write
        assert not _no_ffmpeg_children()
        it.close()
    else:
        with pytest.raises(MediaError, match=r"timed out|longer than"):
            hash_video_frames(path, fps=0, timeout=1e-3)
    assert _no_ffmpeg_children()


@pytest.mark.parametrize("fps", [0.5, 2.0, 10.0, 100.0])
def test_frame_selection_follows_vpdq(media: dict[str, Path], fps: float) -> None:
    step = max(1, int((1.0 / fps) * 10))
    frames = hash_video_frames(str(media["video"]), fps=fps)
    assert [f.index for f in frames] == list(range(0, 60, step))
    assert all(math.isclose(f.seconds, f.index / 10, abs_tol=1e-6) for f in frames)


def test_negative_fps_is_refused(media: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match=">= 0"):
        hash_video_frames(str(media["video"]), fps=-1)
