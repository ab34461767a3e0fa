"""tipline's vPDQ matching behind python-threatexchange's ``SignalTypeIndex``.

:class:`TiplineVPDQIndex` answers like pytx's ``VPDQIndex`` (its vpdq extension):
frames below quality 50 dropped, then the rest de-duplicated by hash, a frame matches
within 31 bits, and an entry matches when at least 80% of the query's frames match
one of its frames (pytx's ``VPDQ_QUERY_MATCH_THRESHOLD_PERCENT``; its index-side
threshold is 0%), with both percentages as pytx's ``VPDQSimilarityInfo``. Searches go
through :class:`tipline.index.video.VideoIndex` (one exact PDQ index over every
frame), rebuilt on the first query after entries were added.

``serialize`` writes a tipline segment file (checksummed sections: the entries'
vPDQ in tipline's text form, the metadata as JSON, see :mod:`tipline.txext.codec`),
never pickle.

:class:`TiplineVpdqSignal` (``tipline_vpdq``) is pytx's vPDQ hashed by tipline (its
ffmpeg decoder, one frame per second as pytx) and indexed by this index.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import numpy as np
from threatexchange.content_type.content_base import ContentType
from threatexchange.content_type.video import VideoContent
from threatexchange.signal_type import signal_base
from threatexchange.signal_type.index import IndexMatchUntyped, SignalTypeIndex

from tipline.errors import IndexCorruptError, TiplineError
from tipline.index.files import write_segment
from tipline.index.video import VideoIndex
from tipline.signals.base import VideoFrame
from tipline.signals.vpdq import (
    DISTANCE_THRESHOLD,
    QUALITY_THRESHOLD,
    format_pytx_json,
    format_vpdq_text,
    parse_vpdq_text,
)
from tipline.txext import codec, streams

T = t.TypeVar("T")

#: pytx's VPDQ_QUERY_MATCH_THRESHOLD_PERCENT and VPDQ_INDEX_MATCH_THRESHOLD_PERCENT.
QUERY_MATCH_PERCENT = 80.0
INDEX_MATCH_PERCENT = 0.0
_KIND = "pytx-vpdq"


def _similarity(query_percent: float, compared_percent: float) -> t.Any:
    from threatexchange.extensions.vpdq.vpdq_index import VPDQSimilarityInfo

    return VPDQSimilarityInfo(query_percent, compared_percent)


def _good(frames: list[VideoFrame]) -> list[VideoFrame]:
    """pytx's ``VPDQIndex`` order: drop low-quality frames first, then de-duplicate
    (vpdq's brute-force matcher, and so :func:`usable_hashes`, de-duplicates first: a
    hash seen first at low quality would then be lost)."""
    return [f for f in frames if f.quality >= QUALITY_THRESHOLD]


def _frames(signal_str: str) -> list[VideoFrame]:
    try:
        return parse_vpdq_text(signal_str)
    except TiplineError as exc:
        raise ValueError(f"not a vPDQ hash: {exc}") from None


class TiplineVPDQIndex(SignalTypeIndex[T]):
    """A pytx ``SignalTypeIndex`` over vPDQ hashes, searched by tipline's video index."""

    def __init__(self, entries: t.Iterable[tuple[str, T]] = ()) -> None:
        super().__init__()
        self._frames: list[list[VideoFrame]] = []
        self._entries: list[T] = []
        self._index: VideoIndex | None = None
        self.add_all(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, signal_str: str, entry: T) -> None:
        """Index one video (ValueError, as pytx, when no frame is usable)."""
        self.add_all(((signal_str, entry),))

    def add_all(self, entries: t.Iterable[tuple[str, T]]) -> None:
        """Index more videos (ValueError for a bad hash or one without usable frames)."""
        for signal_str, entry in entries:
            frames = _frames(signal_str)
            if not _good(frames):
                raise ValueError("Empty video after deduping/filtering should not be indexed")
            self._frames.append(frames)
            self._entries.append(entry)
            self._index = None

    def query(self, hash: str) -> t.Sequence[IndexMatchUntyped[t.Any, T]]:
        """Entries matching the query video, best query percentage first."""
        frames = _good(_frames(hash))
        if not self._entries or not frames:
            return []
        if self._index is None:
            self._index = VideoIndex.build((i, _good(f)) for i, f in enumerate(self._frames))
        out = []
        for m in self._index.search(frames, DISTANCE_THRESHOLD):
            if m.query_percent >= QUERY_MATCH_PERCENT and m.compared_percent >= INDEX_MATCH_PERCENT:
                out.append(
                    IndexMatchUntyped(
                        _similarity(m.query_percent, m.compared_percent),
                        self._entries[m.video_id],
                    )
                )
        return out

    def serialize(self, fout: t.BinaryIO) -> None:
        """Write the index to ``fout`` as one tipline segment file."""
        section, meta = codec.dump_entries(self._entries)
        videos = "\x00".join(format_vpdq_text(f) for f in self._frames).encode("utf-8")
        arrays = {
            "videos_text": np.frombuffer(videos, np.uint8),
            section: np.frombuffer(meta, np.uint8),
        }
        streams.write_to_stream(
            lambda path: write_segment(path, _KIND, {"count": len(self._entries)}, arrays), fout
        )

    @classmethod
    def deserialize(cls, fin: t.BinaryIO) -> TiplineVPDQIndex[T]:
        """Read an index written by :meth:`serialize` (IndexCorruptError when damaged)."""
        try:
            with streams.segment_from_stream(fin, _KIND) as seg:
                entries = codec.load_entries(seg.arrays)
                raw = bytes(np.asarray(seg.arrays["videos_text"], np.uint8))
        except KeyError:
            raise IndexCorruptError("index without its videos") from None
        texts = raw.decode("utf-8", errors="strict").split("\x00") if raw else []
        if len(texts) != len(entries):
            raise IndexCorruptError("index entry metadata does not match its videos")
        index: TiplineVPDQIndex[T] = cls()
        try:
            index._frames = [parse_vpdq_text(x) for x in texts]
        except TiplineError as exc:
            raise IndexCorruptError(f"index video damaged: {exc}") from None
        index._entries = entries
        return index


