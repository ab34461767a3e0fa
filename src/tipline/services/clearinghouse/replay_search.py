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
#: the main index is rebuilt when the hashes added since reach this share of it
DELTA_SHARE = 0.25
MIN_MAIN = 65536
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


class _Grow:
    """An append-only array with doubling capacity (appends cost O(1) amortised)."""

    def __init__(self, dtype: type, width: int = 0) -> None:
        self.width = width
        shape = (1024, width) if width else (1024,)
        self.buf: np.ndarray = np.zeros(shape, dtype=dtype)
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        need = self.n + rows.shape[0]
        if need > self.buf.shape[0]:
            bigger = np.zeros(
                (max(need, 2 * self.buf.shape[0]), *self.buf.shape[1:]), self.buf.dtype
            )
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n : need] = rows
        self.n = need

    def view(self) -> np.ndarray:
        return self.buf[: self.n]


class GrowingIndex:
    """Exact radius search over a growing set of hashes, numbered 0.. in order added.

    A main :class:`PdqIndex` is rebuilt over every hash when the hashes added since
    its last build reach :data:`DELTA_SHARE` of it; those newer hashes sit in a small
    delta index rebuilt at each addition. Building costs about ``1 / DELTA_SHARE + 1``
    times each hash in all; a search probes two indexes.
    """

    def __init__(self, min_main: int = MIN_MAIN) -> None:
        """Empty; the first main index is built at ``DELTA_SHARE * min_main`` hashes."""
        self.min_main = min_main
        self.words = _Grow(np.uint64, 4)
        self.n_main = 0
        self.main: PdqIndex | None = None
        self.delta: PdqIndex | None = None
        self.build_seconds = 0.0

    def __len__(self) -> int:
        return self.words.n

    def add(self, words: Words) -> None:
        """Add hashes ((n, 4) words) and rebuild what needs it."""
        if not words.shape[0]:
            return
        started = time.process_time()
        self.words.append(words)
        n, all_words = self.words.n, self.words.view()
        if n - self.n_main > DELTA_SHARE * max(self.n_main, self.min_main):
            self.main = PdqIndex.from_words(np.arange(n, dtype=np.int64), all_words.copy())
            self.n_main, self.delta = n, None
        else:
            ids = np.arange(self.n_main, n, dtype=np.int64)
            self.delta = PdqIndex.from_words(ids, all_words[self.n_main :].copy())
        self.build_seconds += time.process_time() - started

    def search(self, query: Words, radius: int) -> tuple[I64, I64]:
        """(numbers, distances) of the hashes within ``radius`` bits of one query."""
        found = [
            (index.ids[rows], dist)
            for index in (self.main, self.delta)
            if index is not None
            for rows, dist in (index.search_rows(query, radius),)
        ]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(found) == 1:
            return found[0][0], found[0][1].astype(np.int64)
        return (
            np.concatenate([f[0] for f in found]),
            np.concatenate([f[1] for f in found]).astype(np.int64),
        )


class SearchState:
    """The first copies so far, and the search of an epoch against them."""

    def __init__(self, pdq_distance: int, vpdq_distance: int) -> None:
        """Distances as :class:`.dedup.DedupSettings` (bits, percent)."""
        self.pdq_distance = pdq_distance
        self.vpdq_distance = vpdq_distance
        self.photos = GrowingIndex()
        self.photo_file = _Grow(np.int64)  # photo number -> file
        self.frames = GrowingIndex()
        self.frame_owner = _Grow(np.int64)  # frame number -> video number
        self.video_file = _Grow(np.int64)  # video number -> file
        self.video_frames = _Grow(np.int64)  # video number -> usable frames
        self.cpu_seconds = 0.0

    def _add(self, epoch: Arrays) -> None:
        self.photos.add(epoch["t_photo_words"])
        self.photo_file.append(epoch["t_photo_file"])
        counts = epoch["t_video_frames"]
        first = self.video_file.n
        self.frame_owner.append(np.repeat(np.arange(first, first + counts.shape[0]), counts))
        self.video_file.append(epoch["t_video_file"])
        self.video_frames.append(counts)
        self.frames.add(epoch["t_frame_words"])

    def search(self, epoch: Arrays, queries: Arrays) -> Arrays:
        """Add ``epoch``'s first copies, then the matches of ``queries`` (contents)
        among all first copies so far: ``content``, ``file``, ``signal`` (PDQ or
        VPDQ), ``distance``."""
        started = time.process_time()
        self._add(epoch)
        out_c: list[I64] = []
        out_f: list[I64] = []
        out_s: list[I64] = []
        out_d: list[I64] = []
        photo_file = self.photo_file.view()
        words = queries["q_photo_words"]
        for i, content in enumerate(queries["q_photo_content"].tolist()):
            rows, dist = self.photos.search(words[i : i + 1], self.pdq_distance)
            if rows.shape[0]:
                out_c.append(np.full(rows.shape[0], content, dtype=np.int64))
                out_f.append(photo_file[rows])
                out_s.append(np.full(rows.shape[0], PDQ, dtype=np.int64))
                out_d.append(dist)
        self._search_videos(queries, (out_c, out_f, out_s, out_d))
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
        self, queries: Arrays, out: tuple[list[I64], list[I64], list[I64], list[I64]]
    ) -> None:
        videos = self.video_file.n
        q_counts = queries["q_video_frames"]
        q_words = queries["q_frame_words"]
        q_video = np.repeat(np.arange(q_counts.shape[0], dtype=np.int64), q_counts)
        hit_rows: list[I64] = []
        hit_frame: list[I64] = []
        for k in range(q_words.shape[0]):
            rows, _ = self.frames.search(q_words[k : k + 1], FRAME_DISTANCE)
            if rows.shape[0]:
                hit_rows.append(rows)
                hit_frame.append(np.full(rows.shape[0], k, dtype=np.int64))
        if not hit_rows:
            return
        rows = np.concatenate(hit_rows)
        frame = np.concatenate(hit_frame)
        owner, counts = self.frame_owner.view(), self.video_frames.view()
        # (query video, target video) pairs: query frames and target frames that match
        pair = q_video[frame] * np.int64(videos) + owner[rows]
        q_pairs, q_hits = _distinct_counts(pair, frame)
        _, c_hits = _distinct_counts(pair, rows)  # the same pairs, in the same order
        qv, tv = np.divmod(q_pairs, np.int64(videos))
        percent = np.minimum(q_hits * 100 / q_counts[qv], c_hits * 100 / counts[tv])
        distance = 100 - np.floor(percent).astype(np.int64)
        keep = distance <= self.vpdq_distance
        out[0].append(queries["q_video_content"][qv[keep]])
        out[1].append(self.video_file.view()[tv[keep]])
        out[2].append(np.full(int(keep.sum()), VPDQ, dtype=np.int64))
        out[3].append(distance[keep])

    def stats(self) -> dict[str, float]:
        """CPU seconds spent searching (index builds included), of which building, and
        the peak resident memory (MiB) of this process."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "cpu_seconds": self.cpu_seconds,
            "build_seconds": self.photos.build_seconds + self.frames.build_seconds,
            "peak_mib": peak,
        }
