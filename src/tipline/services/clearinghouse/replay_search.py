"""The parallel half of the replay: searching one epoch's files against the index.

The index is the first copy of every content seen so far (photos by PDQ, videos by
their usable vPDQ frames) -- a superset of what
:mod:`tipline.services.clearinghouse.dedup` keeps in the files bank, which leaves out
files represented by a near copy. Which of them are indexed is decided in order by
:mod:`.replay`, which drops matches to files that are not, so epochs are searched
without waiting for the earlier ones to be resolved.

The driver writes the index once per node (:class:`IndexWriter`): hashes appended to
raw files, exact multi-index segment files (:class:`tipline.index.pdq.PdqIndex`, a
main one rebuilt as it grows plus a small delta), and per epoch a manifest naming
them. Every search worker on the node (:class:`SearchState`, a Ray actor or the
driver itself) memory-maps the same files, so the node's page cache holds one copy of
the index whatever the number of workers; each worker searches its share of the
epoch's contents: photos within the PDQ distance; videos by looking up only as many
of their frames as guarantee that every video within vPDQ's percent distance is hit
(:func:`frames_to_search`), then comparing each candidate pair frame by frame, exactly
as the match index computes vPDQ's distance. Every pair within the distance meets in
one search (recall 1.0 by construction); which of those matches become links is
decided afterwards, in order, by :mod:`.replay`.

Data crosses process boundaries as :func:`pack` blobs (raw little-endian arrays behind
a JSON header), JSON manifests and raw files (no pickle).
"""

from __future__ import annotations

import json
import math
import resource
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.errors import InputError
from tipline.index import _kernels as K
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


class _RawFile:
    """An append-only file of fixed-width rows (raw little-endian), read back through a
    read-only memory map of its first rows: the prefix a reader maps never changes."""

    def __init__(self, path: Path, dtype: type, width: int = 0) -> None:
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.n = 0
        path.write_bytes(b"")

    def append(self, rows: np.ndarray) -> None:
        if not rows.shape[0]:
            return
        with self.path.open("ab") as f:
            f.write(np.ascontiguousarray(rows, dtype=self.dtype.newbyteorder("<")).tobytes())
        self.n += rows.shape[0]


def map_rows(path: Path, dtype: type, n: int, width: int = 0) -> np.ndarray:
    """The first ``n`` rows of a :class:`_RawFile`, memory-mapped read-only."""
    shape = (n, width) if width else (n,)
    if n == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=shape)


class GrowingIndex:
    """Exact radius search files over a growing set of hashes, each with an id (the
    writer's side: one per node, shared by every search worker there).

    The hashes and ids are appended to raw files. A main :class:`PdqIndex` segment
    file is rebuilt over every hash when the hashes added since its last build reach
    :data:`DELTA_SHARE` of it; those newer hashes sit in a small delta segment rebuilt
    at each addition. Building costs about ``1 / DELTA_SHARE + 1`` times each hash in
    all; a search probes two indexes. Readers open the segments a :meth:`manifest`
    names memory-mapped (:class:`IndexReader`), so a node holds one copy in its page
    cache whatever the number of workers.
    """

    def __init__(self, directory: Path, kind: str, min_main: int = MIN_MAIN) -> None:
        """Empty; the first main index is built at ``DELTA_SHARE * min_main`` hashes."""
        self.directory, self.kind, self.min_main = directory, kind, min_main
        self.words = _RawFile(directory / f"{kind}.words", np.uint64, 4)
        self.ids = _RawFile(directory / f"{kind}.ids", np.int64)
        self.n_main = 0
        self.main: str | None = None
        self.delta: str | None = None
        self.build_seconds = 0.0

    def __len__(self) -> int:
        return self.words.n

    def add(self, ids: I64, words: Words) -> None:
        """Add hashes ((n, 4) words) under ``ids`` and rebuild what needs it."""
        if not words.shape[0]:
            return
        started = time.process_time()
        self.words.append(words)
        self.ids.append(ids)
        n = self.words.n
        all_words = map_rows(self.words.path, np.uint64, n, 4)
        all_ids = map_rows(self.ids.path, np.int64, n)
        if n - self.n_main > DELTA_SHARE * max(self.n_main, self.min_main):
            self.main, self.n_main, self.delta = self._build("main", n, all_ids, all_words), n, None
        else:
            lo = self.n_main
            self.delta = self._build("delta", n, all_ids[lo:], all_words[lo:])
        self.build_seconds += time.process_time() - started

    def _build(self, part: str, n: int, ids: np.ndarray, words: np.ndarray) -> str:
        name = f"{self.kind}-{part}-{n}.seg"
        PdqIndex.build_file(self.directory / name, np.asarray(ids), np.asarray(words))
        return name

    def manifest(self) -> dict[str, Any]:
        """What a reader opens: the current segment files and the hash count."""
        return {"main": self.main, "delta": self.delta, "n": self.words.n}


