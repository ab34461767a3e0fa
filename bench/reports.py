"""Report pipeline benchmark: confirmed decisions -> CyberTipline reports built,
validated against NCMEC's XSD, preserved in the evidence vault and delivered over ISPWS
(submit, upload, fileinfo, finish) to a local receiver on 127.0.0.1, each report with
one ~1 MB JPEG.

Phases (the same N reports):

* setup (untimed): what matching and review leave behind: a submission per report
  with its media in the vault and, unless ``--no-recorded-digests``, the MD5, SHA-1 and
  SHA-256 signals the matcher computed, and a confirmed decision (then ``os.sync()``,
  so the setup's gigabytes of media are not still being written while a phase is timed);
* ``build``: ``batch.create_from_decisions`` in batches of ``--batch`` decisions (one
  transaction per batch, two batches in progress at once; per report: read the media
  back from the vault, MD5 + SHA-1, build the XML, XSD validation, XML preserved in the
  vault, outbox row) on ``--workers`` threads; ``--batch 1``: ``create_from_decision``
  per report on ``--workers`` threads (one transaction each, as the API does);
* ``deliver``: the outbox delivers every report (``--in-flight`` reports at once, their
  steps group-committed) to a receiver in its own process (so it does not share this
  process's GIL) that validates every XML body against the XSD and MD5s every upload.
* ``overlapped`` (``--mode overlap`` or ``both``, the default; its own N decisions):
  another process builds the reports exactly as ``build`` does (as the API's
  ``POST /v1/reports/batch`` or ``tipline report create-many`` would, beside a worker)
  while this process delivers each batch as soon as it is committed, with the same
  outbox runner as ``tipline worker``'s delivery job (not ending when the outbox is
  momentarily empty); timed from the build's start (the building process started and
  imported before) to the last report finished; its CPU counts as the client's.

``--mode sequential`` is build then deliver only: end to end = N / (build + deliver).

The anchor, measured in the same run: the bare protocol (the same ISPWS client, same
files, same receiver; no database, no vault, no outbox), reports/s.

Printed: reports/s per phase and end to end (N / (build + deliver)), the ratio to the
anchor, CPU ms per report of this process and of the receiver's, SQL statements and
commits per report (counted by an engine event listener; the audit chain's pipelined
appends run on the raw driver connection and are not counted), the machine's CPU use
during each phase, and the share of the pipeline's time spent in XSD validation.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/reports.py [--reports 1000] [--in-flight 128] [--batch 100]

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
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from _pgcpu import Backends  # noqa: E402  (bench/ is the script's folder)

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


class _Meter:
    """Wall time, this process's CPU, the receiver's CPU, this run's PostgreSQL
    backends' CPU, the machine's busy share and the SQL statements and commits of one
    phase."""

    def __init__(self, receiver: object, sql: dict[str, int], backends: Backends) -> None:
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
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="threads building reports")
    parser.add_argument("--in-flight", type=int, default=128, help="reports delivered at once")
    parser.add_argument(
        "--mode",
        choices=("both", "sequential", "overlap"),
        default="both",
        help="sequential: build all, then deliver all; overlap: another process builds "
        "(as the API or `tipline report create-many`) while this one delivers (as "
        "`tipline worker`); both: each with its own --reports decisions",
    )
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
        default=100,
        help="decisions per build transaction (1: one report per transaction, as the API)",
    )
    args = parser.parse_args()

    from pydantic import SecretStr
    from sqlalchemy import event

    from tipline.config import Settings
    from tipline.services import vault as v
    from tipline.services.auth import Principal, Role
    from tipline.services.reports import builder, service
    from tipline.services.reports.client import IspwsClient
    from tipline.services.reports.facts import ReviewFacts
    from tipline.services.reports.outbox import DeliveryStats
    from tipline.store import submissions as sub
    from tipline.store.db import make_engine, session_factory, transaction, upgrade
    from tipline.store.models import import_all_models

    jpeg = _jpeg_about_1mb()
    n = args.reports
    sequential = args.mode in ("both", "sequential")
    overlapped = args.mode in ("both", "overlap")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, 1.0), daemon=True)
    proc.start()
    url, username, password = parent.recv()

    # validation share: time inside the builder's XSD check, all threads
    validate_seconds = _time_validation(builder)

    with (
        _database() as (db_url, backend, server_url, application),
        tempfile.TemporaryDirectory() as data_dir,
    ):
        backends = Backends(server_url, application)
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

        # untimed: what matching and review leave behind (media in the vault, decisions),
        # N decisions per mode measured
        decisions: list[str] = []
        t0 = time.perf_counter()
        with transaction(sessions) as session:
            for i in range(n * (int(sequential) + int(overlapped))):
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
        os.sync()  # the setup's media reach the disk before anything is timed

        sql = {"statements": 0, "commits": 0}

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(*_: object) -> None:
            sql["statements"] += 1

        @event.listens_for(engine, "commit")
        def _commit(*_: object) -> None:
            sql["commits"] += 1

        spec = {
            "data_dir": data_dir,
            "database_url": db_url,
            "key": settings.vault_master_key.get_secret_value(),  # type: ignore[union-attr]
            "url": url,
            "username": username,
            "password": password,
            "in_flight": max(1, args.in_flight // args.deliver_processes),
            "batch": args.batch,
            "workers": args.workers,
        }
        build = deliver = overlap = None
        stats = overlap_stats = DeliveryStats()
        validate_sequential = (0.0, 0.0)
        if sequential:
            mine = decisions[:n]
            with _Meter(parent, sql, backends) as build:
                _build_all(sessions, who, mine, settings, evidence, args.batch, args.workers)
            validate_sequential = (validate_seconds[0], validate_seconds[1])

            if args.deliver_processes > 1:
                # several delivering processes (as several `tipline worker`s): the outbox
                # leases each report to one of them; each holds its share of --in-flight
                with (
                    _Meter(parent, sql, backends) as deliver,
                    ctx.Pool(args.deliver_processes) as procs,
                ):
                    results = procs.map(_deliver_process, [spec] * args.deliver_processes)
                for counts, cpu in results:
                    stats.add(**counts)
                    deliver.cpu += cpu  # the children's CPU is the client's
                deliver.statements = deliver.commits = -1  # counted in the children
            else:
                with _Meter(parent, sql, backends) as deliver:
                    stats = service.deliver(
                        sessions, settings=settings, evidence=evidence, workers=args.in_flight
                    )

        if overlapped:
            # another process builds (as the API's batch route or `tipline report
            # create-many`) while this one delivers what is committed (as a `tipline
            # worker`): timed from the build's start to the last report finished
            mine = decisions[-n:]
            builder_end, builder_child = ctx.Pipe()
            maker = ctx.Process(target=_build_process, args=(builder_child, spec, mine))
            maker.start()
            builder_child.close()  # so the building process's end closes when it exits
            if builder_end.recv() != "ready":
                raise SystemExit("the building process did not start")
            overlap_stats, overlap = _overlapped(
                builder_end, parent, sql, backends, sessions, settings, evidence, n, args
            )
            maker.join(timeout=60)

        # anchor: the bare protocol, same client, files and receiver
        client = IspwsClient(url, username, password, timeout=60)
        xml = builder.build_report(_anchor_content(jpeg))
        base = len(decisions)

        def bare(i: int) -> None:
            data = jpeg + (base + i).to_bytes(4, "big")
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

    anchor_rate = n / anchor.wall
    print(
        f"report pipeline, {n} reports of one {len(jpeg) / 1e6:.2f} MB JPEG each per mode "
        f"({args.mode}), build on {args.workers} threads in batches of {args.batch}, "
        f"digests recorded at match time: {'yes' if args.recorded_digests else 'no'}, "
        f"{args.in_flight} reports in flight in {args.deliver_processes} process(es), {backend}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), uptime: {_uptime()}")
    print(
        "CPU ms per report: 'client' is this process (and the building process in the "
        "overlapped phase), 'receiver' the receiver's own process; 'busy' is the whole "
        "machine's CPU use during the phase"
    )
    head = (
        f"{'phase':<30}{'seconds':>8}{'reports/s':>10}{'client':>8}{'receiver':>9}{'PG':>6}"
        f"{'SQL/rep':>8}{'commits/rep':>12}{'busy':>6}"
    )
    print(head)
    print(f"{'setup (media to vault, ...)':<30}{setup:>8.2f}{len(decisions) / setup:>10.1f}")
    rows = []
    if build is not None and deliver is not None:
        rows += [("build (+XSD, vault, outbox)", build), ("deliver (ISPWS, 4 calls/rep)", deliver)]
    if overlap is not None:
        rows.append(("overlapped build + deliver", overlap))
    rows.append(("anchor: bare ISPWS protocol", anchor))
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
    cores = os.cpu_count() or 1
    anchor_per_report = (anchor.cpu + anchor.rx_cpu) / n
    ends = []
    if build is not None and deliver is not None:
        pipeline = build.wall + deliver.wall
        client_cpu = build.cpu + deliver.cpu
        rx_cpu = build.rx_cpu + deliver.rx_cpu
        pg_cpu = build.pg_cpu + deliver.pg_cpu
        print(
            f"{'end to end, build then deliver':<30}{pipeline:>8.2f}{n / pipeline:>10.1f}"
            f"{1000 * client_cpu / n:>8.1f}{1000 * rx_cpu / n:>9.1f}{1000 * pg_cpu / n:>6.1f}"
        )
        ends.append(
            (
                "build then deliver",
                pipeline,
                client_cpu,
                rx_cpu,
                pg_cpu,
                validate_sequential,
                deliver.cpu,
            )
        )
    if overlap is not None:
        ends.append(
            (
                "overlapped",
                overlap.wall,
                overlap.cpu,
                overlap.rx_cpu,
                overlap.pg_cpu,
                overlap.validated,
                overlap.cpu - overlap.child_cpu,
            )
        )
    for label, wall, client_cpu, rx_cpu, pg_cpu, validated, deliver_cpu in ends:
        rate = n / wall
        # what the CPU per report allows on this machine's cores when nothing else
        # runs: the figure that does not depend on the other sessions' load
        per_report = (client_cpu + rx_cpu + pg_cpu) / n
        print(
            f"{label}: end to end {rate:.1f} reports/s (target >= {TARGET_RPS:.0f}/s: "
            f"{'met' if rate >= TARGET_RPS else 'NOT met'}; ratio to the anchor "
            f"{rate / anchor_rate:.2f}); CPU per report {1000 * per_report:.1f} ms (client "
            f"{1000 * client_cpu / n:.1f} + receiver {1000 * rx_cpu / n:.1f} + PostgreSQL "
            f"backends {1000 * pg_cpu / n:.1f}); projected on {cores} idle cores: "
            f"{cores / per_report:.0f} reports/s if every part ran in parallel, the "
            f"delivering process at most ~{n / max(deliver_cpu, 1e-9):.0f}/s (its CPU, one "
            f"interpreter); receiver's share of client + receiver CPU "
            f"{100 * rx_cpu / (client_cpu + rx_cpu):.0f}%"
        )
        print(
            f"  XSD validation: {1000 * validated[1] / n:.2f} ms CPU per report, "
            f"{100 * validated[1] / client_cpu:.1f}% of the client's CPU; "
            f"{validated[0]:.2f} s of wall time inside the validator summed over threads "
            f"(waits for the GIL and a CPU included), {100 * validated[0] / wall:.1f}% of "
            "the wall time"
        )
    print(
        f"the bare protocol's {1000 * anchor_per_report:.1f} ms per report alone: "
        f"{cores / anchor_per_report:.0f}/s on {cores} idle cores"
    )
    phases = [("build then deliver", stats)] if deliver is not None else []
    phases += [("overlapped", overlap_stats)] if overlap is not None else []
    total_finished = 0
    for label, st in phases:
        total_finished += st.finished
        print(
            f"delivery ({label}): {st.finished} finished, {st.failed} failed, {st.retries} "
            f"retries, {st.calls} calls, {st.transactions} group transactions "
            f"({st.calls / max(1, st.transactions):.1f} calls each); the thread committing "
            f"them used {1000 * st.commit_cpu_seconds / n:.1f} ms CPU per report"
        )
    print(f"receiver: {finished} finished of {total} opened, {rejections} schema rejections")
    if finished != total_finished + n or total_finished != len(decisions) or rejections:
        raise SystemExit("benchmark run was not clean")


def _time_validation(builder: Any) -> list[float]:
    """Wrap the builder's XSD check: [wall seconds inside it summed over threads, CPU
    seconds of the validating threads], updated as reports are built."""
    seconds = [0.0, 0.0]
    lock = threading.Lock()
    original = builder.validate_tree

    def timed_validate(root: object) -> None:
        t, c = time.perf_counter(), time.thread_time()
        try:
            original(root)
        finally:
            with lock:
                seconds[0] += time.perf_counter() - t
                seconds[1] += time.thread_time() - c

    builder.validate_tree = timed_validate
    return seconds


def _build_all(
    sessions: Any,
    who: Any,
    decisions: list[str],
    settings: Any,
    evidence: Any,
    batch_size: int,
    workers: int,
) -> None:
    """Build the reports of ``decisions``: batches of ``batch_size`` decisions, one
    transaction each, two batches in progress at once (one commits while the other
    builds), each on ``workers`` threads; ``batch_size`` 1: one report per transaction
    on ``workers`` threads, as the API's single-report route."""
    from tipline.services.reports import batch, service

    if batch_size > 1:
        chunks = [decisions[i : i + batch_size] for i in range(0, len(decisions), batch_size)]

        def build_chunk(chunk: list[str]) -> None:
            outcomes = batch.create_from_decisions(
                sessions,
                who,
                chunk,
                settings=settings,
                evidence=evidence,
                batch_size=len(chunk),
                threads=workers,
            )
            failed = [o.error for o in outcomes if o.error]
            if failed:
                raise SystemExit(f"build failed: {failed[0]}")

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(build_chunk, chunks))
        return
    with ThreadPoolExecutor(workers) as pool:
        list(
            pool.map(
                lambda d: service.create_from_decision(
                    sessions, who, d, settings=settings, evidence=evidence
                ),
                decisions,
            )
        )


