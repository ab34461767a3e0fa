"""Video letterbox / pillarbox normalisation: the bars found once per video
(``normalize.common_trim``) on generated frames, and real ffmpeg-decoded reference
videos that match their bar-less originals only through the ``trim`` vPDQ variant."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipline.signals.base import Signal
from tipline.signals.hashing import HashOptions, HashResult, hash_path
from tipline.signals.normalize import Box, common_trim
from tipline.signals.video import hash_video_normalized
from tipline.signals.vpdq import MATCH_PERCENT, match_percentages, parse_vpdq_text

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None and os.environ.get("CI", "").lower() != "true",
    reason="ffmpeg not installed (apt-get install ffmpeg)",
)


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    """A busy benign frame: random blocks scaled up (every row and column varies)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=0).repeat(8, axis=1)[:h, :w])


def _barred(frame: np.ndarray, top: int, side: int, colour: int) -> np.ndarray:
    h, w = frame.shape[:2]
    out = np.full((h + 2 * top, w + 2 * side, 3), colour, dtype=np.uint8)
    out[top : top + h, side : side + w] = frame
    return out


@settings(max_examples=25, deadline=None)
@given(
    top=st.integers(0, 40),
    side=st.integers(0, 40),
    colour=st.integers(0, 255),
    grey=st.booleans(),
    blank=st.integers(0, 3),
)
def test_common_trim_finds_the_bars_every_frame_shares(top, side, colour, grey, blank):
    frames = [_barred(_frame(160, 200, seed), top, side, colour) for seed in range(4)]
    # black frames (a fade) tell nothing and are skipped
    frames[:0] = [np.zeros_like(frames[0])] * blank
    if grey:
        frames = [np.ascontiguousarray(f[:, :, 1]) for f in frames]
    box = common_trim(frames)
    h, w = frames[0].shape[:2]
    if max(top / h, side / w) < 0.02:
        assert box is None
    else:
        assert box == Box(top, top + 160, side, side + 200)


def test_a_frame_reaching_an_edge_keeps_it():
    barred = [_barred(_frame(160, 200, s), 30, 0, 0) for s in range(3)]
    # one frame whose picture is dark at the top, as a bar would be: the others decide
    dark_top = barred[0].copy()
    dark_top[30:60] = 0
    assert common_trim([dark_top, *barred[1:]]) == Box(30, 190, 0, 200)
    # a frame without bars at all: nothing is cut
    assert common_trim([*barred, _frame(220, 200, 9)]) is None
    assert common_trim([np.zeros((100, 100, 3), np.uint8)]) is None


VIDEO = Path("video")


def _vpdq(signals: tuple[Signal, ...], variant: str | None) -> Signal:
    return next(s for s in signals if s.type == "vpdq" and s.variant == variant)


@pytest.fixture(scope="module")
def pattern_videos(reference_dir: Path) -> dict[str, HashResult]:
    """The videos the letterbox match test hashes, hashed once for both databases."""
    videos = reference_dir / VIDEO
    return {
        "original": hash_path(str(videos / "pattern-hd-no-bar.mp4"), HashOptions(normalize=True)),
        "barred": hash_path(str(videos / "pattern-sd-grey-bar.mp4"), HashOptions(normalize=True)),
        "plain": hash_path(str(videos / "pattern-sd-grey-bar.mp4"), HashOptions()),
        "other": hash_path(str(videos / "chair-orig-22-sd-bar.mp4"), HashOptions(normalize=True)),
    }


@needs_ffmpeg
def test_letterboxed_copy_matches_only_through_its_trim_variant(
    db_url: str, tmp_path: Path, pattern_videos: dict[str, HashResult]
) -> None:
    from tipline.services import banks as svc
    from tipline.services.database import open_database
    from tipline.services.matching import Matcher

    original = pattern_videos["original"]
    assert original.ok, original.error
    # no bars: no variant
    assert [s.variant for s in original.signals if s.type == "vpdq"] == [None]
    db = open_database(db_url)
    svc.create_bank(db, "videos")
    svc.add_entry(db, "videos", [f"vpdq:{_vpdq(original.signals, None).value}"], entry_id="p")
    try:
        with Matcher(db, tmp_path / "ix", poll_interval=0) as m:
            barred = pattern_videos["barred"]
            assert barred.ok, barred.error
            found = [x for x in m.match_signals(barred.signals) if x.signal_type == "vpdq"]
            assert [(x.entry_id, x.variant) for x in found] == [("p", "trim")]
            assert found[0].query_match_percent == found[0].compared_match_percent == 100.0
            plain = pattern_videos["plain"]
            assert [s.variant for s in plain.signals if s.type == "vpdq"] == [None]
            assert not [x for x in m.match_signals(plain.signals) if x.signal_type == "vpdq"]
            # a different subject, letterboxed the same way, still scores nothing
            other = pattern_videos["other"]
            assert _vpdq(other.signals, "trim").frames
            assert m.match_signals(other.signals) == []
            # the bank's switch
            svc.update_bank(db, "videos", normalize=False)
            assert not [x for x in m.match_signals(barred.signals) if x.signal_type == "vpdq"]
    finally:
        db.close()


@needs_ffmpeg
def test_every_frame_of_the_letterboxed_chair_matches_the_hd_original(reference_dir: Path):
    """Against Meta's every-frame hashes of the HD original (the video itself is not
    shipped): 0% plainly, >= 80% of frames both ways once the bars are cut."""
    videos = reference_dir / VIDEO
    samples = videos / "vpdq-sample-hashes"
    hd = parse_vpdq_text((samples / "chair-orig-22-hd-no-bar.txt").read_text())
    pattern = parse_vpdq_text((samples / "pattern-hd-no-bar.txt").read_text())
    hashed = hash_video_normalized(str(videos / "chair-orig-22-sd-bar.mp4"), 0)
    assert hashed.trim_box is not None and hashed.trimmed is not None
    h = hashed.trim_box
    assert (h.left, h.right - h.left) == (32, 416)  # 32 px pillarbox bars of 480
    assert len(hashed.trimmed) == len(hashed.frames) == len(hd)
    assert match_percentages(hashed.frames, hd) == (0.0, 0.0)
    q, c = match_percentages(hashed.trimmed, hd)
    assert q >= MATCH_PERCENT and c >= MATCH_PERCENT
    assert match_percentages(hashed.trimmed, pattern) == (0.0, 0.0)
