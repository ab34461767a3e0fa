"""Hash-level replay of a report stream through de-duplication and clustering.

The same semantics as :func:`.dedup.dedup_report` followed by :func:`.clusters.assign`,
on precomputed signals (:mod:`.replay_stream`) instead of the database:

* a file matches the *indexed* files of earlier reports (same content: a digest link;
  PDQ within ``pdq_distance`` bits when both have a PDQ hash of at least
  ``min_pdq_quality``; vPDQ within ``vpdq_distance`` percent) and every earlier file of
  its own report (the same test, strongest signal first);
* its links are the strongest match per other file, at most :data:`.dedup.MAX_LINKS`,
  ordered by (signal rank, distance, other file);
* it is indexed unless one of those links is to an indexed file by digest or within
  ``near_copy_bits`` PDQ bits;
* clusters are the connected components of the links (what ``assign``'s opening and
  merging of clusters amounts to); a cluster is named by its first file.

The work is split in epochs (runs of whole reports). The search of an epoch's contents
against the first copies of everything before it and the epoch's own
(:class:`.replay_search.SearchState`) is the parallel part, on one or many workers; the
resolution of those matches into links, in arrival order, is sequential, as the real
intake's de-duplication lock makes it, and keeps only matches to files it has indexed.
The next epoch is searched while one is resolved. The outcome does not depend on the
number of epochs or workers.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from numba import njit

from tipline.errors import InputError
from tipline.services.clearinghouse.dedup import MAX_LINKS, DedupSettings
from tipline.services.clearinghouse.replay_search import (
    PDQ,
    SHA256,
    VPDQ,
    Arrays,
    IndexWriter,
    SearchState,
    concat_ranges,
    frame_pair_distances,
)
from tipline.services.clearinghouse.replay_stream import PHOTO, VIDEO, Stream
from tipline.signals.vpdq import QUALITY_THRESHOLD as FRAME_QUALITY

I64 = npt.NDArray[np.int64]
Words = npt.NDArray[np.uint64]


class Searcher(Protocol):
    """Searches epochs in the order submitted (see :mod:`.replay_search`)."""

    def submit(self, targets: Arrays, contents: I64, signals: Signals) -> Any:
        """Start searching an epoch: its first copies (``targets``) and the contents
        of its files."""
        ...

    def collect(self, handle: Any) -> Arrays:
        """The matches of a submitted epoch."""
        ...


def words_of(hashes: npt.NDArray[np.uint8]) -> Words:
    """(n, 32) uint8 hashes as (n, 4) native uint64 words (as the PDQ index holds them)."""
    words: Words = np.ascontiguousarray(hashes).view(">u8").astype(np.uint64).reshape(-1, 4)
    return words


@dataclass(frozen=True)
class Signals:
    """Per content, what de-duplication matches it by (see :func:`.dedup.file_signals`)."""

    has_pdq: npt.NDArray[np.bool_]
    pdq_words: Words
    usable_start: I64  # (contents + 1,) usable frames of c: usable_words[start[c]:start[c+1]]
    usable_words: Words

    def usable(self, content: int) -> Words:
        """The distinct usable frames (quality >= vPDQ's floor) of a video content."""
        return self.usable_words[self.usable_start[content] : self.usable_start[content + 1]]

    def has_vpdq(self, content: int) -> bool:
        """Whether the content has a vPDQ signal (a usable frame)."""
        return bool(self.usable_start[content + 1] > self.usable_start[content])


def signals_of(stream: Stream, settings: DedupSettings) -> Signals:
    """The signals of every content of ``stream``."""
    kind, quality = stream.content_kind, stream.content_quality
    has_pdq = (kind == PHOTO) & (quality >= settings.min_pdq_quality)
    usable_video = (kind == VIDEO) & (quality >= FRAME_QUALITY)
    counts = np.diff(stream.frame_start)
    owner = np.repeat(np.arange(kind.shape[0], dtype=np.int64), counts)
    keep = usable_video[owner]
    words = words_of(stream.frames)[keep]
    owner = owner[keep]
    rows = np.arange(owner.shape[0])
    if rows.shape[0]:  # vPDQ matches each distinct frame hash once (first kept)
        keyed = np.concatenate([owner[:, None].astype(np.uint64), words], axis=1)
        _, first = np.unique(keyed, axis=0, return_index=True)
        rows = np.sort(first)
    per = np.bincount(owner[rows], minlength=kind.shape[0]).astype(np.int64)
    return Signals(
        has_pdq=has_pdq,
        pdq_words=words_of(stream.content_pdq),
        usable_start=np.concatenate([[0], np.cumsum(per)]).astype(np.int64),
        usable_words=np.ascontiguousarray(words[rows]),
    )


def vpdq_pair_distances(signals: Signals, a: I64, b: I64) -> I64:
    """vPDQ's distance, 100 - floor(min(query %, compared %)), of every pair of video
    contents ``(a[p], b[p])`` (their usable frames, within vPDQ's frame distance)."""
    start, uw = signals.usable_start, signals.usable_words
    return frame_pair_distances(uw, start, a, uw, start, b)


def within_reports(
    stream: Stream, signals: Signals, settings: DedupSettings, lo: int, hi: int
) -> tuple[I64, I64, I64, I64]:
    """Every (file, earlier file of its report, signal, distance) match among files
    ``lo..hi-1``, as dedup's ``_within`` decides it (digests, then PDQ, then vPDQ);
    sorted by file, then earlier file."""
    files = np.arange(lo, hi, dtype=np.int64)
    first = stream.report_start[np.searchsorted(stream.report_start, files, side="right") - 1]
    before = files - first
    i = np.repeat(files, before)
    k = concat_ranges(first, before)
    ci, ck = stream.file_content[i], stream.file_content[k]
    signal = np.full(i.shape[0], -1, dtype=np.int64)
    distance = np.zeros(i.shape[0], dtype=np.int64)
    same = ci == ck
    signal[same] = SHA256
    both_pdq = ~same & signals.has_pdq[ci] & signals.has_pdq[ck]
    bits = np.bitwise_count(signals.pdq_words[ci[both_pdq]] ^ signals.pdq_words[ck[both_pdq]])
    d = bits.sum(axis=1).astype(np.int64)
    rows = np.flatnonzero(both_pdq)[d <= settings.pdq_distance]
    signal[rows], distance[rows] = PDQ, d[d <= settings.pdq_distance]
    frames = np.diff(signals.usable_start)
    both_vpdq = ~same & ~both_pdq & (frames[ci] > 0) & (frames[ck] > 0)
    d = vpdq_pair_distances(signals, ci[both_vpdq], ck[both_vpdq])
    rows = np.flatnonzero(both_vpdq)[d <= settings.vpdq_distance]
    signal[rows], distance[rows] = VPDQ, d[d <= settings.vpdq_distance]
    keep = signal >= 0
    return i[keep], k[keep], signal[keep], distance[keep]


@dataclass
class ReplayResult:
    """What a replay found, and what it cost."""

    cluster: I64  # per file: its cluster, named by the cluster's first file
    indexed: npt.NDArray[np.bool_]
    links: I64  # (k, 4): file, other file, signal (replay_search codes), distance
    epochs: int
    search_wait_seconds: float = 0.0  # wall time the resolution waited for searches
    resolve_seconds: float = 0.0  # wall time of the sequential resolution (driver)
    resolve_cpu_seconds: float = 0.0
    worker_stats: list[dict[str, float]] = field(default_factory=list)


#: how a link is packed for sorting: signal, distance, then the other file
_SIGNAL_SHIFT, _DIST_SHIFT, _FILE_MASK = 52, 42, (1 << 42) - 1


@njit(cache=True, nogil=True)
def _find(parent: I64, x: int) -> int:  # pragma: no cover - compiled
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _resolve_kernel(  # pragma: no cover - compiled (its Python twin: tests/_replay_brute.py)
    lo: int,
    hi: int,
    report_of: I64,
    content: I64,
    indexed: npt.NDArray[np.uint8],
    indexed_content: I64,
    parent: I64,
    seen: I64,
    m_start: I64,
    m_end: I64,
    m_file: I64,
    m_signal: I64,
    m_dist: I64,
    w_file: I64,
    w_other: I64,
    w_signal: I64,
    w_dist: I64,
    max_links: int,
    near: int,
    keys: I64,
    out: I64,
) -> int:
    """The in-order resolution of files ``lo..hi-1`` (see :meth:`Resolver.resolve`);
    links written to ``out``, their count returned."""
    n_out = 0
    w = 0
    for i in range(lo, hi):
        r, c = report_of[i], content[i]
        m = 0
        for k in range(m_start[i - lo], m_end[i - lo]):
            j = m_file[k]
            if j >= i or report_of[j] == r or indexed[j] == 0:
                continue
            if content[j] == c:
                keys[m] = j
            else:
                keys[m] = (m_signal[k] << _SIGNAL_SHIFT) | (m_dist[k] << _DIST_SHIFT) | j
            m += 1
        f = indexed_content[c]
        if f >= 0 and report_of[f] != r:
            keys[m] = f
            m += 1
        while w < w_file.shape[0] and w_file[w] == i:  # earlier files of the report
            keys[m] = (w_signal[w] << _SIGNAL_SHIFT) | (w_dist[w] << _DIST_SHIFT) | w_other[w]
            m += 1
            w += 1
        ordered = np.sort(keys[:m])  # by signal, distance, file: the strongest first
        first = n_out
        represented = False
        for key in ordered:
            o = key & _FILE_MASK
            if seen[o] == i:  # a weaker link to a file already linked
                continue
            seen[o] = i
            s, d = key >> _SIGNAL_SHIFT, (key >> _DIST_SHIFT) & 1023
            out[n_out, 0], out[n_out, 1], out[n_out, 2], out[n_out, 3] = i, o, s, d
            n_out += 1
            if indexed[o] and (s == SHA256 or (s == PDQ and d <= near)):
                represented = True
            if n_out - first == max_links:
                break
        if not represented:
            indexed[i] = 1
            if indexed_content[c] < 0:
                indexed_content[c] = i
        for t in range(first, n_out):
            ra, rb = _find(parent, i), _find(parent, out[t, 1])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the root is the first file
    return n_out


@njit(cache=True, nogil=True)
def _union_pairs(parent: I64, a: I64, b: I64) -> None:  # pragma: no cover - compiled
    for t in range(a.shape[0]):
        ra, rb = _find(parent, a[t]), _find(parent, b[t])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)


