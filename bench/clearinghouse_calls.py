"""Statements and CPU per ISPWS call of the clearinghouse intake, in one process, without
hashing: where the intake's own cost goes.

Every file's signals are computed once before timing and served from memory, so what is
timed is the rest of each call (auth, XML, vault, rows, audit) and the triage of each
report (``triage_report``), called directly (no HTTP). Counted per call: SQL statements
(SQLAlchemy's ``before_cursor_execute``; the audit log's pipelined appends are not
counted there) and pooled sessions (a checkout pings only a connection idle for some
seconds or whose socket shows the server closed it: ``store/db.py`` ``IdlePing``);
CPU is this process's; on PostgreSQL, the CPU of the backends serving this process's
connections is its own column (``/proc/<pid>/schedstat`` of each backend, found with
``pg_backend_pid()`` when the pool connects: a local server only). The first two
reports are a warm-up and are not counted.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/clearinghouse_calls.py [--reports 30] [--sql] [--profile FILE] [--routing]

``--routing`` routes every report at triage, as ``bench/clearinghouse.py`` does (the
plan's synthetic geography as a generated ``.mmdb``, one agency per country).
"""

from __future__ import annotations

import argparse
import base64
import collections
import cProfile
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

from sqlalchemy import event  # noqa: E402

import tipline.services.clearinghouse.intake as intake_module  # noqa: E402
from clearinghouse_triage import database  # noqa: E402
from tipline.config import Settings  # noqa: E402
from tipline.services import clearinghouse, vault  # noqa: E402
from tipline.services.clearinghouse import pipeline  # noqa: E402
from tipline.services.clearinghouse import simulate as sim  # noqa: E402
from tipline.services.database import open_database  # noqa: E402
from tipline.services.reports.builder import build_file_details, build_report  # noqa: E402
from tipline.services.vault import MasterKey  # noqa: E402
from tipline.services.vault.keys import write_key_file  # noqa: E402

