"""Report pipeline benchmark: confirmed decisions -> CyberTipline reports built,
validated against NCMEC's XSD, preserved in the evidence vault and delivered over ISPWS
(submit, upload, fileinfo, finish) to a local receiver on 127.0.0.1, each report with
one ~1 MB JPEG.

Phases (the same N reports):

* setup (untimed): what matching and review leave behind: a submission per report
  with its media in the vault and, unless ``--no-recorded-digests``, the MD5, SHA-1 and
  SHA-256 signals the matcher computed, and a confirmed decision;
* ``build``: ``batch.create_from_decisions`` in batches of ``--batch`` decisions (one
  transaction per batch, two batches in progress at once; per report: read the media
  back from the vault, MD5 + SHA-1, build the XML, XSD validation, XML preserved in the
  vault, outbox row) on ``--workers`` threads; ``--batch 1``: ``create_from_decision``
  per report on ``--workers`` threads (one transaction each, as the API does);
* ``deliver``: the outbox delivers every report (``--in-flight`` reports at once, their
  steps group-committed) to a receiver in its own process (so it does not share this
  process's GIL) that validates every XML body against the XSD and MD5s every upload.

The anchor, measured in the same run: the bare protocol (the same ISPWS client, same
files, same receiver; no database, no vault, no outbox), reports/s.

Printed: reports/s per phase and end to end (N / (build + deliver)), the ratio to the
anchor, CPU ms per report of this process and of the receiver's, SQL statements and
commits per report (counted by an engine event listener; the audit chain's pipelined
appends run on the raw driver connection and are not counted), the machine's CPU use
during each phase, and the share of the pipeline's time spent in XSD validation.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/reports.py [--reports 400] [--workers 4] [--in-flight 8]

Without a PostgreSQL URL it falls back to SQLite and says so.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

TARGET_RPS = 100.0
_IMAGE_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))


def _jpeg_about_1mb(seed: int = 7) -> bytes:
    """A benign JPEG of about 1 MB: the largest wallpaper installed, re-encoded to size
    (generated noise art when none is installed)."""
    from PIL import Image

    candidates = [
        path
        for folder in _IMAGE_DIRS
        if folder.is_dir()
        for path in folder.rglob("*")
        if path.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    image = None
    for path in sorted(candidates, key=lambda p: p.stat().st_size, reverse=True)[:5]:
        try:
            image = Image.open(path).convert("RGB")
            break
        except OSError:
            continue
    if image is None:
        random.seed(seed)
        image = Image.effect_noise((1600, 1200), 64).convert("RGB")
    if image.width < 2000:
        image = image.resize((2400, int(2400 * image.height / image.width)))
    best = b""
    for quality in (97, 95, 92, 90, 85, 80, 70):
        for scale in (1.0, 0.8, 0.6, 0.45):
            size = (max(64, int(image.width * scale)), max(64, int(image.height * scale)))
            buf = io.BytesIO()
            image.resize(size).save(buf, "JPEG", quality=quality)
            data = buf.getvalue()
            if abs(len(data) - 1_000_000) < abs(len(best) - 1_000_000):
                best = data
    return best


def _receiver(conn: object, hold: float) -> None:
    """Child process: serve ISPWS until told to stop; answers "cpu" with its CPU seconds
    so far, and "stop" with its counters."""
    from _ispws_server import ispws_server

    with ispws_server() as rx:
        conn.send((rx.url, rx.username, rx.password))  # type: ignore[attr-defined]
        while conn.recv() == "cpu":  # type: ignore[attr-defined]
            conn.send(time.process_time())  # type: ignore[attr-defined]
        finished = sum(1 for r in rx.receiver.reports.values() if r.finished)
        conn.send((finished, len(rx.receiver.reports), len(rx.receiver.rejections)))  # type: ignore[attr-defined]


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


class _Backends:
    """CPU seconds of this run's PostgreSQL server processes (the backends serving its
    connections, found by their application_name; read from /proc, so only for a local
    server). Not counted: PostgreSQL's shared processes (WAL writer, checkpointer), which
    serve every session on the machine, and backends that closed within a phase."""

    def __init__(self, admin_url: str | None, application: str) -> None:
        self.engine = None
        self.application = application
        if admin_url:
            from sqlalchemy import create_engine

            self.engine = create_engine(admin_url, poolclass=_null_pool())

    def sample(self) -> dict[int, float]:
        if self.engine is None:
            return {}
        from sqlalchemy import text

        with self.engine.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                {"a": self.application},
            ).scalars()
            out = {}
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                out[int(pid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _null_pool():  # type: ignore[no-untyped-def]
    from sqlalchemy.pool import NullPool

    return NullPool


class _Meter:
    """Wall time, this process's CPU, the receiver's CPU, this run's PostgreSQL
    backends' CPU, the machine's busy share and the SQL statements and commits of one
    phase."""

    def __init__(self, receiver: object, sql: dict[str, int], backends: _Backends) -> None:
        self.receiver = receiver
        self.sql = sql
        self.backends = backends

    def __enter__(self) -> _Meter:
        self.pg0 = self.backends.sample()
        self.receiver.send("cpu")  # type: ignore[attr-defined]
        self.rx0 = self.receiver.recv()  # type: ignore[attr-defined]
        self.sql0 = dict(self.sql)
        self.m0 = _machine_cpu()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        m1 = _machine_cpu()
        total = m1[1] - self.m0[1]
        self.machine_busy = (m1[0] - self.m0[0]) / total if total else 0.0
        self.receiver.send("cpu")  # type: ignore[attr-defined]
        self.rx_cpu = self.receiver.recv() - self.rx0  # type: ignore[attr-defined]
        self.statements = self.sql["statements"] - self.sql0["statements"]
        self.pg_cpu = self.backends.spent(self.pg0, self.backends.sample())
        self.commits = self.sql["commits"] - self.sql0["commits"]


@contextmanager
def _database() -> Iterator[tuple[str, str, str | None, str]]:
    """(URL of a fresh schema, backend's name, the server's own URL, the
    application_name this run's connections carry)."""
    from sqlalchemy import create_engine, text

    url = os.environ.get("TIPLINE_BENCH_POSTGRES_URL") or os.environ.get(
        "TIPLINE_TEST_POSTGRES_URL"
    )
    if not url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db", "SQLite (no PostgreSQL URL set)", None, ""
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield (
            f"{url}{sep}options=-csearch_path%3D{schema}&application_name={schema}",
            "PostgreSQL",
            url,
            schema,
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=400)
    parser.add_argument("--workers", type=int, default=4, help="threads building reports")
    parser.add_argument("--in-flight", type=int, default=8, help="reports delivered at once")
    parser.add_argument(
        "--deliver-processes",
        type=int,
        default=1,
        help="processes delivering at once (as several `tipline worker`s), sharing --in-flight",
    )
    parser.add_argument(
        "--recorded-digests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="submissions carry the MD5/SHA-1/SHA-256 the matcher computed at match time "
        "(the build then does not decrypt and hash the media)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=50,
        help="decisions per build transaction (1: one report per transaction, as the API)",
    )
    args = parser.parse_args()

    from pydantic import SecretStr
    from sqlalchemy import event

    from tipline.config import Settings
    from tipline.services import vault as v
    from tipline.services.auth import Principal, Role
    from tipline.services.reports import batch, builder, service
    from tipline.services.reports.client import IspwsClient
    from tipline.services.reports.facts import ReviewFacts
    from tipline.services.reports.outbox import DeliveryStats
    from tipline.store import submissions as sub
    from tipline.store.db import make_engine, session_factory, transaction, upgrade
    from tipline.store.models import import_all_models

    jpeg = _jpeg_about_1mb()
    n = args.reports
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, 1.0), daemon=True)
    proc.start()
    url, username, password = parent.recv()

    # validation share: time inside the builder's XSD check, all threads
    # (wall time inside the validator, CPU time of the validating thread)
    validate_seconds = [0.0, 0.0]
    lock = threading.Lock()
    original = builder.validate_tree

    def timed_validate(root: object) -> None:
        t, c = time.perf_counter(), time.thread_time()
        try:
            original(root)  # type: ignore[arg-type]
        finally:
            with lock:
                validate_seconds[0] += time.perf_counter() - t
                validate_seconds[1] += time.thread_time() - c

    builder.validate_tree = timed_validate  # type: ignore[assignment]

    with (
        _database() as (db_url, backend, server_url, application),
        tempfile.TemporaryDirectory() as data_dir,
    ):
        backends = _Backends(server_url, application)
        settings = Settings(
            data_dir=Path(data_dir),
            database_url=db_url,
            vault_master_key=SecretStr(base64.b64encode(os.urandom(32)).decode()),
            report_reporter_email="reports@example.org",
            report_platform="bench",
            report_ispws_url=url,
            report_ispws_username=username,
            report_ispws_password=SecretStr(password),
        )
        import_all_models()
        engine = make_engine(settings=settings)
        upgrade(engine)
        sessions = session_factory(engine)
        vault = v.Vault.from_settings(settings)
        evidence = service.evidence_from_settings(sessions, settings)
        who = Principal("bench", Role.ADMIN)

        # untimed: what matching and review leave behind (media in the vault, decisions)
        decisions: list[str] = []
        t0 = time.perf_counter()
        with transaction(sessions) as session:
            for i in range(n):
                media = jpeg + i.to_bytes(4, "big")  # distinct bytes, trailing after EOI
                signals = (
                    [
                        {"type": name, "value": hashlib.new(name, media).hexdigest()}
                        for name in ("md5", "sha1", "sha256")
                    ]
                    if args.recorded_digests
                    else []
                )
                row = sub.create_submission(
                    session,
                    tenant=None,
                    signals=signals,
                    content_id=f"c{i}",
                    created_by="bench",
                    uploader_account=f"user-{i}",
                    upload_ip="192.0.2.7",
                    upload_port=40000 + i % 20000,
                    uploaded_at=datetime(2026, 11, 1, tzinfo=UTC),
                )
                v.store(
                    session,
                    vault,
                    media,
                    kind=v.EvidenceKind.MEDIA,
                    actor="bench",
                    filename=f"photo-{i}.jpg",
                    submission_id=row.id,
                )
                decisions.append(
                    sub.add_decision(
                        session,
                        None,
                        row.id,
                        sub.DecisionKind.CONFIRMED,
                        decided_by="bench",
                        facts=ReviewFacts(viewed=i % 2 == 0).as_json(),
                    ).id
                )
        setup = time.perf_counter() - t0

        sql = {"statements": 0, "commits": 0}

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(*_: object) -> None:
            sql["statements"] += 1

        @event.listens_for(engine, "commit")
        def _commit(*_: object) -> None:
            sql["commits"] += 1

        if args.batch > 1:
            # batches of decisions, one transaction each; two batches in progress at once
            # (one commits while the other builds), each building on --workers threads
            chunks = [decisions[i : i + args.batch] for i in range(0, n, args.batch)]

            def build_chunk(chunk: list[str]) -> None:
                outcomes = batch.create_from_decisions(
                    sessions,
                    who,
                    chunk,
                    settings=settings,
                    evidence=evidence,
                    batch_size=len(chunk),
                    threads=args.workers,
                )
                failed = [o.error for o in outcomes if o.error]
                if failed:
                    raise SystemExit(f"build failed: {failed[0]}")

            with _Meter(parent, sql, backends) as build, ThreadPoolExecutor(2) as pool:
                list(pool.map(build_chunk, chunks))
        else:
            with _Meter(parent, sql, backends) as build, ThreadPoolExecutor(args.workers) as pool:
                list(
                    pool.map(
                        lambda d: service.create_from_decision(
                            sessions, who, d, settings=settings, evidence=evidence
                        ),
                        decisions,
                    )
                )

        if args.deliver_processes > 1:
            # several delivering processes (as several `tipline worker`s): the outbox
            # leases each report to one of them; each holds its share of --in-flight
            per = max(1, args.in_flight // args.deliver_processes)
            spec = {
                "data_dir": data_dir,
                "database_url": db_url,
                "key": settings.vault_master_key.get_secret_value(),  # type: ignore[union-attr]
                "url": url,
                "username": username,
                "password": password,
                "in_flight": per,
            }
            with (
                _Meter(parent, sql, backends) as deliver,
                ctx.Pool(args.deliver_processes) as procs,
            ):
                results = procs.map(_deliver_process, [spec] * args.deliver_processes)
            stats = DeliveryStats()
            for counts, cpu in results:
                stats.add(**counts)
                deliver.cpu += cpu  # the children's CPU is the client's
            deliver.statements = deliver.commits = -1  # counted in the children: not shown
        else:
            with _Meter(parent, sql, backends) as deliver:
                stats = service.deliver(
                    sessions, settings=settings, evidence=evidence, workers=args.in_flight
                )

        # anchor: the bare protocol, same client, files and receiver
        client = IspwsClient(url, username, password, timeout=60)
        xml = builder.build_report(_anchor_content(jpeg))

        def bare(i: int) -> None:
            data = jpeg + (n + i).to_bytes(4, "big")
            rid = client.submit(xml)
            answer = client.upload(rid, f"anchor-{i}.jpg", data)
            details = builder.build_file_details(
                _anchor_file(data), report_id=rid, file_id=answer.file_id or ""
            )
            client.fileinfo(details)
            client.finish(rid)

        with _Meter(parent, sql, backends) as anchor, ThreadPoolExecutor(args.in_flight) as pool:
            list(pool.map(bare, range(n)))
        client.close()
        engine.dispose()
        backends.close()

    parent.send("stop")
    finished, total, rejections = parent.recv()
    proc.join(timeout=10)
    builder.validate_tree = original  # type: ignore[assignment]

    pipeline = build.wall + deliver.wall
    rate = n / pipeline
    anchor_rate = n / anchor.wall
    print(
        f"report pipeline, {n} reports of one {len(jpeg) / 1e6:.2f} MB JPEG each, "
        f"build on {args.workers} threads in batches of {args.batch}, "
        f"digests recorded at match time: {'yes' if args.recorded_digests else 'no'}, "
        f"{args.in_flight} reports in flight in {args.deliver_processes} process(es), {backend}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), uptime: {_uptime()}")
    print(
        "CPU ms per report: 'client' is this process, 'receiver' the receiver's own "
        "process; 'busy' is the whole machine's CPU use during the phase"
    )
    head = (
        f"{'phase':<30}{'seconds':>8}{'reports/s':>10}{'client':>8}{'receiver':>9}{'PG':>6}"
        f"{'SQL/rep':>8}{'commits/rep':>12}{'busy':>6}"
    )
    print(head)
    print(f"{'setup (media to vault, ...)':<30}{setup:>8.2f}{n / setup:>10.1f}")
    rows = [
        ("build (+XSD, vault, outbox)", build),
        ("deliver (ISPWS, 4 calls/rep)", deliver),
        ("anchor: bare ISPWS protocol", anchor),
    ]
    for name, m in rows:
        sql_columns = (
            f"{m.statements / n:>8.1f}{m.commits / n:>12.2f}"
            if m.statements >= 0
            else f"{'n/a':>8}{'n/a':>12}"
        )
        print(
            f"{name:<30}{m.wall:>8.2f}{n / m.wall:>10.1f}{1000 * m.cpu / n:>8.1f}"
            f"{1000 * m.rx_cpu / n:>9.1f}{1000 * m.pg_cpu / n:>6.1f}{sql_columns}"
            f"{100 * m.machine_busy:>5.0f}%"
        )
    client_cpu = build.cpu + deliver.cpu
    rx_cpu = build.rx_cpu + deliver.rx_cpu
    pg_cpu = build.pg_cpu + deliver.pg_cpu
    print(
        f"{'end to end (build + deliver)':<30}{pipeline:>8.2f}{rate:>10.1f}"
        f"{1000 * client_cpu / n:>8.1f}{1000 * rx_cpu / n:>9.1f}{1000 * pg_cpu / n:>6.1f}"
    )
    # what the CPU per report allows on this machine's cores when nothing else runs: the
    # figure that does not depend on the other sessions' load (wall-clock rates do)
    cores = os.cpu_count() or 1
    per_report = (client_cpu + rx_cpu + pg_cpu) / n
    anchor_per_report = (anchor.cpu + anchor.rx_cpu) / n
    print(
        f"CPU per report, end to end: {1000 * per_report:.1f} ms (client "
        f"{1000 * client_cpu / n:.1f} + receiver {1000 * rx_cpu / n:.1f} + PostgreSQL backends "
        f"{1000 * pg_cpu / n:.1f}); projected on {cores} idle cores: "
        f"{cores / per_report:.0f} reports/s if every part ran in parallel, one delivering "
        f"process at most ~{n / max(deliver.cpu, 1e-9):.0f}/s (its CPU, one interpreter); "
        f"the bare protocol's {1000 * anchor_per_report:.1f} ms alone: "
        f"{cores / anchor_per_report:.0f}/s"
    )
    print(
        f"ratio to the anchor: {rate / anchor_rate:.2f}; target >= {TARGET_RPS:.0f}/s: "
        f"{'met' if rate >= TARGET_RPS else 'NOT met'}"
    )
    print(
        f"receiver's share of the CPU the pipeline used (client + receiver): "
        f"{100 * rx_cpu / (client_cpu + rx_cpu):.0f}% (PostgreSQL not counted)"
    )
    print(
        f"XSD validation: {1000 * validate_seconds[1] / n:.2f} ms CPU per report, "
        f"{100 * validate_seconds[1] / client_cpu:.1f}% of the pipeline's client CPU; "
        f"{validate_seconds[0]:.2f} s of wall time inside the validator summed over threads "
        f"(waits for the GIL and a CPU included), {100 * validate_seconds[0] / pipeline:.1f}% "
        "of the pipeline's wall time"
    )
    print(
        f"delivery: {stats.finished} finished, {stats.failed} failed, {stats.retries} retries, "
        f"{stats.calls} calls, {stats.transactions} group transactions "
        f"({stats.calls / max(1, stats.transactions):.1f} calls each); the thread committing "
        f"them used {1000 * stats.commit_cpu_seconds / n:.1f} ms CPU per report"
    )
    print(f"receiver: {finished} finished of {total} opened, {rejections} schema rejections")
    if finished != 2 * n or stats.finished != n or rejections:
        raise SystemExit("benchmark run was not clean")


def _deliver_process(spec: dict[str, object]) -> tuple[dict[str, int], float]:
    """Child process: deliver what the outbox holds; (counts, this process's CPU s)."""
    from pydantic import SecretStr

    from tipline.config import Settings
    from tipline.services.reports import service
    from tipline.store.db import make_engine, session_factory

    settings = Settings(
        data_dir=Path(str(spec["data_dir"])),
        database_url=str(spec["database_url"]),
        vault_master_key=SecretStr(str(spec["key"])),
        report_reporter_email="reports@example.org",
        report_platform="bench",
        report_ispws_url=str(spec["url"]),
        report_ispws_username=str(spec["username"]),
        report_ispws_password=SecretStr(str(spec["password"])),
    )
    engine = make_engine(settings=settings)
    try:
        stats = service.deliver(
            session_factory(engine), settings=settings, workers=int(str(spec["in_flight"]))
        )
    finally:
        engine.dispose()
    counts = {
        "finished": stats.finished,
        "failed": stats.failed,
        "retries": stats.retries,
        "calls": stats.calls,
        "transactions": stats.transactions,
    }
    return counts, time.process_time()


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def _anchor_content(jpeg: bytes):  # type: ignore[no-untyped-def]
    from tipline.services.reports.model import IncidentType, ReportContent, Reporter

    return ReportContent(
        report_id="anchor",
        incident_type=IncidentType.CHILD_PORNOGRAPHY,
        incident_at=datetime(2026, 11, 1, tzinfo=UTC),
        reporter=Reporter(email="reports@example.org"),
        files=(_anchor_file(jpeg),),
    )


def _anchor_file(data: bytes):  # type: ignore[no-untyped-def]
    import hashlib

    from tipline.services.reports.model import ReportedFile

    return ReportedFile(
        file_name="anchor.jpg",
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        viewed_by_esp=False,
        exif_viewed_by_esp=False,
    )


if __name__ == "__main__":
    main()