def _settings_of(spec: dict[str, Any]) -> Any:
    from pydantic import SecretStr

    from tipline.config import Settings

    return Settings(
        data_dir=Path(str(spec["data_dir"])),
        database_url=str(spec["database_url"]),
        vault_master_key=SecretStr(str(spec["key"])),
        report_reporter_email="reports@example.org",
        report_platform="bench",
        report_ispws_url=str(spec["url"]),
        report_ispws_username=str(spec["username"]),
        report_ispws_password=SecretStr(str(spec["password"])),
    )


def _build_process(conn: Any, spec: dict[str, Any], decisions: list[str]) -> None:
    """Child process of the overlapped phase: build the reports of ``decisions`` once
    told "go" (start-up and imports are not timed); answers (its CPU seconds from "go",
    [validation wall s, validation CPU s])."""
    from tipline.services.auth import Principal, Role
    from tipline.services.reports import builder, service
    from tipline.store.db import make_engine, session_factory

    settings = _settings_of(spec)
    engine = make_engine(settings=settings)
    sessions = session_factory(engine)
    evidence = service.evidence_from_settings(sessions, settings)
    validated = _time_validation(builder)
    conn.send("ready")
    if conn.recv() != "go":
        return
    started = time.process_time()
    try:
        _build_all(
            sessions,
            Principal("bench", Role.ADMIN),
            decisions,
            settings,
            evidence,
            int(spec["batch"]),
            int(spec["workers"]),
        )
    finally:
        engine.dispose()
    conn.send((time.process_time() - started, validated))