CALLS = ("submit", "upload", "fileinfo", "finish", "triage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=30)
    parser.add_argument("--video-share", type=float, default=0.0)
    parser.add_argument("--sql", action="store_true", help="list the statements of each call")
    parser.add_argument(
        "--ping-every-checkout",
        action="store_true",
        help="ping on every checkout, as the pool did before IdlePing (measures what it costs)",
    )
    parser.add_argument(
        "--profile", type=Path, help="write cProfile statistics of the counted calls here"
    )
    parser.add_argument(
        "--routing", action="store_true", help="route every report at triage (as the server bench)"
    )
    args = parser.parse_args()
    spec = sim.SimulationSpec(
        seed=3,
        reports=args.reports,
        providers=("esp-a",),
        video_share=args.video_share,
        photo_side=600,
    )
    plan = sim.plan(spec)
    renderer = sim.Renderer(plan)
    reports = []
    for rep in plan.reports:
        files = [(f, renderer.render(f)) for f in rep.files]
        content, reported = sim._content(plan, rep, files)
        reports.append((build_report(content), files, reported))
    # the signals of every file, computed now and served from memory while timing
    real = intake_module._signals
    known: dict[bytes, Any] = {}

    def cached(intake: clearinghouse.Intake, data: bytes, name: str) -> Any:
        if data not in known:
            known[data] = real(intake, data, name)
        return known[data]

    intake_module._signals = cached  # type: ignore[assignment]
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    print(f"database: {'PostgreSQL' if pg else 'SQLite (no TIPLINE_TEST_POSTGRES_URL)'}")
    with (
        tempfile.TemporaryDirectory(prefix="tipline-chcalls-") as tmp,
        database(pg, Path(tmp)) as url,
    ):
        folder = Path(tmp)
        key = folder / "master.key"
        write_key_file(key, MasterKey.generate())
        routing: dict[str, Any] = {}
        if args.routing:
            from clearinghouse import routing_table

            routing = {
                "geoip_database": sim.write_geo_database(plan, folder / "geo.mmdb"),
                "routing_table": routing_table(plan),
            }
        settings = Settings(  # type: ignore[call-arg]
            data_dir=folder,
            database_url=url,
            role="clearinghouse",
            vault_master_key_file=key,
            **routing,
        )
        db = open_database(settings=settings)
        if args.ping_every_checkout:  # an experiment: SQLAlchemy's pool_pre_ping
            db.engine.pool._pre_ping = True
        clearinghouse.add_provider(db.sessions, "esp-a", "provider-a-password")
        auth = "Basic " + base64.b64encode(b"esp-a:provider-a-password").decode()
        triager = pipeline.Triager.open(db, settings)
        intake = clearinghouse.Intake(
            sessions=db.sessions, vault=vault.Vault.from_settings(settings)
        )
        for _, files, _ in reports:  # hash every file now
            for f, data in files:
                cached(intake, data, f.name)
        phase = ["-"]
        stmts: collections.Counter[str] = collections.Counter()
        sessions: collections.Counter[str] = collections.Counter()
        cpu: collections.Counter[str] = collections.Counter()
        calls: collections.Counter[str] = collections.Counter()
        sqls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

        @event.listens_for(db.engine, "before_cursor_execute")
        def _statement(*a: Any) -> None:
            stmts[phase[0]] += 1
            sqls[phase[0]][" ".join(str(a[2]).split())[:100]] += 1

        @event.listens_for(db.engine, "engine_connect")
        def _session(*a: Any) -> None:
            sessions[phase[0]] += 1

        backends: set[int] = set()
        pg_cpu: collections.Counter[str] = collections.Counter()

        @event.listens_for(db.engine, "checkout")
        def _backend(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            if db.engine.dialect.name == "postgresql" and "pid" not in record.info:
                with dbapi_connection.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    record.info["pid"] = int(cur.fetchone()[0])
                dbapi_connection.commit()
                backends.add(record.info["pid"])

        def backends_cpu() -> float:
            """Seconds on CPU of the backends serving this process's connections."""
            total = 0
            for pid in backends:
                try:
                    with open(f"/proc/{pid}/schedstat") as handle:
                        total += int(handle.read().split()[0])
                except OSError:
                    pass  # closed (or not on this machine)
            return total / 1e9

        def timed(name: str, fn: Callable[..., Any], *a: Any) -> Any:
            phase[0] = name
            before = backends_cpu()
            t = time.process_time()
            out = fn(*a)
            cpu[name] += time.process_time() - t
            pg_cpu[name] += backends_cpu() - before
            calls[name] += 1
            phase[0] = "-"
            return out

        def run(chosen: list[Any]) -> None:
            for body, files, reported in chosen:
                rid = timed("submit", clearinghouse.submit, intake, auth, body).report_id
                for (f, data), meta in zip(files, reported, strict=True):
                    up = timed("upload", clearinghouse.upload, intake, auth, str(rid), f.name,
                               io.BytesIO(data))  # fmt: skip
                    doc = build_file_details(meta, report_id=rid, file_id=str(up.file_id))
                    timed("fileinfo", clearinghouse.fileinfo, intake, auth, doc)
                timed("finish", clearinghouse.finish, intake, auth, str(rid))
                timed("triage", pipeline.triage_report, triager, rid)

        run(reports[:2])
        for counter in (stmts, sessions, cpu, calls, pg_cpu):
            counter.clear()
        sqls.clear()
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        if profiler is not None:
            profiler.enable()
        run(reports[2:])
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        files_n = calls["upload"]
        print(f"{calls['submit']} reports, {files_n} files; load {os.getloadavg()[0]:.1f}")
        print(
            f"{'call':<10}{'CPU ms/call':>12}{'statements':>12}{'sessions':>10}{'CPU ms/file':>13}"
            f"{'PG ms/call':>12}{'PG ms/file':>12}"
        )
        total = pg_total = 0.0
        for name in CALLS:
            n = calls[name]
            total += cpu[name]
            pg_total += pg_cpu[name]
            print(
                f"{name:<10}{1000 * cpu[name] / n:>12.2f}{stmts[name] / n:>12.1f}"
                f"{sessions[name] / n:>10.1f}{1000 * cpu[name] / files_n:>13.2f}"
                f"{1000 * pg_cpu[name] / n:>12.2f}{1000 * pg_cpu[name] / files_n:>12.2f}"
            )
        print(f"all but hashing: {1000 * total / files_n:.2f} ms of CPU per file", end="")
        print(f" (and PostgreSQL backends: {1000 * pg_total / files_n:.2f})" if backends else "")
        idle_ping = getattr(db.engine, "idle_ping", None)
        if idle_ping is not None:
            print(f"pool pings (idle or closed connections): {idle_ping.pings}")
        if args.sql:
            for name in CALLS:
                print(f"== {name}, statements per call")
                for text, count in sqls[name].most_common(40):
                    print(f"  {count / calls[name]:5.2f} {text}")
        triager.close()
        db.close()


if __name__ == "__main__":
    main()
