"""Sustained clearinghouse intake: reports of 1-3 MP JPEGs and short videos submitted
over ISPWS by concurrent clients to a real ``tipline serve --role clearinghouse`` on
127.0.0.1, against hashing the same files alone, in the same run.

Two streams, each a ``tipline simulate`` plan (seeded), each measured on its own (the
ratio is printed for photos and overall): ``photos`` holds photos only; ``mixed`` has
``--video-share`` (default 0.47, as the issue's stream) of its items as short videos
(rendered by ffmpeg). Photos are wallpaper quadrants (enlarged) and generated drawings
with an 1800-px longest side, their exact copies and resized (0.72-1), cropped and
re-encoded ones (about 1-3 MP); ~3.1 files per item, a viral burst, two providers, 92%
of accounts abroad. Every report is routed at triage (unless ``--no-routing``): the
server gets the plan's synthetic geography as a generated ``.mmdb`` (as the tests build
one) and a routing table of one agency per country and one ICAC task force per US
state. Every file is rendered before anything is timed and written to a folder (the
hashing anchor reads files, as ``bench/hashing.py`` does), and its MD5 and SHA-1 (which
its report carries) computed then, as a provider has its files' digests before it
reports: the submitting clients do not hash.

* ``hashing only`` (the anchor): ``hash_many`` over the same files with the intake's
  own options (MD5, SHA-1, SHA-256, PDQ or vPDQ, as every file the clearinghouse
  receives is hashed; photos decoded as ``--decode`` says, which the server is given as
  ``TIPLINE_INTAKE_DECODE``: ``fast``, the intake's default, or ``exact``, the reference
  decode) on ``--workers`` forkserver processes, warmed first; run before and after the
  intake, the ratio uses their mean. For reference, the default options of
  ``bench/hashing.py`` (fast decode, no SHA-1) are timed too.
* ``intake``: a fresh PostgreSQL schema (SQLite without a URL, and then it says so), the
  server started as ``tipline serve --role clearinghouse --workers N`` (uvicorn, the
  evidence vault with its default 1 MiB chunks and a master key), ``--clients`` threads
  submitting whole reports (submit, upload and fileinfo per file, finish) with
  tipline's ISPWS client (after two small warm-up reports, triaged before the clock
  starts, so the server's one-time costs are not in the figures), each report's
  de-duplication, clustering and triage done by the server's own thread after
  ``/finish``. Timed from the first submit to the moment every
  report sits triaged in the queue. Server CPU time is read from /proc, printed whole
  and in three parts: its hashing processes; the serving process itself (HTTP, the
  ISPWS calls, triage, routing); and, with PostgreSQL, the backends serving the server's
  connections (found by their application_name, bench/_pgcpu.py), since work handed to
  the database is work the intake costs. PostgreSQL's shared processes (WAL writer,
  checkpointer) are not in it.

Printed: files/s and reports/s of both, intake / hashing only (target >= 0.8), reports/s
against NCMEC's 2023 average (1.15 reports/s, 3.3 files/s), finish -> triaged latency
(server timestamps) p50/p95/p99/max (target p99 <= 2 s), pairwise clustering precision
and recall against the simulator's truth (targets 99.9% / 98%), the routing rules that
decided, and the load average.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/clearinghouse.py [--reports 100] [--streams photos,mixed] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
import psutil  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from _pgcpu import Backends, tagged  # noqa: E402
from clearinghouse_triage import database  # noqa: E402
from tipline.config import RoutingAgency, RoutingTable, Settings  # noqa: E402
from tipline.services import clearinghouse  # noqa: E402
from tipline.services.clearinghouse import simmedia  # noqa: E402
from tipline.services.clearinghouse import simulate as sim  # noqa: E402
from tipline.services.clearinghouse.intake import intake_hash_options  # noqa: E402
from tipline.services.database import Database, open_database  # noqa: E402
from tipline.services.reports.client import IspwsClient  # noqa: E402
from tipline.services.vault import MasterKey  # noqa: E402
from tipline.services.vault.keys import write_key_file  # noqa: E402
from tipline.signals.decode import DecodeMode  # noqa: E402
from tipline.signals.hashing import HashOptions, hash_many, process_pool  # noqa: E402
from tipline.store.clearinghouse import IntakeFileRow, IntakeReportRow  # noqa: E402
from tipline.store.clearinghouse_triage import FileDedupRow, TriageRow  # noqa: E402
from tipline.store.referrals import RoutingDecisionRow  # noqa: E402

#: the application_name of the server's PostgreSQL connections (their backends' CPU counts)
SERVER_APPLICATION = "tipline-chbench-server"
PASSWORDS = {"esp-bench-a": "bench-provider-a-pw", "esp-bench-b": "bench-provider-b-pw"}
#: NCMEC 2023: 36.2M reports, ~105M files in a year
NCMEC_REPORTS_PER_S, NCMEC_FILES_PER_S = 1.15, 3.3
#: bounds a hang only
HANG_SECONDS = 1800.0


@dataclass
class Stream:
    plan: sim.Plan
    #: per report, its files' bytes in plan order
    files: list[list[tuple[sim.PlannedFile, bytes]]]
    paths: list[str]
    #: per report, its files' (MD5, SHA-1), computed with the bytes (a provider has
    #: its files' digests before it reports; the submitting clients do not hash)
    digests: list[list[tuple[str, str]]]

    @property
    def count(self) -> int:
        return len(self.paths)


def stream_spec(
    seed: int, reports: int, *, video_share: float = 0.0, side: int = 1800
) -> sim.SimulationSpec:
    """The bench's report stream: two providers, enlarged photos with ``side`` px on
    their longest side, ``video_share`` of the items short videos, one viral burst."""
    return sim.SimulationSpec(
        seed=seed,
        reports=reports,
        providers=tuple(PASSWORDS),
        video_share=video_share,
        photo_side=side,
        upscale=True,
        viral_bursts=1,
        burst_reports=max(2, reports // 15),
    )


def render(spec: sim.SimulationSpec, folder: Path) -> Stream:
    plan = sim.plan(spec)
    renderer = sim.Renderer(plan)
    files: list[list[tuple[sim.PlannedFile, bytes]]] = []
    paths: list[str] = []
    digests: list[list[tuple[str, str]]] = []
    folder.mkdir()
    for report in plan.reports:
        rendered = [(f, renderer.render(f)) for f in report.files]
        files.append(rendered)
        digests.append([simmedia.file_digests(data) for _, data in rendered])
        for k, (planned, data) in enumerate(rendered):
            path = folder / f"r{report.number:05d}-{k}{Path(planned.name).suffix}"
            path.write_bytes(data)
            paths.append(str(path))
    return Stream(plan, files, paths, digests)


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and its live descendants, with the children each has
    waited for (the ffmpeg processes that decode videos)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _process_cpu(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` alone (all its threads: HTTP, intake calls, triage)."""
    t = proc.cpu_times()
    return t.user + t.system


