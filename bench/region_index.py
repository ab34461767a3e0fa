"""What a new Matcher pays for the bank-side region descriptors: reading every row from
the database (the anchor, what each Matcher did before the index file) against mapping
the region index file (``<index dir>/regions``) and reading only newer rows.

A SQLite database gets ``--entries`` bank entries of ``--regions`` random region
descriptors each (584 is what a photo gives), cached under bench/.cache. Then, in one
run: ``database`` = :class:`RegionIndex` without a folder catching up from the database
(every row, then the in-memory rebuild); ``first open`` = with a folder and no file yet
(every row, then the file written); ``file`` = a new index on that folder (maps the file,
reads nothing). Each is timed (wall and process CPU) with the growth of the process's
anonymous resident memory (the file's pages are page cache, shared by every process
mapping it), and every index answers the same queries identically (checked).

Usage: ``python bench/region_index.py [--entries 1000] [--regions 584]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import psutil

from tipline.index.pdq import PdqIndex
from tipline.services import banks
from tipline.services.database import open_database
from tipline.services.regions.index import REBUILD_AFTER, RegionIndex

CACHE = Path(__file__).resolve().parent / ".cache"


def _database(entries: int, per_entry: int) -> str:
    path = CACHE / f"regions-{entries}x{per_entry}.db"
    marker = path.with_suffix(".ok")
    url = f"sqlite:///{path}"
    if marker.exists():
        return url
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    db = open_database(url)
    banks.create_bank(db, "media")
    rng = np.random.default_rng(20261129)
    started = time.perf_counter()
    for e in range(entries):
        hashes = rng.integers(0, 256, size=(per_entry + 1, 32), dtype=np.uint8)
        regions = [(f"crop:{j}", hashes[j + 1].tobytes().hex()) for j in range(per_entry)]
        banks.add_entry(
            db, "media", [f"pdq:{hashes[0].tobytes().hex()}"], entry_id=f"m{e}", regions=regions
        )
    db.close()
    took = time.perf_counter() - started
    print(f"  database: {entries} entries x {per_entry} regions in {took:.0f} s")
    marker.write_text("ok")
    return url


def _measure(label: str, make: Callable[[], RegionIndex], url: str) -> RegionIndex:
    db = open_database(url, migrate=False)
    me = psutil.Process()

    def anon() -> float:  # resident memory that is not a file's pages (page cache)
        info = me.memory_info()
        return float(info.rss - info.shared)

    anon0 = anon()
    cpu0, t0 = time.process_time(), time.perf_counter()
    idx = make()
    with db.sessions() as s:
        read = idx.refresh(s)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    grown = (anon() - anon0) / 2**20
    db.close()
    print(
        f"{label:12s} {wall:8.2f} s wall {cpu:8.2f} s CPU {grown:9.1f} MiB anon. RSS growth "
        f"{read:>10,} rows read from the database, {idx.from_file:>10,} from the file"
    )
    return idx


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--regions", type=int, default=584)
    args = parser.parse_args(argv)
    if args.entries * args.regions <= REBUILD_AFTER:
        parser.error(f"give more than {REBUILD_AFTER:,} rows: fewer never make a file")
    print("load average before: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    url = _database(args.entries, args.regions)
    folder = CACHE / f"regions-{args.entries}x{args.regions}-index"
    shutil.rmtree(folder, ignore_errors=True)
    with open_database(url).sessions() as s:
        from tipline.store import bank_repository

        instance = bank_repository.instance_id(s)
    warm = np.random.default_rng(0).integers(0, 256, (64, 32), dtype=np.uint8)
    PdqIndex.build(np.arange(64), warm).warm_up()  # numba kernels compiled outside the clock
    memory = _measure("database", RegionIndex, url)
    first = _measure("first open", lambda: RegionIndex(folder, instance), url)
    mapped = _measure("file", lambda: RegionIndex(folder, instance), url)
    assert mapped.from_file == len(memory) == len(first)
    rng = np.random.default_rng(1)
    rows = [h.value for h in memory.search("00" * 32, 256)][:50]
    for q in [
        *rows,
        *(rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(50)),
    ]:
        want = sorted((h.entry_pk, h.distance, h.region) for h in memory.search(q, 31))
        for other in (first, mapped):
            assert sorted((h.entry_pk, h.distance, h.region) for h in other.search(q, 31)) == want
    size = sum(p.stat().st_size for p in folder.glob("regions-*.tpi")) / 2**20
    print(f"index file: {size:.1f} MiB for {len(memory):,} rows; same answers to 100 queries")
    print("load average after: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
