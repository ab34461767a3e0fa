"""The parallel half of the replay: searching one epoch's files against the index.

A :class:`SearchState` is what one search worker (a Ray actor, or the driver itself)
holds: the first copy of every content seen in earlier epochs (photos by PDQ, videos by
their usable vPDQ frames) -- a superset of what
:mod:`tipline.services.clearinghouse.dedup` keeps in the files bank, which leaves out
files represented by a near copy. Which of them are indexed is decided in order by
:mod:`.replay`, which drops matches to files that are not, so epochs are searched
without waiting for the earlier ones to be resolved. For an epoch it builds one exact
multi-index (:class:`tipline.index.pdq.PdqIndex`) over those plus the epoch's own
first copies, and searches its share of the epoch's contents: photos within the PDQ
distance, videos frame by frame within vPDQ's frame distance, turned into vPDQ's
percent distance exactly as the match index does. Every worker holds the whole index
and gets a slice of the queries, so every pair within the distance meets in one
search (recall 1.0 by construction); which of those matches become links is decided
afterwards, in order, by :mod:`.replay`.

Data crosses process boundaries as :func:`pack` blobs: raw little-endian arrays behind
a JSON header (no pickle).
"""

from __future__ import annotations

import json
import math
import resource
import struct
import time

import numpy as np
import numpy.typing as npt

from tipline.errors import InputError
from tipline.index.pdq import PdqIndex
from tipline.signals.vpdq import DISTANCE_THRESHOLD as FRAME_DISTANCE

Arrays = dict[str, np.ndarray]
I64 = npt.NDArray[np.int64]
Words = npt.NDArray[np.uint64]

#: signal codes of a match (also their rank, as dedup's ``_SIGNAL_RANK``)
SHA256, PDQ, VPDQ = 0, 3, 4
_DTYPES = {"int64", "uint64", "int32", "int16", "int8", "uint8", "bool"}


def pack(arrays: Arrays) -> bytes:
    """Arrays as one blob: a length-prefixed JSON header (names, dtypes, shapes), then
    each array's bytes."""
    header = []
    body = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        header.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        body.append(a.tobytes())
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(body)


