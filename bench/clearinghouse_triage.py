"""Clearinghouse de-duplication and triage benchmark: a ``tipline simulate`` stream
(benign wallpaper quadrants and drawings, ~3.1 files per distinct item, ~47% short
videos, a viral burst) submitted over ISPWS to a clearinghouse server on 127.0.0.1.

Two runs of the same stream, each on a fresh database:

* ``job path``: the server triages nothing itself (the crash-safe jobs only); then this
  process triages every report with ``triage_report`` (one transaction each:
  de-duplication through the match index, clusters, links, score), timed.
  The anchor, in the same run: hashing the same files exactly as the intake does
  (``hash_bytes`` with the intake's signals and reference decode), bytes rendered
  beforehand. Printed: reports/s and ms per report of each, and triage time as a share
  of hashing time.
* ``serving path``: the server triages each report on its background thread right after
  ``/finish``. Printed: finish -> triaged latency (``triaged_at - finished_at``, both
  stamped by the server) p50 / p95 / p99 / max.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/clearinghouse_triage.py [--reports 80]

Without a PostgreSQL URL it uses SQLite and says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))

import uvicorn  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from tipline.api.app import create_app  # noqa: E402
from tipline.config import Settings  # noqa: E402
from tipline.services import clearinghouse  # noqa: E402
from tipline.services.clearinghouse import simulate as sim  # noqa: E402
from tipline.services.database import open_database  # noqa: E402
from tipline.services.vault import MasterKey  # noqa: E402
from tipline.services.vault.keys import write_key_file  # noqa: E402
from tipline.store.clearinghouse import IntakeReportRow  # noqa: E402
from tipline.store.clearinghouse_triage import TriageRow  # noqa: E402

PASSWORDS = {"esp-bench-a": "bench-provider-a-pw", "esp-bench-b": "bench-provider-b-pw"}


@contextmanager
def database(url: str | None, folder: Path) -> Iterator[str]:
    """A fresh PostgreSQL schema (dropped afterwards) or SQLite file."""
    if not url:
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def server(settings: Settings, *, triage_here: bool) -> Iterator[str]:
    """The clearinghouse app on a free 127.0.0.1 port; its ISPWS base URL."""
    import socket

    app = create_app(settings)
    if not triage_here:
        intake_of = app.state.ctx.services

        # the routes build the intake on first use; make it one without the thread
        from tipline.api import routes_ispws

        intake = routes_ispws.the_intake(app.state.ctx)
        intake.on_finish = None
        worker = intake_of.pop("triage_worker")
        worker.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/ispws"
    finally:
        srv.should_exit = True
        thread.join(timeout=60)


def settings_for(url: str, folder: Path) -> Settings:
    key_file = folder / "master.key"
    write_key_file(key_file, MasterKey.generate())
    return Settings(  # type: ignore[call-arg]
        data_dir=folder,
        database_url=url,
        role="clearinghouse",
        vault_master_key_file=key_file,
        intake_max_file_bytes=8 << 20,
    )


def submit(spec: sim.SimulationSpec, url: str, settings: Settings, folder: Path) -> float:
    db = open_database(settings=settings)
    for name, password in PASSWORDS.items():
        clearinghouse.add_provider(db.sessions, name, password)
    db.close()
    start = time.perf_counter()
    sim.simulate(spec, url=url, credentials=PASSWORDS, truth_path=folder / "truth.jsonl")
    return time.perf_counter() - start


def hashing_anchor(plan: sim.Plan) -> float:
    """Seconds to hash every file of ``plan`` as the intake does (rendered first)."""
    from tipline.services.clearinghouse.intake import INTAKE_HASH_OPTIONS
    from tipline.signals.hashing import hash_bytes

    files = [(f.name, sim.render(plan, f)) for r in plan.reports for f in r.files]
    start = time.perf_counter()
    for name, data in files:
        hash_bytes(data, name, INTAKE_HASH_OPTIONS)
    return time.perf_counter() - start


def job_path(spec: sim.SimulationSpec, pg: str | None, root: Path) -> tuple[float, float, int]:
    folder = root / "jobs"
    folder.mkdir()
    with database(pg, folder) as url:
        settings = settings_for(url, folder)
        with server(settings, triage_here=False) as base:
            submit(spec, base, settings, folder)
        db = open_database(settings=settings)
        with db.sessions() as s:
            ids = list(s.scalars(select(IntakeReportRow.id).order_by(IntakeReportRow.id)))
        triager = clearinghouse.Triager.open(db, settings)
        start = time.perf_counter()
        for rid in ids:
            clearinghouse.triage_report(triager, int(rid))
        triage_seconds = time.perf_counter() - start
        triager.close()
        db.close()
    return hashing_anchor(sim.plan(spec)), triage_seconds, len(ids)


def serving_path(spec: sim.SimulationSpec, pg: str | None, root: Path) -> list[float]:
    folder = root / "serving"
    folder.mkdir()
    with database(pg, folder) as url:
        settings = settings_for(url, folder)
        with server(settings, triage_here=True) as base:
            submit(spec, base, settings, folder)
            db = open_database(settings=settings)
            deadline = time.monotonic() + 600
            while True:
                with db.sessions() as s:
                    rows = s.execute(
                        select(IntakeReportRow.finished_at, TriageRow.triaged_at).join(
                            TriageRow, TriageRow.report_id == IntakeReportRow.id
                        )
                    ).all()
                if len(rows) >= spec.reports or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            db.close()
    return sorted((t - f).total_seconds() for f, t in rows if f is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=80)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    pg = os.environ.get("TIPLINE_TEST_POSTGRES_URL")
    spec = sim.SimulationSpec(
        seed=args.seed,
        reports=args.reports,
        providers=tuple(PASSWORDS),
        viral_bursts=1,
        burst_reports=max(2, args.reports // 10),
        video_side=192,
    )
    plan = sim.plan(spec)
    print(f"database: {'PostgreSQL' if pg else 'SQLite (no TIPLINE_TEST_POSTGRES_URL)'}")
    print(f"stream: {len(plan.reports)} reports, {plan.files} files, {len(plan.items)} items")
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hash_s, triage_s, n = job_path(spec, pg, root)
        latencies = serving_path(spec, pg, root)
    print(f"{'phase':<28}{'reports/s':>12}{'ms/report':>12}")
    print(f"{'hashing only (anchor)':<28}{n / hash_s:>12.1f}{1000 * hash_s / n:>12.1f}")
    print(f"{'de-dup + triage':<28}{n / triage_s:>12.1f}{1000 * triage_s / n:>12.1f}")
    print(f"de-dup + triage time / hashing time: {triage_s / hash_s:.3f}")
    if latencies:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        print(
            f"finish -> triaged (s), {len(latencies)} reports: p50 {q[49]:.3f}  "
            f"p95 {q[94]:.3f}  p99 {q[98]:.3f}  max {latencies[-1]:.3f}"
        )
    print(f"load after: {os.getloadavg()[0]:.1f} (1-min average)")


if __name__ == "__main__":
    main()