def hashing_only(paths: Sequence[str], options: HashOptions, jobs: int) -> tuple[float, float]:
    """Wall seconds and worker CPU seconds to hash ``paths`` on a warmed pool."""
    me = psutil.Process()
    with process_pool(jobs) as pool:
        for _ in hash_many(paths[: 4 * jobs], options, jobs, executor=pool):
            pass
        cpu0 = _tree_cpu(me) - _own_cpu()
        start = time.perf_counter()
        results = list(hash_many(paths, options, jobs, executor=pool))
        wall = time.perf_counter() - start
        cpu = _tree_cpu(me) - _own_cpu() - cpu0
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"hashing failed: {bad[0].error}")
    return wall, cpu


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tipline() -> list[str]:
    found = Path(sys.executable).with_name("tipline")
    if found.exists():
        return [str(found)]
    which = shutil.which("tipline")
    return [which] if which else [sys.executable, "-m", "tipline.cli.main"]


def routing_table(plan: sim.Plan) -> RoutingTable:
    """One agency per country of the synthetic geography and one ICAC task force per
    US state, with an international fallback (the shape of NCMEC's referrals)."""
    agencies: dict[str, RoutingAgency] = {"intl": RoutingAgency(name="International desk")}
    countries: dict[str, str] = {}
    subdivisions: dict[str, str] = {}
    for region in plan.geography:
        country, _, sub = region.partition("-")
        if sub:
            agencies[f"icac-{sub.lower()}"] = RoutingAgency(name=f"ICAC {sub}", media=True)
            subdivisions[region] = f"icac-{sub.lower()}"
        else:
            agencies[f"le-{country.lower()}"] = RoutingAgency(name=f"Police {country}")
            countries[country] = f"le-{country.lower()}"
    return RoutingTable(
        agencies=agencies, countries=countries, subdivisions=subdivisions, fallback="intl"
    )


