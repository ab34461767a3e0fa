"""Service benchmark: a load generator on loopback against a real ``tipline serve``.

Builds a bank of N PDQ hashes (1,000,000 by default) in PostgreSQL, starts
``tipline serve --workers 2`` on 127.0.0.1, and measures:

* ``GET /v1/health`` requests/s: the floor (the HTTP stack with no work), the anchor
  the other rates are compared with (ratio = rate / floor);
* ``GET /m/raw_lookup`` (HMA-compatible hash lookup) requests/s, p50 and p99 latency,
  with upload-path traffic (1% of the queries are bank hashes with up to 8 flipped
  bits, the rest random: known material is rare) and again with 50% matches (each
  match reads its entry and bank from the database);
* ``POST /v1/match`` of 3-megapixel JPEGs (upload, decode, hash, match) requests/s
  and p99;
* each worker's RSS after the first 10,000 lookups and after 100,000 (growth %).

The load generator is a small asyncio HTTP/1.1 keep-alive client (pre-built requests,
no parsing beyond Content-Length) so that it costs the machine as little as possible;
it runs on the same two cores as the server.

Usage::

    python bench/service.py --quick                  # 20k bank, short runs (~1 min)
    python bench/service.py                          # 1M bank, the issue's targets
    TIPLINE_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/service.py

Without a PostgreSQL URL (``TIPLINE_BENCH_POSTGRES_URL`` or
``TIPLINE_TEST_POSTGRES_URL``) it falls back to SQLite and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
TARGET_LOOKUP_RPS = 1000.0
TARGET_LOOKUP_P99_MS = 20.0
TARGET_UPLOAD_RPS = 80.0
TARGET_RSS_GROWTH = 10.0
_IMAGE_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))


# -- setup --------------------------------------------------------------------------------


@contextmanager
def database(url: str | None, tmp: Path) -> Iterator[tuple[str, str]]:
    """(URL, kind) of a fresh database: a PostgreSQL schema or a SQLite file."""
    if url is None:
        yield f"sqlite:///{tmp / 'bench.db'}", "sqlite"
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}", "postgresql"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def random_hashes(n: int, seed: int) -> np.ndarray:
    """``n`` random 256-bit hashes as an (n, 32) uint8 array."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)