class IndexReader:
    """A search worker's view of one :class:`GrowingIndex`: the segment files of the
    latest manifest, memory-mapped, each opened once and dropped when superseded."""

    def __init__(self, directory: Path) -> None:
        """Nothing opened yet."""
        self.directory = directory
        self.opened: dict[str, PdqIndex] = {}
        self.current: list[PdqIndex] = []

    def use(self, manifest: dict[str, Any]) -> None:
        """Search the segments ``manifest`` names from now on."""
        names = [str(x) for x in (manifest["main"], manifest["delta"]) if x]
        for name in names:
            if name not in self.opened:
                self.opened[name] = PdqIndex.open(self.directory / name)
        self.opened = {k: v for k, v in self.opened.items() if k in names}
        self.current = [self.opened[k] for k in names]

    def search(self, queries: Words, radius: int) -> tuple[I64, I64, I64]:
        """(query, id, distance) of every hash within ``radius`` bits of each of the
        (n, 4) word ``queries``."""
        found = [
            (q, np.asarray(index.ids[rows]), dist)
            for index in self.current
            for q, rows, dist in (index.search_rows_many(queries, radius),)
        ]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(found) == 1:
            return found[0]
        return (
            np.concatenate([f[0] for f in found]),
            np.concatenate([f[1] for f in found]),
            np.concatenate([f[2] for f in found]),
        )


def concat_ranges(starts: I64, lengths: I64) -> I64:
    """Concatenated ``starts[i] .. starts[i] + lengths[i] - 1``."""
    offsets = np.arange(int(lengths.sum()), dtype=np.int64)
    return np.repeat(starts, lengths) + offsets - np.repeat(np.cumsum(lengths) - lengths, lengths)


def frame_pair_distances(
    a_words: Words, a_start: I64, a: I64, b_words: Words, b_start: I64, b: I64
) -> I64:
    """vPDQ's distance, 100 - floor(min(query %, compared %)), of every pair of frame
    sets ``(a[p], b[p])`` by brute force: set ``a[p]`` is ``a_words[a_start[a[p]]:
    a_start[a[p] + 1]]`` (distinct usable frames), likewise ``b``; a frame matches
    when within vPDQ's frame distance of a frame of the other set."""
    out = np.zeros(a.shape[0], dtype=np.int64)
    if a.shape[0]:
        K.frame_set_distances(
            np.asarray(a_words, dtype=np.uint64),
            np.asarray(a_start, dtype=np.int64),
            np.asarray(a, dtype=np.int64),
            np.asarray(b_words, dtype=np.uint64),
            np.asarray(b_start, dtype=np.int64),
            np.asarray(b, dtype=np.int64),
            FRAME_DISTANCE,
            out,
        )
    return out


def frames_to_search(counts: I64, vpdq_distance: int) -> I64:
    """How many of a query video's frames (its first ones) must be looked up to find
    every video within ``vpdq_distance`` percent of it: a match needs at least
    ``need = ceil(n * (100 - d) / 100)`` of its ``n`` frames to match, so any
    ``n - need + 1`` of them include one that does (pigeonhole); the candidates found
    are then compared frame by frame (:func:`frame_pair_distances`)."""
    if vpdq_distance >= 100:
        return counts
    need = (counts * (100 - vpdq_distance) + 99) // 100
    searched: I64 = np.minimum(counts, counts - need + 1)
    return searched