@contextmanager
def server(
    db_url: str, folder: Path, workers: int, hash_processes: int, plan: sim.Plan | None = None
) -> Iterator[tuple[str, psutil.Process]]:
    """``tipline serve --role clearinghouse`` on a free 127.0.0.1 port; with ``plan``,
    routing every report at triage with the plan's synthetic geography (a generated
    .mmdb, as the tests do) and :func:`routing_table`."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "master.key"
    write_key_file(key_file, MasterKey.generate())
    routing: dict[str, str] = {}
    if plan is not None:
        geo = sim.write_geo_database(plan, folder / "geo.mmdb")
        routing = {
            "TIPLINE_GEOIP_DATABASE": str(geo),
            "TIPLINE_ROUTING_TABLE": routing_table(plan).model_dump_json(),
        }
    env = {
        **routing,
        **os.environ,
        # the server's backends carry this name, so their CPU is counted (_pgcpu)
        "TIPLINE_DATABASE_URL": tagged(db_url, SERVER_APPLICATION)
        if db_url.startswith("postgresql")
        else db_url,
        "TIPLINE_DATA_DIR": str(folder),
        "TIPLINE_VAULT_MASTER_KEY_FILE": str(key_file),
        "TIPLINE_ROLE": "clearinghouse",
        "TIPLINE_INTAKE_MAX_FILE_BYTES": str(16 << 20),
        "TIPLINE_INTAKE_HASH_PROCESSES": str(hash_processes),
        "PYTHONPATH": str(REPO / "src"),
    }
    settings = Settings(  # type: ignore[call-arg]
        data_dir=folder, database_url=db_url, role="clearinghouse", vault_master_key_file=key_file
    )
    db = open_database(settings=settings)
    for name, password in PASSWORDS.items():
        clearinghouse.add_provider(db.sessions, name, password)
    db.close()
    port = _free_port()
    command = [
        *_tipline(),
        "serve",
        "--role",
        "clearinghouse",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}/ispws"
    try:
        deadline = time.monotonic() + 600
        name, password = next(iter(PASSWORDS.items()))
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tipline serve exited with {proc.returncode}")
            try:
                if httpx.get(f"{base}/status", auth=(name, password), timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("tipline serve did not answer within 600 s")
            time.sleep(0.2)
        # every worker answers (each builds its intake, starts its hashing processes and
        # opens its triage thread) and has verified each provider's password (scrypt)
        for _ in range(8 * workers):
            for user, secret in PASSWORDS.items():
                httpx.get(f"{base}/status", auth=(user, secret), timeout=30)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Intake:
    seconds: float  # first submit -> every report triaged
    submit_seconds: float  # first submit -> last finish answered
    server_cpu: float
    #: of ``server_cpu``: the serving process alone (not its hashing processes)
    process_cpu: float
    #: of ``server_cpu``: the PostgreSQL backends serving the server's connections
    postgres_cpu: float
    #: not in ``server_cpu``: this process's submitting clients (the load generator), which
    #: share the machine's cores with the server and so lower the wall ratio
    client_cpu: float
    latencies: list[float]
    precision: float
    recall: float
    reports: int
    files: int
    #: reports routed at triage, by rule (subdivision, country, fallback...)
    routing: dict[str, int] = field(default_factory=dict)


def _pairs(groups: dict[str, str], files: list[str]) -> set[tuple[str, str]]:
    by: dict[str, list[str]] = {}
    for f in files:
        by.setdefault(groups[f], []).append(f)
    return {(x, y) for members in by.values() for x, y in combinations(sorted(members), 2)}


def warm_up(http: dict[str, IspwsClient], plan: sim.Plan, reports: int, db: Database) -> int:
    """Submit ``reports`` one-file reports (a small noise JPEG, far from every item) and
    wait until they are triaged, so the server's one-time costs (its triage thread
    opening the Matcher and index, the hashing processes' first hash) are paid before
    the timed run; returns ``reports``."""
    import io
    import random

    from PIL import Image

    rng = random.Random(0)
    first = plan.reports[0]
    provider = plan.accounts[first.account].provider
    for _ in range(reports):
        noise = Image.frombytes("L", (96, 96), rng.randbytes(96 * 96)).convert("RGB")
        out = io.BytesIO()
        noise.save(out, "JPEG", quality=90)
        report = replace(first, files=first.files[:1])
        sim.submit_report(http[provider], plan, report, [(first.files[0], out.getvalue())])
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        with db.sessions() as s:
            if int(s.scalar(select(func.count()).select_from(TriageRow)) or 0) >= reports:
                break
        time.sleep(0.05)
    return reports


def intake(
    stream: Stream,
    db_url: str,
    folder: Path,
    clients: int,
    workers: int,
    hash_processes: int,
    profile: Path | None = None,
    route: bool = True,
) -> Intake:
    plan = stream.plan
    with server(db_url, folder, workers, hash_processes, plan if route else None) as (
        base,
        proc,
    ):
        http = {name: IspwsClient(base, name, pw) for name, pw in PASSWORDS.items()}
        item_of: dict[str, str] = {}
        ids: list[int] = []
        lock = threading.Lock()

        def send(number: int) -> None:
            report = plan.reports[number]
            provider = plan.accounts[report.account].provider
            rid, fids = sim.submit_report(
                http[provider], plan, report, stream.files[number], digests=stream.digests[number]
            )
            with lock:
                ids.append(rid)
                for (planned, _), fid in zip(stream.files[number], fids, strict=True):
                    item_of[str(fid)] = plan.items[planned.item].id

        engine_settings = Settings(database_url=db_url, data_dir=folder)  # type: ignore[call-arg]
        db = open_database(settings=engine_settings)
        warm = warm_up(http, plan, 2 * workers, db)
        spy = None
        if profile is not None:  # sampled stacks of the server's processes (py-spy)
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(proc.pid), "--subprocesses", "--rate", "50",
                 "--format", "raw", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(2)
        backends = Backends(db_url if db_url.startswith("postgresql") else None, SERVER_APPLICATION)
        pg0 = backends.sample()
        cpu0, own0 = _tree_cpu(proc), _process_cpu(proc)
        client0 = _own_cpu()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, range(len(plan.reports))))
        submitted = time.perf_counter() - start
        client_cpu = _own_cpu() - client0
        deadline = time.monotonic() + HANG_SECONDS
        while True:
            with db.sessions() as s:
                count = int(s.scalar(select(func.count()).select_from(TriageRow)) or 0)
            if count >= len(ids) + warm or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        cpu, own = _tree_cpu(proc) - cpu0, _process_cpu(proc) - own0
        pg_cpu = backends.spent(pg0, backends.sample())
        backends.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=120)
        for client in http.values():
            client.close()
        with db.sessions() as s:
            rows = s.execute(
                select(IntakeReportRow.finished_at, TriageRow.triaged_at)
                .join(TriageRow, TriageRow.report_id == IntakeReportRow.id)
                .where(IntakeReportRow.id.in_(ids))
            ).all()
            found = s.execute(select(FileDedupRow.file_id, FileDedupRow.cluster_id))
            cluster_of = {str(f): str(c) for f, c in found}
            stored = len(
                list(s.scalars(select(IntakeFileRow.id).where(IntakeFileRow.report_id.in_(ids))))
            )
            rules = dict(
                s.execute(
                    select(
                        RoutingDecisionRow.rule,
                        func.count(func.distinct(RoutingDecisionRow.report_id)),
                    ).group_by(RoutingDecisionRow.rule)
                ).all()
            )
        db.close()
    latencies = sorted((t - f).total_seconds() for f, t in rows if f is not None)
    files = sorted(item_of)
    missing = [f for f in files if f not in cluster_of]
    if missing or stored != len(files):
        raise SystemExit(f"{len(missing)} files not de-duplicated, {stored} stored of {len(files)}")
    truth, found = _pairs(item_of, files), _pairs(cluster_of, files)
    both = len(truth & found)
    return Intake(
        seconds=seconds,
        submit_seconds=submitted,
        server_cpu=cpu + pg_cpu,
        process_cpu=own,
        postgres_cpu=pg_cpu,
        client_cpu=client_cpu,
        latencies=latencies,
        precision=both / max(1, len(found)),
        recall=both / max(1, len(truth)),
        reports=len(ids),
        files=len(files),
        routing={str(k): int(v) for k, v in rules.items()},
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


@dataclass
class Measured:
    """One stream's figures: intake / hashing only, per file CPU and wall."""

    label: str
    cpu_ratio: float
    wall_ratio: float
    p99: float
    #: intake files/s over NCMEC's 2023 average
    ncmec: float