def photos(count: int, tmp: Path) -> list[bytes]:
    """``count`` distinct 3-megapixel (2048x1536) JPEGs made from benign wallpapers."""
    from PIL import Image, ImageOps

    sources = sorted(
        p
        for d in _IMAGE_DIRS
        if d.is_dir()
        for p in d.rglob("*")
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    out: list[bytes] = []
    rnd = random.Random(7)
    for i in range(count):
        if sources:
            with Image.open(sources[i % len(sources)]) as im:
                base = im.convert("RGB")
        else:
            base = Image.effect_noise((512, 384), 60).convert("RGB")
        if i >= len(sources):
            base = ImageOps.mirror(base).rotate(rnd.choice((0, 90, 180)), expand=True)
        pic = ImageOps.fit(base, (2048, 1536))
        buf = io.BytesIO()
        pic.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def seed(db_url: str, data_dir: Path, hashes: np.ndarray, pictures: list[bytes]) -> str:
    """Migrate, create a bank with ``hashes`` + the pictures' signals; return a key.

    Entries go in through the bank repository's batched insert (COPY on PostgreSQL),
    50,000 per transaction.
    """
    from tipline.banks.model import BankSignal
    from tipline.config import Settings
    from tipline.services import banks
    from tipline.services.auth import Role, create_key
    from tipline.services.database import open_database
    from tipline.signals.hashing import HashOptions, hash_bytes
    from tipline.store import bank_repository
    from tipline.store.db import transaction

    settings = Settings(data_dir=data_dir, database_url=db_url)
    db = open_database(db_url, settings=settings)
    try:
        banks.create_bank(db, "bench", description="random PDQ hashes")
        values = [row.tobytes().hex() for row in hashes]
        for i, data in enumerate(pictures[: len(pictures) // 2]):
            result = hash_bytes(data, f"p{i}", HashOptions(signals=("pdq",)))
            values.append(result.signals[0].value)
        started = time.perf_counter()
        with db.sessions() as session:
            bank_id = bank_repository.get_bank(session, "bench").id
        for at in range(0, len(values), 50_000):
            batch = [
                bank_repository.NewEntry(f"e{at + j}", (BankSignal("pdq", v),), (), "bench")
                for j, v in enumerate(values[at : at + 50_000])
            ]
            with transaction(db.sessions) as session:
                bank_repository.insert_entries(session, bank_id, batch)
        if db.engine.dialect.name == "postgresql":
            # Planner statistics and a vacuumed, checkpointed table, as a live database has
            # them: with no statistics the matcher's catch-up query scans the whole signals
            # table, and an autovacuum or checkpoint of the bulk load would run during
            # the measurements.
            with db.engine.connect() as conn:
                auto = conn.execution_options(isolation_level="AUTOCOMMIT")
                auto.exec_driver_sql("VACUUM ANALYZE")
                auto.exec_driver_sql("CHECKPOINT")
        elapsed = time.perf_counter() - started
        print(f"seeded {len(values):,} entries in {elapsed:.1f} s", flush=True)
        with transaction(db.sessions) as session:
            return create_key(session, name="bench", role=Role.ADMIN).secret
    finally:
        db.close()


def hash_rate(pictures: list[bytes], seconds: float = 3.0) -> float:
    """Pictures hashed per second in this process (one core): the ceiling anchor for
    upload-and-match, which cannot beat hashing alone on the same cores."""
    from tipline.signals.hashing import HashOptions, hash_bytes

    hash_bytes(pictures[0], "warm-up", HashOptions())
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        hash_bytes(pictures[done % len(pictures)], "x", HashOptions())
        done += 1
    return done / (time.perf_counter() - started)


def free_port() -> int:
    """A TCP port free on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    db_url: str, data_dir: Path, workers: int
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``tipline serve`` on a free port; yields (port, process) once healthy."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_DATA_DIR": str(data_dir),
        "TIPLINE_MATCH_POLL_SECONDS": "1.0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "tipline.cli.main", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    try:
        started = time.perf_counter()
        while True:
            if process.poll() is not None:
                raise SystemExit((data_dir / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(
            f"server up (index built/opened) in {time.perf_counter() - started:.1f} s", flush=True
        )
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# -- load generator -----------------------------------------------------------------------


@dataclass
class Run:
    """One measured run: requests, seconds, latencies (s), non-2xx count."""

    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds."""
        return float(np.percentile(np.array(self.latencies), q)) * 1000


async def _conn_loop(port: int, requests: list[bytes], lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for req in requests:
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status >= 300:
                errors[0] += 1
    finally:
        writer.close()


def load(port: int, requests: list[bytes], concurrency: int) -> Run:
    """Send ``requests`` over ``concurrency`` keep-alive connections; time them."""
    shares = [requests[i::concurrency] for i in range(concurrency)]
    lat: list[float] = []
    errors = [0]

    async def main() -> None:
        await asyncio.gather(*(_conn_loop(port, s, lat, errors) for s in shares if s))

    started = time.perf_counter()
    asyncio.run(main())
    return Run(len(requests), time.perf_counter() - started, lat, errors[0])


def get(path: str, key: str | None = None) -> bytes:
    """A GET request's bytes."""
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()


def post(path: str, key: str, body: bytes) -> bytes:
    """A POST request's bytes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def lookup_requests(
    hashes: np.ndarray, count: int, key: str, seed: int, hit_ratio: float
) -> list[bytes]:
    """``hit_ratio`` of the queries are bank hashes with 0-8 flipped bits (matches), the
    rest random hashes (no match)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if rng.random() < hit_ratio:
            h = hashes[int(rng.integers(len(hashes)))].copy()
            for bit in rng.choice(256, size=int(rng.integers(0, 9)), replace=False):
                h[bit // 8] ^= 1 << (bit % 8)
        else:
            h = rng.integers(0, 256, size=32, dtype=np.uint8)
        out.append(get(f"/m/raw_lookup?signal_type=pdq&signal={h.tobytes().hex()}", key))
    return out


def worker_rss(process: subprocess.Popen[bytes]) -> dict[int, float]:
    """RSS in MiB of each uvicorn worker (children of the serve process)."""
    import psutil

    parent = psutil.Process(process.pid)
    out = {}
    for child in parent.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):  # uvicorn workers, not helpers
                out[child.pid] = child.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return out


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small bank, short runs")
    parser.add_argument("--bank", type=int, help="bank size (hashes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="connections")
    parser.add_argument("--hit-ratio", type=float, default=0.01, help="share of lookups that match")
    parser.add_argument("--sqlite", action="store_true", help="use SQLite, not PostgreSQL")
    args = parser.parse_args()
    size = args.bank or (20_000 if args.quick else 1_000_000)
    first, total = (1_000, 10_000) if args.quick else (10_000, 100_000)
    uploads = 120 if args.quick else 800
    pg = (
        None
        if args.sqlite
        else (
            os.environ.get("TIPLINE_BENCH_POSTGRES_URL")
            or os.environ.get("TIPLINE_TEST_POSTGRES_URL")
        )
    )
    cores = min(args.workers, os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="tipline-bench-service-"))
    try:
        with database(pg, tmp) as (db_url, kind):
            print(f"database: {kind}; bank: {size:,} PDQ hashes; workers: {args.workers}")
            hashes = random_hashes(size, seed=1)
            pictures = photos(8, tmp)
            key = seed(db_url, tmp, hashes, pictures)
            per_core = hash_rate(pictures)
            with serve(db_url, tmp, args.workers) as (port, process):
                # Warm-up: every worker compiles/opens its index before timing.
                load(port, lookup_requests(hashes, 400, key, 2, 0.5), args.concurrency)
                load(port, [post("/v1/match", key, p) for p in pictures] * 2, 4)
                floor = load(port, [get("/v1/health")] * (total // 10), args.concurrency)
                early = load(
                    port, lookup_requests(hashes, first, key, 3, args.hit_ratio), args.concurrency
                )
                rss_first = worker_rss(process)
                late = load(
                    port,
                    lookup_requests(hashes, total - first, key, 4, args.hit_ratio),
                    args.concurrency,
                )
                rss_last = worker_rss(process)
                half = load(port, lookup_requests(hashes, first, key, 5, 0.5), args.concurrency)
                up_reqs = [
                    post("/v1/match", key, pictures[i % len(pictures)]) for i in range(uploads)
                ]
                upload = load(port, up_reqs, 8)
        lookups = Run(
            early.requests + late.requests,
            early.seconds + late.seconds,
            early.latencies + late.latencies,
            early.errors + late.errors,
        )
        growth = {
            pid: 100.0 * (rss_last[pid] - rss_first[pid]) / rss_first[pid]
            for pid in rss_first
            if pid in rss_last
        }
        rows = [
            ("health (floor)", f"{floor.rps:,.0f} req/s", "", "1.00"),
            (
                f"raw_lookup {args.hit_ratio:.0%} hits",
                f"{lookups.rps:,.0f} req/s",
                f">= {TARGET_LOOKUP_RPS:,.0f}",
                f"{lookups.rps / floor.rps:.2f}",
            ),
            ("raw_lookup p50", f"{lookups.pct(50):.1f} ms", "", ""),
            ("raw_lookup p99", f"{lookups.pct(99):.1f} ms", f"<= {TARGET_LOOKUP_P99_MS:.0f}", ""),
            (
                "raw_lookup 50% hits",
                f"{half.rps:,.0f} req/s, p99 {half.pct(99):.1f} ms",
                "",
                f"{half.rps / floor.rps:.2f}",
            ),
            (
                "match 3 MP JPEG",
                f"{upload.rps:,.1f} req/s",
                f">= {TARGET_UPLOAD_RPS:.0f}",
                f"{upload.rps / floor.rps:.3f}",
            ),
            ("match p99", f"{upload.pct(99):.0f} ms", "", ""),
            (
                "hashing alone",
                f"{per_core:,.1f} img/s/core (x{cores} = {per_core * cores:,.1f})",
                "",
                f"match/hashing ceiling {upload.rps / (per_core * cores):.2f}",
            ),
        ]
        for pid in sorted(growth):
            rows.append(
                (
                    f"worker {pid} RSS",
                    f"{rss_first[pid]:.0f} -> {rss_last[pid]:.0f} MiB ({growth[pid]:+.1f}%)",
                    f"<= +{TARGET_RSS_GROWTH:.0f}%",
                    f"after {first:,} / {total:,} lookups",
                )
            )
        errors = lookups.errors + upload.errors + floor.errors + half.errors
        print()
        print(f"{'metric':<22} {'value':<32} {'target':<10} ratio to floor / note")
        for name, value, target, note in rows:
            print(f"{name:<22} {value:<32} {target:<10} {note}")
        print(f"non-2xx responses: {errors}")
        ok = (
            lookups.rps >= TARGET_LOOKUP_RPS
            and lookups.pct(99) <= TARGET_LOOKUP_P99_MS
            and upload.rps >= TARGET_UPLOAD_RPS
            and all(g <= TARGET_RSS_GROWTH for g in growth.values())
            and errors == 0
        )
        print("targets met" if ok else "targets NOT met")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