class TiplineVpdqSignal(signal_base.SimpleSignalType, signal_base.FileHasher):
    """vPDQ (pytx's JSON form: ``["hex,quality,seconds", ...]``) hashed by tipline and
    indexed by :class:`TiplineVPDQIndex`, named ``tipline_vpdq`` beside pytx's own."""

    @classmethod
    def get_name(cls) -> str:
        """``tipline_vpdq``."""
        return "tipline_vpdq"

    @classmethod
    def get_content_types(cls) -> list[type[ContentType]]:
        """Videos."""
        return [VideoContent]

    @classmethod
    def get_index_cls(cls) -> t.Any:
        """tipline's index."""
        return TiplineVPDQIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        """The hash as given (ValueError when it is not vPDQ in either form)."""
        _frames(signal_str)
        return signal_str

    @classmethod
    def hash_from_file(cls, file: Path) -> str:
        """tipline's vPDQ of the video at ``file``, in pytx's JSON form."""
        from tipline.signals.hashing import HashOptions, hash_path

        result = hash_path(str(file), HashOptions(signals=("vpdq",)))
        if result.error is not None:
            raise ValueError(f"{file}: {result.error}")
        for signal in result.signals:
            if signal.type == "vpdq":
                return format_pytx_json(signal.frames or parse_vpdq_text(signal.value))
        raise ValueError(f"{file}: not a video")

    @classmethod
    def compare_hash(cls, hash1: str, hash2: str) -> signal_base.SignalComparisonResult:
        """Whether ``hash1`` (the query) matches ``hash2`` as the index decides."""
        index = TiplineVPDQIndex([(hash2, 0)])
        found = index.query(hash1)
        if found:
            return signal_base.SignalComparisonResult(True, found[0].similarity_info)
        return signal_base.SignalComparisonResult(False, _similarity(0.0, 0.0))

    @staticmethod
    def get_examples() -> list[str]:
        """One video of two frames."""
        return [
            format_pytx_json(
                [
                    VideoFrame(0, 100, bytes.fromhex("f8f8f0cee0f4a84f06370a22038f63f0" * 2), 0.0),
                    VideoFrame(1, 100, bytes.fromhex("1f811b9d267fbc6693c0c7f30e041f9d" * 2), 1.0),
                ]
            )
        ]
