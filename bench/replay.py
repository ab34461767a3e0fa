"""Hash-level replay benchmark: a simulated stream of N reports (signals precomputed, no
pixels) through the clearinghouse's de-duplication and clustering, searched on a local
Ray cluster (one actor per CPU), resolved in order by the driver.

Printed: reports/s and files/s (wall), CPU seconds (searching actors + resolving
driver), peak memory per worker, pairwise precision and recall against the
generator's truth, linked-report groups, and the projection for a year at NCMEC's 2023
volume (36M reports, 105M files): CPU, memory per search worker, and the duration on
1..16 nodes.

The anchor, measured in the same run: bare exact PDQ radius-31 lookups
(:class:`tipline.index.pdq.PdqIndex`, the kernel every search is made of) on random
indexes of two sizes; the replay's search cost is printed as a ratio of it, and the
two sizes give the growth of a lookup's cost with the index, which the year's
projection uses.

Usage::

    python bench/replay.py                 # 20,000 reports, a few minutes
    python bench/replay.py --reports 300000
    python bench/replay.py --month         # 3M reports, 9M files: hours on 2 cores
    python bench/replay.py --month --stream-dir DIR   # generated once into DIR, then
                                           # memory-mapped from there (run under nice)
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from tipline.index.pdq import PdqIndex  # noqa: E402
from tipline.services.clearinghouse.dedup import DedupSettings  # noqa: E402
from tipline.services.clearinghouse.replay import (  # noqa: E402
    pair_scores,
    replay,
    report_groups,
    signals_of,
)
from tipline.services.clearinghouse.replay_ray import RaySearch  # noqa: E402
from tipline.services.clearinghouse.replay_search import memory_now  # noqa: E402
from tipline.services.clearinghouse.replay_stream import (  # noqa: E402
    ReplaySpec,
    generate,
    load_stream,
    save_stream,
)

MONTH_REPORTS = 3_000_000
YEAR_REPORTS, YEAR_FILES = 36_000_000, 105_000_000
FILES_PER_EPOCH = 100_000
#: bytes per hash of a PDQ index (docs/capacity.md: 1M entries ~135 MB)
INDEX_BYTES = 135
#: bytes per hash of the replay's raw files beside it (the words and the id)
RAW_BYTES = 40


def _lookup_cost(size: int, lookups: int, rng: np.random.Generator) -> float:
    """CPU seconds per radius-31 lookup in a random index of ``size`` hashes."""
    hashes = rng.integers(0, 256, (size, 32), dtype=np.uint8)
    index = PdqIndex.build(np.arange(size), hashes)
    index.warm_up()
    queries = rng.integers(0, 256, (lookups, 32), dtype=np.uint8)
    words = np.ascontiguousarray(queries).view(">u8").astype(np.uint64).reshape(-1, 4)
    started = time.process_time()
    for i in range(lookups):
        index.search_rows(words[i : i + 1], 31)
    return (time.process_time() - started) / lookups


def _pairs(n: np.ndarray) -> np.ndarray:
    return n * (n - 1) // 2


def _worst(stream: object, result: object) -> None:
    """The clusters that cost most precision (false pairs: files of different items)
    and the items that cost most recall (pairs split across clusters), with what
    joined them: the links between files of different items."""
    cluster, item = result.cluster, stream.file_item  # type: ignore[attr-defined]
    content = stream.file_content  # type: ignore[attr-defined]
    kind, quality = stream.content_kind, stream.content_quality  # type: ignore[attr-defined]
    _, c_inv, c_size = np.unique(cluster, return_inverse=True, return_counts=True)
    key = np.unique(np.stack([cluster, item]), axis=1, return_counts=True)
    (kc, _), kn = key
    same = np.bincount(np.searchsorted(np.unique(cluster), kc), weights=_pairs(kn))
    false = _pairs(c_size) - same
    links = result.links  # type: ignore[attr-defined]
    cross = links[item[links[:, 0]] != item[links[:, 1]]]
    for c in np.argsort(-false)[:3]:
        if false[c] <= 0:
            break
        files = np.flatnonzero(c_inv == c)
        items, counts = np.unique(item[files], return_counts=True)
        top = np.argsort(-counts)[:4]
        desc = ", ".join(
            f"item {items[t]} x{counts[t]} "
            f"({'video' if kind[content[files[item[files] == items[t]][0]]] else 'photo'}, "
            f"quality {quality[content[files[item[files] == items[t]][0]]]})"
            for t in top
        )
        joins = cross[np.isin(cross[:, 0], files)]
        sig, dist = joins[:, 2], joins[:, 3]
        print(
            f"  false pairs {int(false[c]):,} in a cluster of {files.shape[0]:,} files "
            f"({items.shape[0]} items: {desc}); cross-item links {joins.shape[0]} "
            f"(signal codes {np.unique(sig).tolist()}, distances {np.unique(dist)[:8].tolist()})"
        )
    i_keys, i_size = np.unique(item, return_counts=True)
    together = np.bincount(np.searchsorted(i_keys, key[0][1]), weights=_pairs(kn))
    missed = _pairs(i_size) - together
    for t in np.argsort(-missed)[:3]:
        if missed[t] <= 0:
            break
        files = np.flatnonzero(item == i_keys[t])
        c0 = content[files[0]]
        print(
            f"  missed pairs {int(missed[t]):,}: item {i_keys[t]} ({files.shape[0]} files, "
            f"{'video' if kind[c0] else 'photo'}, quality {quality[c0]}) in "
            f"{np.unique(cluster[files]).shape[0]} clusters"
        )


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far (Linux)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--month", action="store_true", help=f"{MONTH_REPORTS:,} reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="default: ~100k files each")
    parser.add_argument("--workers", type=int, default=0, help="default: one per CPU")
    parser.add_argument("--node-cores", type=int, default=32, help="cores per projected node")
    parser.add_argument(
        "--stream-dir",
        type=Path,
        help="read the stream from here (generated and written first if absent)",
    )
    args = parser.parse_args()
    reports = MONTH_REPORTS if args.month else args.reports
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average)")

    rng = np.random.default_rng(args.seed)
    small, large = 250_000, 2_000_000
    anchor_small = _lookup_cost(small, 20_000, rng)
    anchor_large = _lookup_cost(large, 20_000, rng)
    growth = math.log(anchor_large / anchor_small) / math.log(large / small)
    print(
        f"anchor: PDQ radius-31 lookup {anchor_small * 1e6:.0f} us CPU at {small:,} hashes, "
        f"{anchor_large * 1e6:.0f} us at {large:,} (cost ~ size^{growth:.2f})"
    )

    started = time.perf_counter()
    if args.stream_dir is not None and (args.stream_dir / "file_content.npy").is_file():
        stream = load_stream(args.stream_dir)
    else:
        stream = generate(ReplaySpec(reports=reports, seed=args.seed))
        if args.stream_dir is not None:
            save_stream(stream, args.stream_dir)
            del stream
            stream = load_stream(args.stream_dir)
    settings = DedupSettings()
    signals = signals_of(stream, settings)
    videos = int((stream.content_kind == 1).sum())
    print(
        f"stream: {stream.reports:,} reports, {stream.files:,} files "
        f"({stream.files / stream.reports:.2f}/report, "
        f"{stream.video_file_share():.1%} video), {stream.content_kind.shape[0]:,} contents "
        f"({videos:,} videos, {signals.usable_words.shape[0]:,} usable frames), "
        f"{np.unique(stream.file_item).shape[0]:,} items; generated in "
        f"{time.perf_counter() - started:.0f} s (not counted)"
    )

    import ray

    ray.init(
        num_cpus=args.workers or os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        driver_before = memory_now()
        searcher = RaySearch("auto", settings, args.workers or None)
        epochs = args.epochs or max(2, round(stream.files / FILES_PER_EPOCH))
        pids = searcher.pids()
        actors0 = _cpu_of(pids)
        cpu0 = time.process_time()
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if done % max(1, total // 20) == 0 or done == total:
                print(
                    f"  epoch {done}/{total} ({done / total:.0%} of the files): wall "
                    f"{time.perf_counter() - started:.0f} s, CPU driver "
                    f"{time.process_time() - cpu0:.0f} s + actors "
                    f"{_cpu_of(pids) - actors0:.0f} s, driver private "
                    f"{memory_now().get('private_mib', 0):.0f} MiB, "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )

        result = replay(
            stream, settings, searcher, epochs=epochs, on_epoch=progress, signals=signals
        )
        wall = time.perf_counter() - started
        driver_cpu = time.process_time() - cpu0
        stats = searcher.stats()
        build_cpu = searcher.writer.build_seconds
        index_bytes = sum(p.stat().st_size for p in searcher.directory.iterdir())
        driver_after = memory_now()
        searcher.close()
    finally:
        ray.shutdown()
    groups_started = time.perf_counter()
    groups = report_groups(stream)
    groups_wall = time.perf_counter() - groups_started

    search_cpu = sum(s["cpu_seconds"] for s in stats)
    kinds = stream.content_kind[stream.file_content]
    precision, recall = pair_scores(result.cluster, stream.file_item)
    has_signal = signals.has_pdq | (np.diff(signals.usable_start) > 0)
    matchable = has_signal[stream.file_content]
    _, recall_matchable = pair_scores(result.cluster[matchable], stream.file_item[matchable])
    photo_lookups = int(sum(s["photo_lookups"] for s in stats))
    frame_lookups = int(sum(s["frame_lookups"] for s in stats))
    lookups = photo_lookups + frame_lookups
    indexed = int(result.indexed.sum())
    print(
        f"replay: {epochs} epochs, {len(stats)} search workers: wall {wall:.0f} s "
        f"(in-order resolution {result.resolve_seconds:.0f} s, "
        f"{result.resolve_cpu_seconds:.0f} CPU-s, overlapping the searches; "
        f"waiting for searches {result.search_wait_seconds:.0f} s)"
    )
    print(
        f"  {stream.reports / wall:,.0f} reports/s, {stream.files / wall:,.0f} files/s; "
        f"CPU: search {search_cpu:.0f} s, "
        f"driver {driver_cpu:.0f} s (of which index builds {build_cpu:.0f} s) "
        f"({(search_cpu + driver_cpu) / stream.files * 1e6:.0f} us per file)"
    )
    print(
        "  memory per worker (peak RSS incl. the shared index pages / PSS / private at "
        "the end): "
        + ", ".join(
            f"{s['peak_mib']:.0f}/{s.get('pss_mib', 0):.0f}/{s.get('private_mib', 0):.0f} MiB"
            for s in stats
        )
        + f"; driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
        f"MiB (private {driver_before.get('private_mib', 0):.0f} MiB before the replay, "
        f"{driver_after.get('private_mib', 0):.0f} after); index files "
        f"{index_bytes / 2**20:,.0f} MiB (one copy per node)"
    )
    print(
        f"  lookups {lookups:,} ({photo_lookups:,} photos, {frame_lookups:,} frames of "
        f"{int(signals.usable_words.shape[0]):,} usable; "
        f"{search_cpu / max(1, lookups) * 1e6:.0f} us CPU each, "
        f"{search_cpu / lookups / anchor_large:.2f}x the bare lookup at {large:,}); "
        f"indexed files {indexed:,}, links {result.links.shape[0]:,}, "
        f"clusters {np.unique(result.cluster).shape[0]:,}"
    )
    print(
        f"  precision {precision:.5f}, recall {recall:.5f} "
        f"(of pairs with a PDQ/vPDQ signal {recall_matchable:.5f}); photos "
        + "{:.5f}/{:.5f}, videos {:.5f}/{:.5f}".format(
            *pair_scores(result.cluster[kinds == 0], stream.file_item[kinds == 0]),
            *pair_scores(result.cluster[kinds == 1], stream.file_item[kinds == 1]),
        )
    )
    print(
        f"  linked-report groups {np.unique(groups).shape[0]:,} of {stream.reports:,} "
        f"reports in {groups_wall:.1f} s"
    )
    _worst(stream, result)

    # A year: every lookup's cost grows with its index (the anchor's exponent); the
    # index grows through the year, so a lookup costs on average cost(end) / (1 + g).
    # The replay's own overhead over bare lookups (measured here) is kept.
    scale = YEAR_FILES / stream.files
    first = np.unique(stream.file_content, return_index=True)[1]
    indexed_contents = np.zeros(stream.content_kind.shape[0], dtype=bool)
    indexed_contents[stream.file_content[first]] = result.indexed[first]
    frames = np.diff(signals.usable_start)
    photo_index = int((indexed_contents & signals.has_pdq).sum())
    frame_index = int(frames[indexed_contents].sum())

    def cost(n: float) -> float:
        return anchor_large * (max(n, 1.0) / large) ** growth / (1 + growth)

    model = photo_lookups * cost(photo_index) + frame_lookups * cost(frame_index)
    overhead = search_cpu / model
    year_search_cpu = (
        overhead
        * scale
        * (photo_lookups * cost(photo_index * scale) + frame_lookups * cost(frame_index * scale))
    )
    # the driver's whole CPU (in-order resolution, index builds, epoch packing) is serial
    year_serial = driver_cpu * scale
    index_gib = (photo_index + frame_index) * scale * (INDEX_BYTES + RAW_BYTES) / 2**30
    print(
        f"year ({YEAR_REPORTS:,} reports, {YEAR_FILES:,} files, x{scale:.1f} this run): "
        f"search {year_search_cpu / 3600:,.0f} CPU-h (replay overhead x{overhead:.2f} over "
        f"bare lookups; year-end indexes {photo_index * scale / 1e6:,.0f}M photo hashes, "
        f"{frame_index * scale / 1e6:,.0f}M frames, ~{index_gib:,.0f} GiB "
        f"per node, shared by its workers), driver (in-order resolution and index "
        f"builds) {year_serial / 3600:.1f} h on one core"
    )
    for nodes in (1, 2, 4, 8, 16):
        cores = nodes * args.node_cores
        hours = max(year_search_cpu / cores / 0.75, year_serial) / 3600
        print(f"  {nodes:2d} node(s) of {args.node_cores} cores (75% useful): {hours:,.1f} h")
    print(f"load after: {os.getloadavg()[0]:.1f} (1-min average)")


if __name__ == "__main__":
    main()