def measure(label: str, spec: sim.SimulationSpec, args: argparse.Namespace) -> Measured:
    """Render ``spec``, time hashing only, the intake, hashing only again; print."""
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    cores = os.cpu_count() or 1
    print(f"\n== stream {label!r}: video share {spec.video_share:.2f}; load before: {_load()}")
    with tempfile.TemporaryDirectory(prefix="tipline-chbench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        stream = render(spec, root / "files")
        sizes = [os.path.getsize(p) for p in stream.paths]
        from PIL import Image

        pixels = []
        videos = 0
        for p in stream.paths:
            if not p.endswith(".jpg"):
                videos += 1
                continue
            with Image.open(p) as im:
                pixels.append(im.width * im.height / 1e6)
        print(
            f"stream: {len(stream.plan.reports)} reports, {stream.count} files "
            f"({len(pixels)} JPEGs of {min(pixels):.1f}-{max(pixels):.1f} MP, mean "
            f"{statistics.fmean(pixels):.2f}; {videos} videos), {len(stream.plan.items)} "
            f"items; mean {statistics.fmean(sizes) / 1024:.0f} KiB per file"
            f" (planned and rendered in {time.perf_counter() - t0:.0f} s)"
        )
        fast_wall, fast_cpu = hashing_only(stream.paths, HashOptions(), cores)
        options = intake_hash_options(DecodeMode(args.decode))
        before_wall, before_cpu = hashing_only(stream.paths, options, cores)
        with database(pg, root) as url:
            folder = root / "server"
            run = intake(
                stream,
                url,
                folder,
                args.clients,
                args.workers,
                args.hash_processes,
                args.profile,
                route=not args.no_routing,
            )
        after_wall, after_cpu = hashing_only(stream.paths, options, cores)
    n = stream.count
    anchor_wall = (before_wall + after_wall) / 2
    anchor_cpu = (before_cpu + after_cpu) / 2
    intake_rate = n / run.seconds
    print(f"{'contender':<44}{'files/s':>9}{'reports/s':>11}{'CPU ms/file':>13}")
    rows = [
        ("hashing only, bench/hashing.py options", fast_wall, fast_cpu),
        ("hashing only, intake options (before)", before_wall, before_cpu),
        ("hashing only, intake options (after)", after_wall, after_cpu),
        ("intake: ISPWS -> triaged (server+DB CPU)", run.seconds, run.server_cpu),
        (
            "  of it: its hashing processes",
            run.seconds,
            run.server_cpu - run.process_cpu - run.postgres_cpu,
        ),
        ("  of it: the serving process (all but hashing)", run.seconds, run.process_cpu),
        ("  of it: its PostgreSQL backends", run.seconds, run.postgres_cpu),
        ("submitting clients (not the intake's)", run.submit_seconds, run.client_cpu),
    ]
    reports = len(stream.plan.reports)
    for row_label, wall, cpu in rows:
        print(f"{row_label:<44}{n / wall:>9.1f}{reports / wall:>11.2f}{1000 * cpu / n:>13.1f}")
    print(
        f"intake answered every /finish after {run.submit_seconds:.1f} s, "
        f"every report triaged after {run.seconds:.1f} s ({args.clients} clients, "
        f"{args.workers} server workers, {args.hash_processes} hashing processes each; "
        f"hashing only on {cores} processes)"
    )
    cpu_ratio = anchor_cpu / run.server_cpu
    wall_ratio = intake_rate * anchor_wall / n
    print(
        f"ratio intake / hashing only (intake options): wall {wall_ratio:.2f}"
        f" (target >= 0.8), CPU per file {cpu_ratio:.2f}"
    )
    print(
        f"  the wall ratio is lowered by the submitting clients, which run on the same "
        f"{cores} cores: {1000 * run.client_cpu / n:.1f} ms CPU per file that the hashing-only"
        " runs do not spend; the CPU ratio counts the intake's processes and database only"
    )
    print(
        f"ratio intake / hashing only (bench/hashing.py options): wall "
        f"{intake_rate * fast_wall / n:.2f}"
    )
    ncmec = intake_rate / NCMEC_FILES_PER_S
    print(
        f"vs NCMEC 2023 average ({NCMEC_REPORTS_PER_S} reports/s, {NCMEC_FILES_PER_S} files/s):"
        f" {reports / run.seconds / NCMEC_REPORTS_PER_S:.1f}x reports/s, "
        f"{ncmec:.1f}x files/s (target >= 40x; this stream: {n / reports:.2f} files per report)"
    )
    lat = run.latencies
    p99 = float("nan")
    if len(lat) >= 2:
        q = statistics.quantiles(lat, n=100, method="inclusive")
        p99 = q[98]
        print(
            f"finish -> triaged (s), {len(lat)} reports: p50 {q[49]:.3f}  p95 {q[94]:.3f}  "
            f"p99 {q[98]:.3f} (target <= 2)  max {lat[-1]:.3f}"
        )
    print(
        f"clustering vs simulator truth, {run.files} files: precision {run.precision:.4f}"
        f" (target 0.999), recall {run.recall:.4f} (target 0.98)"
    )
    if run.routing:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(run.routing.items()))
        print(f"routed at triage ({sum(run.routing.values())} reports): {shown}")
    print(f"load after: {_load()}")
    return Measured(label, cpu_ratio, wall_ratio, p99, ncmec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=100, help="reports per stream")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--clients", type=int, default=4, help="concurrent submitting threads")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--hash-processes",
        type=int,
        default=2,
        help="hashing processes beside each server worker (TIPLINE_INTAKE_HASH_PROCESSES)",
    )
    parser.add_argument("--side", type=int, default=1800, help="longest side of originals")
    parser.add_argument(
        "--decode",
        choices=[m.value for m in DecodeMode],
        default=DecodeMode.FAST.value,
        help="how the intake decodes photos for PDQ (TIPLINE_INTAKE_DECODE); the anchor too",
    )
    parser.add_argument(
        "--video-share", type=float, default=0.47, help="share of video items, mixed stream"
    )
    parser.add_argument(
        "--streams",
        default="photos,mixed",
        help="which streams to run: photos (no video), mixed (--video-share), or both",
    )
    parser.add_argument(
        "--no-routing", action="store_true", help="no geolocation database, no routing"
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy's sampled stacks of the server here"
    )
    args = parser.parse_args()
    os.environ["TIPLINE_INTAKE_DECODE"] = args.decode  # the server's environment
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    print(f"database: {'PostgreSQL' if pg else 'SQLite (no TIPLINE_TEST_POSTGRES_URL)'}")
    print(f"cpus: {os.cpu_count()}; photos decoded for PDQ: {args.decode}")
    results = []
    for label in [x.strip() for x in args.streams.split(",") if x.strip()]:
        if label not in ("photos", "mixed"):
            raise SystemExit(f"unknown stream {label!r} (photos, mixed)")
        share = 0.0 if label == "photos" else args.video_share
        spec = stream_spec(args.seed, args.reports, video_share=share, side=args.side)
        results.append(measure(label, spec, args))
    print(f"\nsummary ({args.decode} decode), intake / hashing only (target >= 0.8):")
    for m in results:
        print(
            f"  {m.label:<7} CPU per file {m.cpu_ratio:.2f}, wall {m.wall_ratio:.2f}, "
            f"{m.ncmec:.1f}x NCMEC's files/s, p99 finish -> triaged {m.p99:.2f} s"
        )


if __name__ == "__main__":
    main()