def unpack(blob: bytes) -> Arrays:
    """The arrays of a :func:`pack` blob (read-only views of it)."""
    (size,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8 : 8 + size])
    offset = 8 + size
    out: Arrays = {}
    for item in header:
        dtype = np.dtype(item["dtype"])
        if dtype.name not in _DTYPES:
            raise InputError(f"replay blob: unexpected dtype {dtype}")
        shape = tuple(int(x) for x in item["shape"])
        count = math.prod(shape)
        out[str(item["name"])] = np.frombuffer(blob, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    return out


def _distinct_counts(key: I64, value: I64) -> tuple[I64, I64]:
    """Per distinct ``key`` (sorted), how many distinct ``value`` it comes with."""
    order = np.lexsort((value, key))
    k, v = key[order], value[order]
    fresh = np.r_[True, (k[1:] != k[:-1]) | (v[1:] != v[:-1])]
    keys, counts = np.unique(k[fresh], return_counts=True)
    return keys, counts.astype(np.int64)


class SearchState:
    """The indexed files so far, and the search of an epoch against them."""

    def __init__(self, pdq_distance: int, vpdq_distance: int) -> None:
        """Distances as :class:`.dedup.DedupSettings` (bits, percent)."""
        self.pdq_distance = pdq_distance
        self.vpdq_distance = vpdq_distance
        self.photo_file: list[I64] = []
        self.photo_words: list[Words] = []
        self.video_file: list[I64] = []
        self.video_frames: list[I64] = []
        self.frame_words: list[Words] = []
        self.cpu_seconds = 0.0

    def search(self, epoch: Arrays, queries: Arrays) -> Arrays:
        """Matches of ``queries`` (contents) among the indexed files and ``epoch``'s
        first copies: ``content``, ``file``, ``signal`` (PDQ or VPDQ), ``distance``."""
        started = time.process_time()
        out_c: list[I64] = []
        out_f: list[I64] = []
        out_s: list[I64] = []
        out_d: list[I64] = []
        photo_file = np.concatenate([*self.photo_file, epoch["t_photo_file"]])
        photo_words = np.concatenate([*self.photo_words, epoch["t_photo_words"]])
        if photo_file.shape[0] and queries["q_photo_content"].shape[0]:
            index = PdqIndex.from_words(np.arange(photo_file.shape[0]), photo_words)
            words = queries["q_photo_words"]
            for i, content in enumerate(queries["q_photo_content"].tolist()):
                rows, dist = index.search_rows(words[i : i + 1], self.pdq_distance)
                if rows.shape[0]:
                    out_c.append(np.full(rows.shape[0], content, dtype=np.int64))
                    out_f.append(photo_file[index.ids[rows]])
                    out_s.append(np.full(rows.shape[0], PDQ, dtype=np.int64))
                    out_d.append(dist.astype(np.int64))
        self._search_videos(epoch, queries, (out_c, out_f, out_s, out_d))
        self._keep(epoch)
        self.cpu_seconds += time.process_time() - started
        if not out_c:
            return {k: np.zeros(0, np.int64) for k in ("content", "file", "signal", "distance")}
        return {
            "content": np.concatenate(out_c),
            "file": np.concatenate(out_f),
            "signal": np.concatenate(out_s),
            "distance": np.concatenate(out_d),
        }

    def _search_videos(
        self, epoch: Arrays, queries: Arrays, out: tuple[list[I64], list[I64], list[I64], list[I64]]
    ) -> None:
        video_file = np.concatenate([*self.video_file, epoch["t_video_file"]])
        if not video_file.shape[0] or not queries["q_video_content"].shape[0]:
            return
        counts = np.concatenate([*self.video_frames, epoch["t_video_frames"]])
        words = np.concatenate([*self.frame_words, epoch["t_frame_words"]])
        owner = np.repeat(np.arange(video_file.shape[0]), counts)
        index = PdqIndex.from_words(np.arange(words.shape[0], dtype=np.int64), words)
        q_counts = queries["q_video_frames"]
        q_words = queries["q_frame_words"]
        q_video = np.repeat(np.arange(q_counts.shape[0], dtype=np.int64), q_counts)
        hit_rows: list[I64] = []
        hit_frame: list[I64] = []
        for k in range(q_words.shape[0]):
            rows, _ = index.search_rows(q_words[k : k + 1], FRAME_DISTANCE)
            if rows.shape[0]:
                hit_rows.append(index.ids[rows])
                hit_frame.append(np.full(rows.shape[0], k, dtype=np.int64))
        if not hit_rows:
            return
        rows = np.concatenate(hit_rows)
        frame = np.concatenate(hit_frame)
        # (query video, target video) pairs: query frames and target frames that match
        pair = q_video[frame] * np.int64(video_file.shape[0]) + owner[rows]
        q_pairs, q_hits = _distinct_counts(pair, frame)
        _, c_hits = _distinct_counts(pair, rows)  # the same pairs, in the same order
        qv, tv = np.divmod(q_pairs, np.int64(video_file.shape[0]))
        percent = np.minimum(q_hits * 100 / q_counts[qv], c_hits * 100 / counts[tv])
        distance = 100 - np.floor(percent).astype(np.int64)
        keep = distance <= self.vpdq_distance
        out[0].append(queries["q_video_content"][qv[keep]])
        out[1].append(video_file[tv[keep]])
        out[2].append(np.full(int(keep.sum()), VPDQ, dtype=np.int64))
        out[3].append(distance[keep])

    def _keep(self, epoch: Arrays) -> None:
        """Add the epoch's first copies to the index for the later epochs."""
        self.photo_file.append(epoch["t_photo_file"].copy())
        self.photo_words.append(epoch["t_photo_words"].copy())
        self.video_file.append(epoch["t_video_file"].copy())
        self.video_frames.append(epoch["t_video_frames"].copy())
        self.frame_words.append(epoch["t_frame_words"].copy())
        self._compact()

    def _compact(self) -> None:
        for name in ("photo_file", "photo_words", "video_file", "video_frames", "frame_words"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [np.concatenate(parts)])

    def stats(self) -> dict[str, float]:
        """CPU seconds spent searching and the peak resident memory (MiB) of this
        process."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"cpu_seconds": self.cpu_seconds, "peak_mib": peak}
