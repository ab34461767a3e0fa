"""vPDQ video matching through one PDQ frame index over every bank video's frames.

Semantics follow vpdq's brute-force matcher (``match_VPDQ_hash_brute``): each video's
frames are de-duplicated by hash (first occurrence kept), then frames with quality
below :data:`QUALITY_THRESHOLD` are dropped. For a query video Q and a bank video V:

* query %    = 100 * (Q frames with any V frame within the distance) / (Q frames)
* compared % = 100 * (V frames with any Q frame within the distance) / (V frames)

Instead of comparing every pair of frames, each distinct query frame hash runs one
radius search in the frame index; its hits are grouped by video.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tipline.errors import IndexCorruptError, InputError
from tipline.index.files import read_segment
from tipline.index.pdq import PDQ_BYTES, PdqIndex, check_radius, hashes_to_words
from tipline.signals.base import VideoFrame
from tipline.signals.vpdq import DISTANCE_THRESHOLD, QUALITY_THRESHOLD, usable_hashes

__all__ = ["DISTANCE_THRESHOLD", "QUALITY_THRESHOLD", "VideoIndex", "VideoMatch"]
_KIND = "vpdq"


@dataclass(frozen=True, slots=True)
class VideoMatch:
    """One bank video matched by a query video; percentages are 0-100."""

    video_id: int
    query_percent: float
    compared_percent: float
    query_frames_matched: int
    compared_frames_matched: int


class VideoIndex:
    """Frame index over bank videos; :meth:`search` returns per-video percentages."""

    def __init__(
        self,
        frames: PdqIndex,
        frame_video: npt.NDArray[np.int64],
        video_ids: npt.NDArray[np.int64],
        video_frames: npt.NDArray[np.int64],
    ) -> None:
        """Use :meth:`build` or :meth:`open`. Frame row ``i`` belongs to ``frame_video[i]``."""
        self.frames = frames
        self.frame_video = frame_video
        self.video_ids = video_ids  # sorted distinct ids of videos with usable frames
        self.video_frames = video_frames  # usable frame count per video

    @classmethod
    def build(cls, videos: Iterable[tuple[int, Sequence[VideoFrame]]]) -> VideoIndex:
        """Index ``(video_id, frames)`` pairs (a video id should appear once)."""
        owners: list[int] = []
        hashes: list[bytes] = []
        for video_id, frames in videos:
            usable = usable_hashes(frames)
            for h in usable:
                if len(h) != PDQ_BYTES:
                    raise InputError(f"video {video_id}: frame hash of {len(h)} bytes")
            owners.extend([int(video_id)] * len(usable))
            hashes.extend(usable)
        frame_video = np.array(owners, dtype=np.int64)
        raw = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, PDQ_BYTES)
        rows = np.arange(len(owners), dtype=np.int64)
        index = PdqIndex.from_words(rows, hashes_to_words(raw))
        video_ids, counts = np.unique(frame_video, return_counts=True)
        frame_video.setflags(write=False)
        return cls(index, frame_video, video_ids.astype(np.int64), counts.astype(np.int64))

    def __len__(self) -> int:
        """Number of videos with at least one usable frame."""
        return int(self.video_ids.shape[0])

    def search(
        self, frames: Sequence[VideoFrame], distance: int = DISTANCE_THRESHOLD
    ) -> list[VideoMatch]:
        """Bank videos sharing any frame within ``distance`` bits, best query % first."""
        distance = check_radius(distance)
        query = usable_hashes(frames)
        if not query or not len(self.frame_video):
            return []
        q_hits: dict[int, int] = {}
        matched_rows: list[npt.NDArray[np.int64]] = []
        for h in query:
            rows, _ = self.frames.search(h, distance)
            if rows.shape[0] == 0:
                continue
            matched_rows.append(rows)
            for v in np.unique(self.frame_video[rows]).tolist():
                q_hits[v] = q_hits.get(v, 0) + 1
        if not q_hits:
            return []
        all_rows = np.unique(np.concatenate(matched_rows))
        c_vids, c_hits = np.unique(self.frame_video[all_rows], return_counts=True)
        totals = self.video_frames[np.searchsorted(self.video_ids, c_vids)]
        out = [
            VideoMatch(
                video_id=int(v),
                query_percent=q_hits[int(v)] * 100 / len(query),
                compared_percent=int(c) * 100 / int(t),
                query_frames_matched=q_hits[int(v)],
                compared_frames_matched=int(c),
            )
            for v, c, t in zip(c_vids.tolist(), c_hits.tolist(), totals.tolist(), strict=True)
        ]
        out.sort(key=lambda m: (-m.query_percent, -m.compared_percent, m.video_id))
        return out

    def save(self, path: str | Path) -> None:
        """Atomically write the frame index and the video tables to ``path``."""
        self.frames.save(
            Path(path),
            kind=_KIND,
            extra={
                "frame_video": self.frame_video,
                "video_ids": self.video_ids,
                "video_frames": self.video_frames,
            },
        )

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> VideoIndex:
        """Memory-map a saved video index; IndexCorruptError when it fails its checks."""
        seg = read_segment(Path(path), _KIND, verify=verify)
        frames = PdqIndex.from_segment(seg)
        try:
            fv, vids, vf = (seg.arrays[k] for k in ("frame_video", "video_ids", "video_frames"))
        except KeyError as exc:
            raise IndexCorruptError(f"missing section {exc}", path=str(path)) from None
        ok = fv.shape == (len(frames),) and vids.shape == vf.shape and int(vf.sum()) == len(frames)
        if not ok:
            raise IndexCorruptError("video sections are inconsistent", path=str(path))
        return cls(frames, fv, vids, vf)
