"""Exchange sync benchmark: an NCMEC-shaped source of N entries on 127.0.0.1 (a process
of its own, ``tests/_ncmec_server.py``) synced by ``tipline exchange sync`` (a process of
its own, so its peak memory is measured alone), at two sizes to show that memory stays
flat as the list grows (the sync streams page by page); then the same sync killed with
SIGKILL at a random page and resumed, compared entry by entry with the uninterrupted
one.

Printed per size: entries/s, wall and CPU seconds, the sync process's peak RSS; then
whether the killed-and-resumed bank equals the uninterrupted one.

The anchor, measured in the same run: the bare fetch of the same pages (the same HTTP
client and XML parse, no database), entries/s.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/exchanges.py [--entries 1000000] [--small 100000]

Without a PostgreSQL URL it uses SQLite and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

ENV = "TIPLINE_BENCH_NCMEC_PASSWORD"


@contextmanager
def _source(entries: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "_ncmec_server.py"), "--entries", str(entries)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def _database(pg_admin: str | None, tmp: Path, name: str) -> Iterator[str]:
    if not pg_admin:
        yield f"sqlite:///{tmp / f'{name}.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_admin)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_admin else "?"
    try:
        yield f"{pg_admin}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _configure(url: str, tmp: Path, source: str) -> None:
    from _ncmec_server import T0, USER
    from tipline.config import Settings
    from tipline.services import banks, exchanges
    from tipline.services.database import open_database

    db = open_database(url, settings=Settings(data_dir=tmp, database_url=url))
    try:
        banks.create_bank(db, "ncmec")
        exchanges.add_exchange(
            db,
            "ncmec",
            kind="ncmec",
            bank="ncmec",
            config={"url": source, "username": USER, "start": T0, "window_seconds": 86_400},
            credential_env=ENV,
        )
    finally:
        db.close()


def _run_sync(url: str, tmp: Path) -> tuple[int, float, float, int]:
    """(exit status, wall s, CPU s, peak RSS bytes) of one ``tipline exchange sync``."""
    from _ncmec_server import PASSWORD

    env = {**os.environ, "TIPLINE_DATABASE_URL": url, "TIPLINE_DATA_DIR": str(tmp), ENV: PASSWORD}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tipline.cli.main", "exchange", "sync", "ncmec"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _digest(url: str, tmp: Path) -> tuple[int, str]:
    """(matchable entries, digest of their ids and signals) of the bank."""
    from tipline.config import Settings
    from tipline.services import banks
    from tipline.services.database import open_database

    db = open_database(url, settings=Settings(data_dir=tmp, database_url=url), migrate=False)
    h = hashlib.sha256()
    n = 0
    try:
        rows = sorted(
            (e.entry_id, tuple(sorted(f"{s.type}:{s.value}" for s in e.signals)))
            for e in banks.iter_bank_entries(db, "ncmec")
            if not e.disabled
        )
    finally:
        db.close()
    for entry_id, signals in rows:
        h.update(entry_id.encode() + b"\0" + "\0".join(signals).encode() + b"\n")
        n += 1
    return n, h.hexdigest()


def _anchor(source: str) -> tuple[float, int]:
    """Bare fetch + parse of every page: (seconds, entries)."""
    from _ncmec_server import PASSWORD, T0, USER
    from tipline.services.exchanges.http import Fetcher
    from tipline.services.exchanges.model import ExchangeSpec
    from tipline.services.exchanges.ncmec import NcmecAdapter

    spec = ExchangeSpec(
        "anchor", "ncmec", "x",
        {"url": source, "username": USER, "start": T0, "window_seconds": 86_400},
    )  # fmt: skip
    adapter = NcmecAdapter(spec, Fetcher("anchor"), password=PASSWORD)
    started = time.monotonic()
    n = sum(len(p.deltas) for p in adapter.fetch(None))
    adapter.close()
    return time.monotonic() - started, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    print(f"database: {'PostgreSQL' if pg else 'SQLite (no TIPLINE_TEST_POSTGRES_URL)'}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        full_digest = None
        for size in (args.small, args.entries):
            with _source(size) as source, _database(pg, tmp, f"s{size}") as url:
                anchor_s, anchor_n = _anchor(source)
                _configure(url, tmp, source)
                code, wall, cpu, rss = _run_sync(url, tmp)
                if code != 0:
                    sys.exit(f"sync of {size} entries failed with status {code}")
                print(
                    f"{size:>9,} entries: {size / wall:8,.0f} entries/s ({wall:7.1f} s wall, "
                    f"{cpu:7.1f} s CPU), peak RSS {rss / 2**20:6.0f} MiB; bare fetch+parse "
                    f"{anchor_n / anchor_s:8,.0f} entries/s -> sync/anchor "
                    f"{(size / wall) / (anchor_n / anchor_s):.2f}"
                )
                if size == args.entries:
                    full_digest = _digest(url, tmp)
        rng = random.Random(args.seed)
        with _source(args.entries) as source, _database(pg, tmp, "killed") as url:
            _configure(url, tmp, source)
            pages = max(2, args.entries // 1000)
            delay = rng.uniform(0.2, 0.8)
            from _ncmec_server import PASSWORD

            env = {**os.environ, "TIPLINE_DATABASE_URL": url, "TIPLINE_DATA_DIR": tmpdir}
            env[ENV] = PASSWORD
            cmd = [sys.executable, "-m", "tipline.cli.main", "exchange", "sync", "ncmec"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
            # kill at a random moment: a random fraction of the uninterrupted sync's time
            time.sleep(delay * wall)
            proc.kill()
            proc.wait()
            resumed = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
            killed_digest = _digest(url, tmp)
            same = killed_digest == full_digest
            print(
                f"SIGKILL after {delay:.0%} of the sync ({pages:,} pages), resumed "
                f"(exit {resumed.returncode}): {killed_digest[0]:,} matchable entries, "
                f"{'identical to' if same else 'DIFFERENT from'} the uninterrupted sync"
            )
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