def _labels(parent: I64) -> I64:
    """Every member's root (pointer jumping, vectorised): the smallest of its set."""
    labels = parent.copy()
    while True:
        up = labels[labels]
        if np.array_equal(up, labels):
            return labels
        labels = up


class Resolver:
    """The sequential half: an epoch's matches into links, indexed flags and clusters.

    Its state is compact arrays (8 bytes per file for each of report, content,
    union-find parent and a scratch stamp, one byte for the indexed flag, 8 per
    content, 32 per link kept), no Python object per file; the per-file loop is
    compiled (:func:`_resolve_kernel`)."""

    def __init__(self, stream: Stream, signals: Signals, settings: DedupSettings) -> None:
        """Nothing resolved yet."""
        self.stream, self.signals, self.settings = stream, signals, settings
        n = stream.files
        self.report_of = np.ascontiguousarray(stream.report_of_files(), dtype=np.int64)
        self.content = np.ascontiguousarray(stream.file_content, dtype=np.int64)
        self.indexed = np.zeros(n, dtype=np.uint8)
        self.indexed_content = np.full(stream.content_kind.shape[0], -1, dtype=np.int64)
        self.parent = np.arange(n, dtype=np.int64)
        self.seen = np.full(n, -1, dtype=np.int64)
        self.link_blocks: list[I64] = []

    def resolve(self, lo: int, hi: int, matches: Arrays) -> None:
        """Resolve files ``lo..hi-1`` (whole reports) given the epoch's ``matches``:
        for each file in order, its links are the strongest match per other file --
        to indexed files of earlier reports (a digest link for the same content) and to
        every earlier file of its report -- the :data:`MAX_LINKS` strongest kept; it is
        indexed unless a link is to an indexed file by digest or within the near-copy
        bits; its links join clusters."""
        order = np.argsort(matches["content"], kind="stable")
        m_content = np.ascontiguousarray(matches["content"][order], dtype=np.int64)
        files = self.content[lo:hi]
        m_start = np.searchsorted(m_content, files, side="left").astype(np.int64)
        m_end = np.searchsorted(m_content, files, side="right").astype(np.int64)
        w_file, w_other, w_signal, w_dist = within_reports(
            self.stream, self.signals, self.settings, lo, hi
        )
        per_file = (m_end - m_start) + 1 + np.bincount(w_file - lo, minlength=hi - lo)
        keys = np.empty(max(1, int(per_file.max()) if per_file.shape[0] else 1), np.int64)
        out = np.empty((int(np.minimum(per_file, MAX_LINKS).sum()), 4), dtype=np.int64)
        count = _resolve_kernel(
            lo,
            hi,
            self.report_of,
            self.content,
            self.indexed,
            self.indexed_content,
            self.parent,
            self.seen,
            m_start,
            m_end,
            np.ascontiguousarray(matches["file"][order], dtype=np.int64),
            np.ascontiguousarray(matches["signal"][order], dtype=np.int64),
            np.ascontiguousarray(matches["distance"][order], dtype=np.int64),
            w_file,
            w_other,
            w_signal,
            w_dist,
            MAX_LINKS,
            self.settings.near_copy_bits,
            keys,
            out,
        )
        self.link_blocks.append(out[:count].copy())

    def result(self, epochs: int) -> ReplayResult:
        """The outcome so far."""
        links = (
            np.concatenate(self.link_blocks)
            if self.link_blocks
            else np.zeros((0, 4), dtype=np.int64)
        )
        return ReplayResult(
            cluster=_labels(self.parent),
            indexed=self.indexed.astype(bool),
            links=links,
            epochs=epochs,
        )


