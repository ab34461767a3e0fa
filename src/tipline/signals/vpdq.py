"""vPDQ: per-frame PDQ hashes of a video, the sample-hash text format, brute-force matching.

Text format (one line per hashed frame, as in Meta's ``vpdq-sample-hashes``)::

    frame,quality,hex,seconds
    0,100,e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c,0.000

``frame`` is the 0-based decoded-frame number, ``quality`` the PDQ quality (0-100),
``hex`` the 64-character PDQ hash and ``seconds`` the frame time (``frame / fps``) with
three decimals. The canonical :attr:`Signal.value` of a ``vpdq`` signal is this text with
lines joined by ``"\\n"`` (no trailing newline).

Matching follows python-threatexchange's ``match_VPDQ_hash_brute`` (the semantics the
frame index in :mod:`tipline.index.video` implements): each side is de-duplicated by hash
(first occurrence kept), frames with quality under the quality threshold are dropped,
then

* query %    = 100 * (query frames within ``distance_threshold`` bits of any target frame)
  / (usable query frames)
* compared % = 100 * (target frames within ``distance_threshold`` bits of any query frame)
  / (usable target frames)

(Meta's C++ ``matchTwoHashBrute`` differs slightly: no de-duplication and a strict ``<``.)

As a :class:`~tipline.signals.base.SignalType`, vPDQ needs one integer distance. It is
``100 - floor(min(query %, compared %))`` with the vpdq defaults (31 bits, quality 50):
0 for videos whose usable frames all match each other, 100 when nothing matches (or a
side has no usable frame). The default threshold 20 therefore means "at least 80% of
the frames match on both sides", vpdq's usual video-level verdict.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Final

import numpy as np
import numpy.typing as npt

from tipline.errors import HashFormatError, ImportFormatError
from tipline.signals.base import IndexKind, MediaKind, Signal, VideoFrame
from tipline.signals.hexbits import parse_hex

if TYPE_CHECKING:
    from tipline.signals.media import Video

#: Frame match distance in bits (inclusive), vpdq's default.
DISTANCE_THRESHOLD: Final = 31
#: Frames under this PDQ quality (0-100) are ignored when matching, vpdq's default.
QUALITY_THRESHOLD: Final = 50
#: Video-level verdict: both percentages at least this (vpdq's usual 80%).
MATCH_PERCENT: Final = 80.0
#: Default :meth:`VpdqSignalType.distance` threshold (100 - MATCH_PERCENT).
VPDQ_THRESHOLD: Final = 20
PDQ_BYTES: Final = 32
#: Variant name of a video's frames hashed without its letterbox / pillarbox bars (one
#: of :data:`tipline.signals.normalize.VARIANTS`).
TRIM_VARIANT: Final = "trim"


def format_vpdq_text(frames: Iterable[VideoFrame]) -> str:
    """The sample-hash text of ``frames``: ``frame,quality,hex,seconds`` lines joined by
    ``"\\n"`` (seconds with 3 decimals, no trailing newline)."""
    return "\n".join(f"{f.index},{f.quality},{f.hash.hex()},{f.seconds:.3f}" for f in frames)


def format_pytx_json(frames: Iterable[VideoFrame]) -> str:
    """python-threatexchange's form of ``frames`` (what its ``VPDQSignal`` reads and
    writes, and HMA stores): a JSON list of ``"hex,quality,seconds"`` strings, seconds
    with 3 significant digits as pytx prints them."""
    return json.dumps([f"{f.hash.hex()},{f.quality},{f.seconds:.3}" for f in frames])


def to_pytx_json(value: str) -> str:
    """A vPDQ value (either form) in python-threatexchange's JSON form."""
    return format_pytx_json(parse_vpdq_text(value))


def _bad(message: str, line: int, path: str | None) -> ImportFormatError:
    return ImportFormatError(message, path=path, line=line)


