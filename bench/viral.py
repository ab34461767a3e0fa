"""Match-time viral bundling benchmark: N uploads of one meme (one PDQ cluster, a few
bits apart) by N accounts, each an exact match of a trusted bank's entry, recorded by
``submissions.match_and_record`` on ``--threads`` threads (the media, a few KB of benign
random bytes, kept in the vault; the report queued in the match's transaction).

* anchor (same run, another tenant): ``report_viral_hold_seconds=0``, one report per
  upload, queued for delivery at once (the path without bundling);
* bundled: the default hold and no file cap in practice (100,000), every upload joins
  the one held report of its cluster
  (per-tenant lock, the upload's facts checked against the XSD, its file row added);
  then ``viral.release_due`` builds, validates and keeps the one document (N accounts)
  and queues it;
* capped (another tenant): the same with ``report_viral_max_files=--max-files``: the
  join that fills a bundle releases it in its own match transaction (the document of
  ``--max-files`` files built, validated and kept under the tenant's lock), so this
  run includes every release but the last, partial bundle's.

Printed: uploads/s of each (the whole match transaction: submission, match history,
vault, rules, audit, report) and this process's CPU per upload (the database server's
CPU is not included), their ratios, reports made, the release's time, and the slowest
uploads of the capped run (those that released a full bundle). Not included: hashing
and matching (the matches are given), delivery.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/viral.py [--uploads 300] [--threads 4] [--max-files 100]

Without a PostgreSQL URL it falls back to SQLite and says so.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))


@contextmanager
def _database() -> Iterator[tuple[str, str]]:
    from sqlalchemy import create_engine, text

    url = os.environ.get("TIPLINE_BENCH_POSTGRES_URL") or os.environ.get(
        "TIPLINE_TEST_POSTGRES_URL"
    )
    if not url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db", "SQLite (no PostgreSQL URL set)"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}", "PostgreSQL"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _flip(base: int, rng: random.Random, bits: int) -> str:
    value = base
    for b in rng.sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--media-bytes", type=int, default=4096)
    parser.add_argument("--max-files", type=int, default=100, help="the capped run's cap")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from tipline.config import Settings
    from tipline.services import submissions
    from tipline.services import vault as v
    from tipline.services.auth import Principal, Role
    from tipline.services.matching.match import Match
    from tipline.services.reports import viral
    from tipline.services.reports.auto import AutoReportPolicy
    from tipline.services.vault.evidence import VaultEvidence
    from tipline.signals.base import Signal
    from tipline.store.base import utcnow
    from tipline.store.db import make_engine, session_factory, upgrade
    from tipline.store.models import import_all_models
    from tipline.store.reports import ReportRow

    rng = random.Random(7)
    meme = rng.getrandbits(256)
    exact = Match(bank="trusted", entry_id="e1", signal_type="md5", distance=0)
    with _database() as (url, label), tempfile.TemporaryDirectory() as tmp:
        import_all_models()
        engine = make_engine(url)
        upgrade(engine)
        sessions = session_factory(engine)
        key = base64.b64encode(os.urandom(32)).decode()
        base = {
            "report_reporter_email": "reports@example.org",
            "report_platform": "Example Photos",
            "report_auto_banks": ["trusted"],
            "report_viral_threshold": 50,
            "vault_master_key": key,
            "data_dir": Path(tmp),
        }
        anchor_settings = Settings(**(base | {"report_viral_hold_seconds": 0}))  # type: ignore[arg-type]
        # no cap in practice (the largest the setting allows), the capped run's anchor
        bundled_settings = Settings(**(base | {"report_viral_max_files": 100_000}))  # type: ignore[arg-type]
        capped_settings = Settings(**(base | {"report_viral_max_files": args.max_files}))  # type: ignore[arg-type]
        the_vault = v.Vault.from_settings(bundled_settings)

        def run(settings: Settings, tenant: str) -> tuple[float, float, list[float]]:
            """Wall seconds, CPU seconds of this process, each upload's wall seconds."""
            who = Principal(f"bench-{tenant}"[:12], Role.MATCHER, tenant)
            policy = AutoReportPolicy.from_settings(settings)

            def one(n: int) -> float:
                began = time.perf_counter()
                local = random.Random(n)
                signals = [
                    Signal(type="md5", value=f"{n:032x}"),
                    Signal(type="pdq", value=_flip(meme, local, 8)),
                ]
                facts = submissions.SubmissionFacts(
                    f"{tenant}-{n}",
                    uploader_account=f"user-{n}",
                    upload_ip="198.51.100.9",
                    upload_port=40000 + n % 20000,
                )
                submissions.match_and_record(
                    sessions,
                    who,
                    signals,
                    lambda _s: [exact],
                    submission=facts,
                    media=local.randbytes(args.media_bytes),
                    vault=the_vault,
                    auto_report=policy,
                )
                return time.perf_counter() - began

            start, cpu = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(args.threads) as pool:
                each = list(pool.map(one, range(args.uploads)))
            return time.perf_counter() - start, time.process_time() - cpu, each

        def reports(tenant: str) -> int:
            with sessions() as session:
                return int(
                    session.execute(
                        select(func.count()).where(ReportRow.tenant == tenant)
                    ).scalar_one()
                )

        anchor, anchor_cpu, anchor_each = run(anchor_settings, "anchor")
        bundled, bundled_cpu, bundled_each = run(bundled_settings, "bundled")
        capped, capped_cpu, capped_each = run(capped_settings, "capped")
        evidence = VaultEvidence(the_vault, actor=Principal("report-delivery", Role.ADMIN))
        with sessions() as session:
            (held,) = session.scalars(select(ReportRow.id).where(ReportRow.tenant == "bundled"))
        start = time.perf_counter()
        released = viral.release_due(sessions, bundled_settings, evidence, only=held)
        release = time.perf_counter() - start
        # the capped run's last, partial bundle (not timed)
        viral.release_due(sessions, capped_settings, evidence, now=utcnow() + timedelta(hours=1))
        load = os.getloadavg()[0]
        n = args.uploads
        print(f"database: {label}; {n} uploads by {n} accounts, {args.threads} threads")
        print(f"machine load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")
        ms = 1000 / n

        def spread(each: list[float]) -> str:
            ordered = sorted(each)
            return (
                f"upload p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
                f"max {ordered[-1] * 1000:.0f} ms"
            )

        print(
            f"anchor  (hold 0, one report per upload): {n / anchor:7.1f} uploads/s, "
            f"{anchor_cpu * ms:5.1f} ms CPU/upload, {reports('anchor')} reports; "
            + spread(anchor_each)
        )
        print(
            f"bundled (held, joined):                  {n / bundled:7.1f} uploads/s, "
            f"{bundled_cpu * ms:5.1f} ms CPU/upload, {reports('bundled')} report(s); "
            f"to anchor: rate {anchor / bundled:.2f}, CPU {bundled_cpu / anchor_cpu:.2f}; "
            + spread(bundled_each)
        )
        print(
            f"capped  (max {args.max_files} files, full ones released at once): "
            f"{n / capped:7.1f} uploads/s, {capped_cpu * ms:5.1f} ms CPU/upload, "
            f"{reports('capped')} report(s); to bundled: rate {bundled / capped:.2f}, "
            f"CPU {capped_cpu / bundled_cpu:.2f}; " + spread(capped_each)
        )
        print(
            f"release of the bundled run's {len(released)} bundle ({n} files, {n} accounts, "
            "viral): "
            f"{release * 1000:.0f} ms"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