class IndexWriter:
    """The driver's side of the search index: the first copies (photos by PDQ under
    their file, videos by their usable frames under their video number, with each
    video's file and frame range) in files under ``directory``, shared by every
    search worker of the node (:class:`SearchState`)."""

    def __init__(self, directory: Path, min_main: int = MIN_MAIN) -> None:
        """An empty index in ``directory`` (which must exist)."""
        self.directory = directory
        self.photos = GrowingIndex(directory, "photo", min_main)
        self.frames = GrowingIndex(directory, "frame", min_main)
        self.video_file = _RawFile(directory / "video.file", np.int64)
        self.video_start = _RawFile(directory / "video.start", np.int64)
        self.video_start.append(np.zeros(1, dtype=np.int64))

    @property
    def build_seconds(self) -> float:
        """CPU seconds spent building index files."""
        return self.photos.build_seconds + self.frames.build_seconds

    def add(self, epoch: Arrays) -> str:
        """Add an epoch's first copies; the manifest (JSON) of the index with them."""
        self.photos.add(epoch["t_photo_file"], epoch["t_photo_words"])
        counts = epoch["t_video_frames"]
        first = self.video_file.n
        self.frames.add(
            np.repeat(np.arange(first, first + counts.shape[0], dtype=np.int64), counts),
            epoch["t_frame_words"],
        )
        self.video_file.append(epoch["t_video_file"])
        frames_before = len(self.frames) - int(counts.sum())
        self.video_start.append(frames_before + np.cumsum(counts))
        return json.dumps(
            {
                "photo": self.photos.manifest(),
                "frame": self.frames.manifest(),
                "videos": self.video_file.n,
            }
        )

    def prune(self) -> None:
        """Delete the segment files the latest manifest no longer names (call once no
        search of an earlier manifest is running)."""
        keep = {self.photos.main, self.photos.delta, self.frames.main, self.frames.delta}
        for path in self.directory.glob("*.seg"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


class SearchState:
    """A search worker: opens the index files a manifest names and searches an
    epoch's contents against them."""

    def __init__(self, directory: str | Path, pdq_distance: int, vpdq_distance: int) -> None:
        """Search the index written under ``directory``; distances as
        :class:`.dedup.DedupSettings` (bits, percent)."""
        self.directory = Path(directory)
        self.pdq_distance = pdq_distance
        self.vpdq_distance = vpdq_distance
        self.photos = IndexReader(self.directory)
        self.frames = IndexReader(self.directory)
        self.cpu_seconds = 0.0
        self.frame_lookups = 0
        self.photo_lookups = 0

    def search(self, manifest: str, queries: Arrays) -> Arrays:
        """The matches of ``queries`` (contents) among the first copies the manifest
        (:meth:`IndexWriter.add`) names: ``content``, ``file``, ``signal`` (PDQ or
        VPDQ), ``distance``."""
        started = time.process_time()
        index = json.loads(manifest)
        self.photos.use(index["photo"])
        self.frames.use(index["frame"])
        out_c: list[I64] = []
        out_f: list[I64] = []
        out_s: list[I64] = []
        out_d: list[I64] = []
        contents = queries["q_photo_content"]
        self.photo_lookups += contents.shape[0]
        query, files, dist = self.photos.search(queries["q_photo_words"], self.pdq_distance)
        out_c.append(contents[query])
        out_f.append(files)
        out_s.append(np.full(files.shape[0], PDQ, dtype=np.int64))
        out_d.append(dist)
        self._search_videos(index, queries, (out_c, out_f, out_s, out_d))
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
        self,
        index: dict[str, Any],
        queries: Arrays,
        out: tuple[list[I64], list[I64], list[I64], list[I64]],
    ) -> None:
        q_counts = queries["q_video_frames"].astype(np.int64)
        q_words = queries["q_frame_words"]
        q_start = np.concatenate([[0], np.cumsum(q_counts)]).astype(np.int64)
        searched = frames_to_search(q_counts, self.vpdq_distance)
        frames = concat_ranges(q_start[:-1], searched)
        owner = np.repeat(np.arange(q_counts.shape[0], dtype=np.int64), searched)
        self.frame_lookups += frames.shape[0]
        query, videos, _ = self.frames.search(q_words[frames], FRAME_DISTANCE)
        if not query.shape[0]:
            return
        n_videos, n_frames = int(index["videos"]), int(index["frame"]["n"])
        pair = np.unique(owner[query] * np.int64(n_videos) + videos)
        qv, tv = np.divmod(pair, np.int64(n_videos))
        t_words = map_rows(self.directory / "frame.words", np.uint64, n_frames, 4)
        t_start = map_rows(self.directory / "video.start", np.int64, n_videos + 1)
        distance = frame_pair_distances(q_words, q_start, qv, t_words, t_start, tv)
        keep = distance <= self.vpdq_distance
        video_file = map_rows(self.directory / "video.file", np.int64, n_videos)
        out[0].append(queries["q_video_content"][qv[keep]])
        out[1].append(np.asarray(video_file[tv[keep]]))
        out[2].append(np.full(int(keep.sum()), VPDQ, dtype=np.int64))
        out[3].append(distance[keep])

    def stats(self) -> dict[str, float]:
        """CPU seconds spent searching, lookups made, and memory (MiB): the peak
        resident set of this process (shared index pages included) and, where the
        system tells, its proportional share (PSS) and private memory now."""
        out = {
            "cpu_seconds": self.cpu_seconds,
            "photo_lookups": float(self.photo_lookups),
            "frame_lookups": float(self.frame_lookups),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        out.update(memory_now())
        return out


def memory_now() -> dict[str, float]:
    """This process's proportional (``pss_mib``) and private (``private_mib``) memory,
    from /proc/self/smaps_rollup; empty where that file does not exist."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return {}
    kib: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            kib[parts[0][:-1]] = int(parts[1])
    private = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return {"pss_mib": kib.get("Pss", 0) / 1024, "private_mib": private / 1024}