def parse_vpdq_text(text: str, *, path: str | None = None) -> list[VideoFrame]:
    """Frames of a sample-hash text (``frame,quality,hex,seconds`` per line).

    Blank lines are skipped; whitespace around fields is allowed; hex may be upper
    case. Also accepts python-threatexchange's JSON form (a list of
    ``"hex,quality,seconds"`` strings; frame numbers are then the list positions).
    Raises :class:`ImportFormatError` naming the 1-based line (``path`` labels it).
    """
    stripped = text.strip()
    if stripped.startswith("["):
        return _parse_json_list(stripped, path)
    frames: list[VideoFrame] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 4:
            raise _bad(
                f"expected 4 comma-separated fields (frame,quality,hex,seconds), got {len(fields)}",
                lineno,
                path,
            )
        index_s, quality_s, hex_s, seconds_s = fields
        frames.append(_frame(index_s, quality_s, hex_s, seconds_s, lineno, path))
    if not frames:
        raise _bad("no frames", 1, path)
    return frames


def _parse_json_list(text: str, path: str | None) -> list[VideoFrame]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"invalid JSON: {exc.msg}", exc.lineno, path) from None
    if not isinstance(items, list) or not items:
        raise _bad("expected a non-empty JSON list of 'hex,quality,seconds' strings", 1, path)
    frames: list[VideoFrame] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or item.count(",") != 2:
            raise _bad(f"item {i}: expected 'hex,quality,seconds'", 1, path)
        hex_s, quality_s, seconds_s = (p.strip() for p in item.split(","))
        frames.append(_frame(str(i), quality_s, hex_s, seconds_s, 1, path))
    return frames


def _frame(
    index_s: str, quality_s: str, hex_s: str, seconds_s: str, lineno: int, path: str | None
) -> VideoFrame:
    if not index_s.isdigit():
        raise _bad(f"frame number must be a non-negative integer, got {index_s!r}", lineno, path)
    if not quality_s.isdigit() or not 0 <= int(quality_s) <= 100:
        raise _bad(f"quality must be an integer 0-100, got {quality_s!r}", lineno, path)
    try:
        value = parse_hex(hex_s, PDQ_BYTES, "pdq")
    except HashFormatError as exc:
        raise _bad(exc.message, lineno, path) from None
    try:
        seconds = float(seconds_s)
    except ValueError:
        raise _bad(f"seconds must be a number, got {seconds_s!r}", lineno, path) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad(f"seconds must be finite and >= 0, got {seconds_s!r}", lineno, path)
    return VideoFrame(
        index=int(index_s), quality=int(quality_s), hash=bytes.fromhex(value), seconds=seconds
    )


def usable_hashes(
    frames: Sequence[VideoFrame], quality_threshold: int = QUALITY_THRESHOLD
) -> list[bytes]:
    """Distinct frame hashes (first occurrence wins) of frames with quality >= threshold."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    for f in frames:
        if f.hash in seen:
            continue
        seen.add(f.hash)
        if f.quality >= quality_threshold:
            out.append(f.hash)
    return out


def _words(hashes: Sequence[bytes]) -> npt.NDArray[np.uint64]:
    buf = np.frombuffer(b"".join(hashes), dtype=">u8").astype(np.uint64)
    return buf.reshape(len(hashes), PDQ_BYTES // 8)


def match_percentages(
    query_frames: Sequence[VideoFrame],
    target_frames: Sequence[VideoFrame],
    distance_threshold: int = DISTANCE_THRESHOLD,
    quality_threshold: int = QUALITY_THRESHOLD,
) -> tuple[float, float]:
    """Brute-force vpdq match: ``(query %, compared %)``, each 0-100.

    Compares every usable query frame with every usable target frame (Hamming distance
    <= ``distance_threshold`` bits). Both are 0.0 when either side has no usable frame.
    """
    query = usable_hashes(query_frames, quality_threshold)
    target = usable_hashes(target_frames, quality_threshold)
    if not query or not target:
        return 0.0, 0.0
    q, t = _words(query), _words(target)
    # (n_query, n_target) Hamming distances: XOR the four 64-bit words, count bits.
    dist = np.bitwise_count(q[:, None, :] ^ t[None, :, :]).sum(axis=2)
    close = dist <= distance_threshold
    query_matched = int(close.any(axis=1).sum())
    target_matched = int(close.any(axis=0).sum())
    return query_matched * 100.0 / len(query), target_matched * 100.0 / len(target)


def is_video_match(
    query_frames: Sequence[VideoFrame],
    target_frames: Sequence[VideoFrame],
    percent: float = MATCH_PERCENT,
) -> bool:
    """vpdq's video-level verdict: both percentages >= ``percent`` (default 80)."""
    q, c = match_percentages(query_frames, target_frames)
    return q >= percent and c >= percent