def epoch_bounds(stream: Stream, epochs: int) -> list[tuple[int, int]]:
    """File ranges of ``epochs`` runs of whole reports of about equal file counts."""
    if epochs < 1:
        raise InputError("replay: epochs must be >= 1")
    cuts = np.searchsorted(stream.report_start, np.linspace(0, stream.files, epochs + 1))
    bounds = sorted({int(stream.report_start[min(c, stream.reports)]) for c in cuts})
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def first_files(stream: Stream) -> I64:
    """The first file of every content."""
    n = stream.files
    first = np.full(stream.content_kind.shape[0], n, dtype=np.int64)
    np.minimum.at(first, stream.file_content, np.arange(n, dtype=np.int64))
    return first


def epoch_targets(stream: Stream, signals: Signals, first: I64, lo: int, hi: int) -> Arrays:
    """The epoch's first copies with a PDQ or vPDQ signal: what it adds to the index."""
    contents = np.flatnonzero((first >= lo) & (first < hi))
    photos = contents[signals.has_pdq[contents]]
    counts = np.diff(signals.usable_start)
    videos = contents[counts[contents] > 0]
    return {
        "t_photo_file": first[photos],
        "t_photo_words": signals.pdq_words[photos],
        "t_video_file": first[videos],
        "t_video_frames": counts[videos],
        "t_frame_words": _frames_of(signals, videos),
    }


