"""Brute-force twin of the replay: :func:`tipline.services.clearinghouse.dedup.dedup_report`
and :func:`tipline.services.clearinghouse.clusters.assign` transcribed for an in-memory
stream, one file at a time, comparing every file with every indexed file by the signal
types' own distances (no index, no epochs, no workers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tipline.services.clearinghouse.dedup import _SIGNAL_RANK, MAX_LINKS, DedupSettings
from tipline.services.clearinghouse.replay_stream import PHOTO, VIDEO, Stream
from tipline.signals.base import Signal, VideoFrame, get_signal_type
from tipline.signals.vpdq import QUALITY_THRESHOLD, format_vpdq_text

CODE = {"sha256": 0, "pdq": 3, "vpdq": 4}


def _signals(stream: Stream, content: int, settings: DedupSettings) -> dict[str, str]:
    """A content's signals as :func:`dedup.file_signals` would give them."""
    out = {"sha256": f"{content:064x}"}
    quality = int(stream.content_quality[content])
    if stream.content_kind[content] == PHOTO and quality >= settings.min_pdq_quality:
        out["pdq"] = stream.content_pdq[content].tobytes().hex()
    if stream.content_kind[content] == VIDEO and quality >= QUALITY_THRESHOLD:
        lo, hi = stream.frame_start[content], stream.frame_start[content + 1]
        frames = [
            VideoFrame(index=k, quality=quality, hash=stream.frames[lo + k].tobytes(), seconds=k)
            for k in range(int(hi - lo))
        ]
        out["vpdq"] = format_vpdq_text(frames)
    return out


def _match(mine: dict[str, str], theirs: dict[str, str], settings: DedupSettings) -> Any:
    """dedup's strongest match of two files (digests, then PDQ, then vPDQ)."""
    if mine["sha256"] == theirs["sha256"]:
        return ("sha256", 0)
    for kind, limit in (("pdq", settings.pdq_distance), ("vpdq", settings.vpdq_distance)):
        if kind in mine and kind in theirs:
            found = get_signal_type(kind).match(mine[kind], [theirs[kind]], limit)
            if found:
                return (kind, int(found[0][1]))
    return None


def brute_replay(
    stream: Stream, settings: DedupSettings
) -> tuple[list[int], list[bool], set[tuple[int, int, int, int]]]:
    """(cluster per file named by its first file, indexed per file, links)."""
    assert Signal  # the signal registry is loaded
    sig = [_signals(stream, c, settings) for c in range(stream.content_kind.shape[0])]
    report_start = stream.report_start.tolist()
    content = stream.file_content.tolist()
    indexed_files: list[int] = []
    indexed = [False] * stream.files
    cluster: dict[int, int] = {}
    links_out: set[tuple[int, int, int, int]] = set()
    for r in range(stream.reports):
        report_files = list(range(report_start[r], report_start[r + 1]))
        for i in report_files:
            mine = sig[content[i]]
            best: dict[int, tuple[str, int]] = {}
            for j in indexed_files:  # the index: files of earlier reports
                found = _match(mine, sig[content[j]], settings)
                if found is not None:
                    best[j] = found
            for k in report_files:
                if k >= i:
                    break
                found = _match(mine, sig[content[k]], settings)
                if found is not None:
                    best[k] = found
            links = sorted(best.items(), key=lambda x: ((_SIGNAL_RANK[x[1][0]], x[1][1]), x[0]))
            links = links[:MAX_LINKS]
            represented = any(
                indexed[o] and (s == "sha256" or (s == "pdq" and d <= settings.near_copy_bits))
                for o, (s, d) in links
            )
            indexed[i] = not represented
            # clusters.assign: join the linked clusters (merging them), or open one
            ids = {cluster[o] for o, _ in links}
            target = min(ids) if ids else i
            for f, c in cluster.items():
                if c in ids:
                    cluster[f] = target
            cluster[i] = target
            links_out.update((i, o, CODE[s], d) for o, (s, d) in links)
        indexed_files.extend(f for f in report_files if indexed[f])
    return [cluster[f] for f in range(stream.files)], indexed, links_out


def as_link_set(links: np.ndarray) -> set[tuple[int, int, int, int]]:  # type: ignore[type-arg]
    """The replay's link array as a set of tuples."""
    return {(int(a), int(b), int(c), int(d)) for a, b, c, d in links.tolist()}