def vpdq_distance(a: Sequence[VideoFrame], b: Sequence[VideoFrame]) -> int:
    """``100 - floor(min(query %, compared %))`` with the vpdq default thresholds."""
    q, c = match_percentages(a, b)
    return 100 - math.floor(min(q, c))


def vpdq_signal(frames: Sequence[VideoFrame]) -> Signal:
    """The ``vpdq`` signal of hashed frames.

    ``quality`` is the median frame quality; ``low_quality`` is set when no frame
    reaches vpdq's matching floor (such a video can never match).
    """
    qualities = sorted(f.quality for f in frames)
    median = qualities[(len(qualities) - 1) // 2] if qualities else 0
    return Signal(
        type="vpdq",
        value=format_vpdq_text(frames),
        quality=median,
        low_quality=not any(q >= QUALITY_THRESHOLD for q in qualities),
        frames=tuple(frames),
    )


class VpdqSignalType:
    """The ``vpdq`` signal type; values are sample-hash texts, distance is in percent.

    ``distance(a, b) = 100 - floor(min(query %, compared %))`` (see the module doc), so
    the default threshold 20 means at least 80% of the usable frames match on both
    sides.
    """

    name: ClassVar[str] = "vpdq"
    media: ClassVar[MediaKind] = MediaKind.VIDEO
    default_threshold: ClassVar[int] = VPDQ_THRESHOLD
    index: ClassVar[IndexKind] = IndexKind.VIDEO
    #: asked for on a photo, ``vpdq`` means PDQ
    counterpart: ClassVar[str] = "pdq"

    def hash_video(self, video: Video) -> tuple[Signal, ...]:
        """The vPDQ signal of the video's hashed frames; with ``video.normalize`` and
        bars found, also the variant ``trim``: the frames without the bars."""
        signal = vpdq_signal(video.frames())
        trimmed = video.trimmed_frames()
        if trimmed is None:
            return (signal,)
        return (signal, dataclasses.replace(vpdq_signal(trimmed), variant=TRIM_VARIANT))

    def frames(self, value: str) -> list[VideoFrame]:
        """The frames of a canonical value (for the frame index)."""
        return parse_vpdq_text(value)

    def parse(self, text: str) -> str:
        """Canonical sample-hash text; HashFormatError (with the line) otherwise."""
        try:
            return format_vpdq_text(parse_vpdq_text(text))
        except ImportFormatError as exc:
            raise HashFormatError(f"vpdq {exc}") from None

    def distance(self, a: str, b: str) -> int:
        """0-100: 100 minus the smaller of the two match percentages, rounded up."""
        return vpdq_distance(parse_vpdq_text(a), parse_vpdq_text(b))

    def match(self, query: str, candidates: Sequence[str], threshold: int) -> list[tuple[int, int]]:
        """Brute force: every ``(index, distance)`` with distance <= ``threshold``."""
        q = parse_vpdq_text(query)
        out: list[tuple[int, int]] = []
        for i, candidate in enumerate(candidates):
            d = vpdq_distance(q, parse_vpdq_text(candidate))
            if d <= threshold:
                out.append((i, d))
        return out
