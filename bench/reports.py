"""Report pipeline benchmark: confirmed decisions -> CyberTipline reports built,
validated against NCMEC's XSD, preserved in the evidence vault and delivered over ISPWS
(submit, upload, fileinfo, finish) to a local receiver on 127.0.0.1, each report with
one ~1 MB JPEG.

Phases (the same N reports):

* ``build``: ``create_from_decision`` per report (read the media back from the vault,
  MD5 + SHA-1, build the XML, XSD validation, XML preserved in the vault, outbox row),
  on ``--workers`` threads;
* ``deliver``: the outbox delivers every report (``--workers`` parallel calls) to a
  receiver in another process that validates every XML body against the XSD and
  MD5s every upload.

The anchor, measured in the same run: the bare protocol (the same ISPWS client, same
files, same receiver; no database, no vault, no outbox), reports/s.

Printed: reports/s per phase and end to end (N / (build + deliver)), the ratio to the
anchor, and the share of the pipeline's time spent in XSD validation.

Usage::

    TIPLINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/reports.py [--reports 400] [--workers 4]

Without a PostgreSQL URL it falls back to SQLite and says so.
"""

from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import os
import random
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
    """Child process: serve ISPWS until told to stop; send back URL and counters."""
    from _ispws_server import ispws_server

    with ispws_server() as rx:
        conn.send((rx.url, rx.username, rx.password))  # type: ignore[attr-defined]
        conn.recv()  # type: ignore[attr-defined]
        finished = sum(1 for r in rx.receiver.reports.values() if r.finished)
        conn.send((finished, len(rx.receiver.reports), len(rx.receiver.rejections)))  # type: ignore[attr-defined]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=400)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from pydantic import SecretStr

    from tipline.config import Settings
    from tipline.services import vault as v
    from tipline.services.auth import Principal, Role
    from tipline.services.reports import builder, service
    from tipline.services.reports.client import IspwsClient
    from tipline.services.reports.facts import ReviewFacts
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
    validate_seconds = [0.0]
    lock = threading.Lock()
    original = builder.validate_tree

    def timed_validate(root: object) -> None:
        t = time.perf_counter()
        try:
            original(root)  # type: ignore[arg-type]
        finally:
            with lock:
                validate_seconds[0] += time.perf_counter() - t

    builder.validate_tree = timed_validate  # type: ignore[assignment]

    with _database() as (db_url, backend), tempfile.TemporaryDirectory() as data_dir:
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
                row = sub.create_submission(
                    session,
                    tenant=None,
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
                    jpeg + i.to_bytes(4, "big"),  # distinct bytes, trailing after EOI
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

        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.workers) as pool:
            list(
                pool.map(
                    lambda d: service.create_from_decision(
                        sessions, who, d, settings=settings, evidence=evidence
                    ),
                    decisions,
                )
            )
        build, build_cpu = time.perf_counter() - t0, time.process_time() - c0

        t0, c0 = time.perf_counter(), time.process_time()
        stats = service.deliver(
            sessions, settings=settings, evidence=evidence, workers=args.workers
        )
        deliver, deliver_cpu = time.perf_counter() - t0, time.process_time() - c0

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

        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(bare, range(n)))
        anchor, anchor_cpu = time.perf_counter() - t0, time.process_time() - c0
        client.close()
        engine.dispose()

    parent.send("stop")
    finished, total, rejections = parent.recv()
    proc.join(timeout=10)
    builder.validate_tree = original  # type: ignore[assignment]

    pipeline = build + deliver
    rate = n / pipeline
    anchor_rate = n / anchor
    print(
        f"report pipeline, {n} reports of one {len(jpeg) / 1e6:.2f} MB JPEG each, "
        f"{args.workers} workers, {backend}, {os.cpu_count()} CPUs"
    )
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} (CPU ms are this process's, receiver excluded)")
    print(f"{'phase':<34}{'seconds':>9}{'reports/s':>11}{'CPU ms/report':>15}")
    print(f"{'setup (media to vault, decisions)':<34}{setup:>9.2f}{n / setup:>11.1f}{'':>15}")
    print(
        f"{'build (+XSD, vault, outbox)':<34}{build:>9.2f}{n / build:>11.1f}"
        f"{1000 * build_cpu / n:>15.1f}"
    )
    print(
        f"{'deliver (ISPWS, 4 calls/report)':<34}{deliver:>9.2f}{n / deliver:>11.1f}"
        f"{1000 * deliver_cpu / n:>15.1f}"
    )
    print(
        f"{'end to end (build + deliver)':<34}{pipeline:>9.2f}{rate:>11.1f}"
        f"{1000 * (build_cpu + deliver_cpu) / n:>15.1f}"
    )
    print(
        f"{'anchor: bare ISPWS protocol':<34}{anchor:>9.2f}{anchor_rate:>11.1f}"
        f"{1000 * anchor_cpu / n:>15.1f}"
    )
    print(
        f"ratio to the anchor: {rate / anchor_rate:.2f}; target >= {TARGET_RPS:.0f}/s: "
        f"{'met' if rate >= TARGET_RPS else 'NOT met'}"
    )
    print(
        f"XSD validation: {validate_seconds[0]:.2f} s of thread time, "
        f"{100 * validate_seconds[0] / pipeline:.1f}% of the pipeline's wall time"
    )
    print(
        f"receiver: {finished} finished of {total} opened, {rejections} schema rejections; "
        f"delivery: {stats.finished} finished, {stats.failed} failed, {stats.retries} retries"
    )
    if finished != 2 * n or stats.finished != n or rejections:
        raise SystemExit("benchmark run was not clean")


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
