"""The same scan on a real local Ray cluster (2 CPUs) and on local worker processes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tipline.services.banks import add_entry, create_bank
from tipline.services.database import open_database
from tipline.services.scan import (
    WORKER_CRASHED,
    ScanOptions,
    ScanRequest,
    default_matcher_loader,
    run_scan,
)
from tipline.signals.hashing import HashOptions, hash_path
from tipline.store import scans as store
from tipline.store.db import make_engine, session_factory

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for i in range(10):
        rng = np.random.default_rng(100 + i)
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((480, 360), Image.Resampling.BICUBIC)
        picture.save(root / f"{i:02d}.jpg", "JPEG", quality=90)
    (root / "zz.txt").write_text("not media")
    return root


def _recorded(url: str, scan_id: str) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            items = [
                {
                    "content_id": r.content_id,
                    "position": r.position,
                    "status": r.status,
                    "signals": r.signals,
                    "matches": r.matches,
                    "error": r.error_message,
                }
                for r in store.iter_items(session, scan_id)
            ]
            batches = sorted(
                (b.batch_no, b.items)
                for b in session.query(store.ScanBatchRow).filter_by(scan_id=scan_id)
            )
    finally:
        engine.dispose()
    return items, batches


# Ray's own sockets are sometimes finalised after the cluster stops on a loaded machine
# (an "Exception ignored in BaseConnection.__del__" from Ray internals, not tipline's).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ray_scan_equals_local_scan(
    ray_cluster: Any, db_url: str, media: Path, tmp_path: Path
) -> None:
    db = open_database(db_url)
    create_bank(db, "known")
    first = hash_path(str(media / "03.jpg"), HashOptions())
    pdq = next(s.value for s in first.signals if s.type == "pdq")
    add_entry(db, "known", [f"pdq:{pdq}"], entry_id="e3")
    db.close()
    loader = default_matcher_loader(db_url, index_dir=tmp_path / "index")
    options = ScanOptions(batch_size=3)
    local = run_scan(
        ScanRequest(
            sources=(str(media),), options=options, jobs=2, database_url=db_url, matcher=loader
        )
    )
    on_ray = run_scan(
        ScanRequest(
            sources=(str(media),),
            options=options,
            ray_address="auto",
            database_url=db_url,
            matcher=loader,
        )
    )
    assert local.scan_id != on_ray.scan_id
    for summary in (local, on_ray):
        assert (summary.total, summary.scanned, summary.matched, summary.failed) == (11, 11, 1, 1)
    local_items, local_batches = _recorded(db_url, local.scan_id)
    ray_items, ray_batches = _recorded(db_url, on_ray.scan_id)
    assert len(ray_items) == 11
    for a, b in zip(local_items, ray_items, strict=True):
        assert a == b
    assert local_batches == ray_batches == [(0, 3), (1, 2), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1)]
    matched = [i for i in ray_items if i["status"] == "matched"]
    assert [m["entry_id"] for m in matched[0]["matches"]] == ["e3"]


def test_ray_scan_resumes(ray_cluster: Any, sqlite_url: str, media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("00.jpg", "01.jpg"):
        shutil.copy(media / name, folder / name)
    first = run_scan(
        ScanRequest(sources=(str(folder),), ray_address="auto", database_url=sqlite_url)
    )
    shutil.copy(media / "02.jpg", folder / "02.jpg")
    again = run_scan(
        ScanRequest(resume_id=first.scan_id, ray_address="auto", database_url=sqlite_url)
    )
    assert (first.scanned, again.scanned, again.skipped) == (2, 1, 2)


def test_ray_worker_death_is_contained(
    ray_cluster: Any, sqlite_url: str, media: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    names = [f"{i:02d}.jpg" for i in range(7)]
    for name in names:
        shutil.copy(media / name, folder / name)
    shutil.copy(media / "09.jpg", folder / "0-poison.jpg")  # sorts first
    summary = run_scan(
        ScanRequest(
            sources=(str(folder),),
            options=ScanOptions(batch_size=4),
            ray_address="auto",
            database_url=sqlite_url,
        )
    )
    assert (summary.scanned, summary.failed) == (8, 1)
    items, batches = _recorded(sqlite_url, summary.scan_id)
    by_name = {Path(i["content_id"]).name: i for i in items}
    assert by_name["0-poison.jpg"]["error"].startswith("worker process died")
    assert all(by_name[n]["status"] == "ok" for n in names)
    # batches [poison 00] [01 02] [03] [04] [05] [06]: the first crashed and was retried
    # one item per batch
    assert sorted(n for _, n in batches) == [1, 1, 1, 1, 1, 1, 2]
    engine = make_engine(sqlite_url)
    with session_factory(engine)() as session:
        codes = {r.error_code for r in store.iter_items(session, summary.scan_id)}
    engine.dispose()
    assert WORKER_CRASHED in codes
