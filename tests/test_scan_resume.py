"""Crash and resume: ``tipline scan`` killed with SIGKILL, then ``--resume ID``.

Every hashing call is counted by the workers themselves (``TIPLINE_SCAN_HASH_COUNTER``
appends the path per call), so "no file hashed twice" is checked on real processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from _clock import HANG_SECONDS
from tipline.services.scan import HASH_COUNTER_ENV

FILES = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(FILES):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((1024, 768), Image.Resampling.BICUBIC)
        picture.save(root / f"{i:03d}.jpg", "JPEG", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tipline.cli.main", "scan", *args]


def _env(tmp: Path, counter: Path) -> dict[str, str]:
    return {**os.environ, "TIPLINE_DATA_DIR": str(tmp / "data"), HASH_COUNTER_ENV: str(counter)}


def _results(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {k: item[k] for k in ("content_id", "status", "media", "size", "signals", "error")}
        for item in lines
    ]


def _hash_counts(counter: Path) -> Counter[str]:
    return Counter(json.loads(line) for line in counter.read_text().splitlines())


def _batches(db: Path) -> tuple[str | None, int]:
    if not db.exists():
        return None, 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT id FROM scans").fetchone()
            n = conn.execute("SELECT count(*) FROM scan_batches").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return None, 0
    return (row[0] if row else None), int(n)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """An uninterrupted run's results."""
    tmp = tmp_path_factory.mktemp("reference")
    counter = tmp / "hashed.txt"
    db = f"sqlite:///{tmp / 'ref.db'}"
    proc = subprocess.run(
        _command(
            str(corpus),
            "-j",
            "2",
            "--batch-size",
            "4",
            "--no-match",
            "--database-url",
            db,
            "--out",
            str(tmp / "ref.jsonl"),
        ),
        env=_env(tmp, counter),
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr  # broken.jpg fails, and is recorded
    assert f"error: {corpus / 'broken.jpg'}: " in proc.stderr
    counts = _hash_counts(counter)
    assert len(counts) == FILES + 1 and set(counts.values()) == {1}
    return _results(tmp / "ref.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_batches", [0, 2])
def test_sigkill_then_resume_loses_nothing_and_hashes_each_file_once(
    corpus: Path, reference: list[dict[str, Any]], tmp_path: Path, kill_after_batches: int
) -> None:
    counter = tmp_path / "hashed.txt"
    db_path = tmp_path / "scan.db"
    db = f"sqlite:///{db_path}"
    env = _env(tmp_path, counter)
    proc = subprocess.Popen(
        _command(str(corpus), "-j", "2", "--batch-size", "4", "--no-match", "--database-url", db),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + HANG_SECONDS
    scan_id: str | None = None
    while time.monotonic() < deadline:
        scan_id, done = _batches(db_path)
        if scan_id is not None and done >= kill_after_batches:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=HANG_SECONDS)
    assert scan_id is not None
    with sqlite3.connect(db_path, timeout=30) as conn:
        pids = json.loads(conn.execute("SELECT pids FROM scans").fetchone()[0])
        at_kill = conn.execute("SELECT count(*) FROM scan_items").fetchone()[0]
    assert at_kill < FILES + 1, "the scan finished before it could be killed"

    resumed = subprocess.run(
        _command("--resume", scan_id, "--database-url", db, "--out", str(tmp_path / "r.jsonl")),
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    # broken.jpg fails in whichever run records it: exit status 3 for that run only
    broken_now = f"error: {corpus / 'broken.jpg'}: " in resumed.stderr
    assert resumed.returncode == (3 if broken_now else 0), resumed.stderr
    assert f"scan {scan_id} finished" in resumed.stdout
    assert not pids or pids[0] == proc.pid  # empty when killed before the pool started
    assert not any(_alive(p) for p in pids)  # the killed run's workers are gone

    assert _results(tmp_path / "r.jsonl") == reference
    counts = _hash_counts(counter)
    assert set(counts) == {str(corpus / f"{i:03d}.jpg") for i in range(FILES)} | {
        str(corpus / "broken.jpg")
    }
    assert set(counts.values()) == {1}, {p: n for p, n in counts.items() if n != 1}
    with sqlite3.connect(db_path) as conn:
        items = conn.execute("SELECT count(*) FROM scan_items").fetchone()[0]
        batch_items = conn.execute("SELECT sum(items) FROM scan_batches").fetchone()[0]
    assert items == batch_items == FILES + 1