def _overlapped(
    maker: Any,
    receiver: Any,
    sql: dict[str, int],
    backends: Backends,
    sessions: Any,
    settings: Any,
    evidence: Any,
    n: int,
    args: argparse.Namespace,
) -> tuple[Any, _Meter]:
    """The overlapped phase: the building process starts, this process delivers every
    report as soon as its batch is committed (the same Deliverer as `tipline worker`'s
    delivery job, --in-flight reports at once) until all ``n`` are finished."""
    from tipline.services.reports import service
    from tipline.services.reports.outbox import Deliverer

    stop = threading.Event()
    done = [0]
    lock = threading.Lock()

    def on_step(report_id: str, step: str, phase: str) -> None:
        if step == "finish" and phase == "ok":
            with lock:
                done[0] += 1
                if done[0] >= n:
                    stop.set()

    client = service.client_from_settings(settings)
    deliverer = Deliverer(
        sessions,
        client,
        evidence,
        policy=service.policy_from_settings(settings),
        on_step=on_step,
    )
    answer: list[Any] = []

    def builder_done() -> None:
        # the building process's answer; a process that died ends the phase too
        try:
            answer.append(maker.recv())
        except EOFError:
            stop.set()

    with _Meter(receiver, sql, backends) as meter:
        maker.send("go")
        watcher = threading.Thread(target=builder_done, daemon=True)
        watcher.start()
        stats = deliverer.run(workers=args.in_flight, until_idle=False, stop=stop, poll_seconds=0.1)
        watcher.join()
    client.close()
    if not answer:
        raise SystemExit("the building process failed (see its traceback above)")
    child_cpu, validated = answer[0]
    meter.cpu += child_cpu  # the building process's CPU is the client's too
    meter.child_cpu = child_cpu  # type: ignore[attr-defined]
    meter.validated = validated  # type: ignore[attr-defined]
    return stats, meter


def _deliver_process(spec: dict[str, object]) -> tuple[dict[str, int], float]:
    """Child process: deliver what the outbox holds; (counts, this process's CPU s)."""
    from tipline.services.reports import service
    from tipline.store.db import make_engine, session_factory

    settings = _settings_of(spec)
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