def _frames_of(signals: Signals, videos: I64) -> Words:
    if not videos.shape[0]:
        return np.zeros((0, 4), dtype=np.uint64)
    starts, ends = signals.usable_start[videos], signals.usable_start[videos + 1]
    lengths = ends - starts
    rows = np.repeat(starts, lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    frames: Words = signals.usable_words[rows]
    return frames


def query_contents(stream: Stream, signals: Signals, lo: int, hi: int) -> I64:
    """The distinct contents of files ``lo..hi-1`` that have a PDQ or vPDQ signal."""
    contents = np.unique(stream.file_content[lo:hi])
    counts = np.diff(signals.usable_start)
    return contents[signals.has_pdq[contents] | (counts[contents] > 0)]


def query_arrays(signals: Signals, contents: I64) -> Arrays:
    """The search input for ``contents``."""
    photos = contents[signals.has_pdq[contents]]
    videos = contents[~signals.has_pdq[contents]]
    return {
        "q_photo_content": photos,
        "q_photo_words": signals.pdq_words[photos],
        "q_video_content": videos,
        "q_video_frames": np.diff(signals.usable_start)[videos],
        "q_frame_words": _frames_of(signals, videos),
    }


def split_queries(signals: Signals, contents: I64, parts: int) -> list[I64]:
    """``contents`` in ``parts`` runs of about equal search cost (a photo costs one
    lookup, a video one per usable frame)."""
    cost = np.where(signals.has_pdq[contents], 1, np.diff(signals.usable_start)[contents])
    total = np.cumsum(cost)
    if not total.shape[0]:
        return [contents[:0] for _ in range(parts)]
    cuts = np.searchsorted(total, np.linspace(0, total[-1], parts + 1)[1:-1], side="right")
    return list(np.split(contents, cuts))


def replay(
    stream: Stream,
    settings: DedupSettings,
    searcher: Searcher,
    *,
    epochs: int,
    on_epoch: Callable[[int, int], None] | None = None,
    signals: Signals | None = None,
) -> ReplayResult:
    """Replay ``stream`` in ``epochs`` epochs: the search of each epoch (parallel, on
    ``searcher``) is submitted before the previous one is resolved (sequentially, by
    the :class:`Resolver`), so the two overlap. ``signals``: those of
    :func:`signals_of` for ``stream`` and ``settings`` when already computed."""
    if signals is None:
        signals = signals_of(stream, settings)
    first = first_files(stream)
    resolver = Resolver(stream, signals, settings)
    search_wait = resolve_wall = resolve_cpu = 0.0
    bounds = epoch_bounds(stream, epochs)

    def submit(number: int) -> Any:
        lo, hi = bounds[number]
        targets = epoch_targets(stream, signals, first, lo, hi)
        return searcher.submit(targets, query_contents(stream, signals, lo, hi), signals)

    pending = submit(0)
    for number, (lo, hi) in enumerate(bounds):
        following = submit(number + 1) if number + 1 < len(bounds) else None
        started = time.perf_counter()
        matches = searcher.collect(pending)
        search_wait += time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        resolver.resolve(lo, hi, matches)
        resolve_wall += time.perf_counter() - started
        resolve_cpu += time.process_time() - cpu
        pending = following
        if on_epoch is not None:
            on_epoch(number + 1, len(bounds))
    result = resolver.result(len(bounds))
    result.search_wait_seconds, result.resolve_seconds = search_wait, resolve_wall
    result.resolve_cpu_seconds = resolve_cpu
    return result


class LocalSearcher:
    """One in-process :class:`SearchState` over an index in a temporary directory (no
    parallelism; searches on submit)."""

    def __init__(self, settings: DedupSettings, directory: Path | None = None) -> None:
        """An empty index with the distances of ``settings``, written under
        ``directory`` (default: a temporary directory removed with this object)."""
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="tipline-replay-"))
            weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        self.writer = IndexWriter(directory)
        self.state = SearchState(directory, settings.pdq_distance, settings.vpdq_distance)

    def submit(self, targets: Arrays, contents: I64, signals: Signals) -> Arrays:
        """Search now."""
        return self.state.search(self.writer.add(targets), query_arrays(signals, contents))

    def collect(self, handle: Arrays) -> Arrays:
        """The matches searched on submit."""
        self.writer.prune()
        return handle


def pair_scores(cluster: Sequence[int] | I64, truth: Sequence[int] | I64) -> tuple[float, float]:
    """Pairwise (precision, recall) of ``cluster`` against ``truth`` (per file): the
    share of same-cluster file pairs that are one item, and of same-item pairs that
    share a cluster."""
    c = np.asarray(cluster, dtype=np.int64)
    t = np.asarray(truth, dtype=np.int64)

    def pairs(*keys: I64) -> int:
        _, counts = np.unique(np.stack(keys), axis=1, return_counts=True)
        return int((counts * (counts - 1) // 2).sum())

    both, found, true = pairs(c, t), pairs(c), pairs(t)
    return both / max(1, found), both / max(1, true)


def report_groups(stream: Stream) -> I64:
    """Reports linked by a shared account or address (as :mod:`.links`), as connected
    components named by their first report."""
    parent = np.arange(stream.reports, dtype=np.int64)
    for key in (stream.report_account, stream.report_ip):
        order = np.argsort(key, kind="stable")
        same = np.flatnonzero(key[order][1:] == key[order][:-1])
        _union_pairs(parent, order[same].astype(np.int64), order[same + 1].astype(np.int64))
    return _labels(parent)
