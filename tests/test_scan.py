"""Scans on SQLite and PostgreSQL: sources, per-item errors, resume bookkeeping, outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from _cli import run_tipline
from _clock import HANG_SECONDS
from _terminal import run_on_terminal
from tipline.services.scan import (
    ScanOptions,
    ScanRequest,
    hash_item,
    run_scan,
    write_results,
)
from tipline.services.scan.sources import ScanItem, expand_sources
from tipline.signals.hashing import HashOptions, hash_path
from tipline.store import scans as store
from tipline.store.db import make_engine, session_factory


def scene(seed: int, width: int = 480, height: int = 360) -> Image.Image:
    """A benign smooth random picture; distinct seeds give distinct PDQ hashes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "sub").mkdir()
    for i in range(5):
        scene(i).save(root / f"img{i}.jpg", "JPEG", quality=90)
    scene(9).save(root / "sub" / "deep.png", "PNG")
    (root / "notes.txt").write_text("not media")
    return root


def items_of(url: str, scan_id: str) -> dict[str, dict[str, Any]]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            return {
                r.content_id: {
                    "status": r.status,
                    "signals": r.signals,
                    "error": r.error_message,
                    "matches": r.matches,
                }
                for r in store.iter_items(session, scan_id, chunk=3)
            }
    finally:
        engine.dispose()


# -- enumeration (no database) -----------------------------------------------------------


def test_folder_walk_is_sorted_and_recursive(media: Path) -> None:
    items = expand_sources([str(media)])
    paths = [Path(i.path).relative_to(media).as_posix() for i in items]
    assert paths == [
        "img0.jpg",
        "img1.jpg",
        "img2.jpg",
        "img3.jpg",
        "img4.jpg",
        "notes.txt",
        "sub/deep.png",
    ]
    assert all(i.error is None and i.content_id == i.path for i in items)


def test_file_lists_urls_and_stdin(media: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\nid-1\t{media / 'img0.jpg'}\n{media / 'img1.jpg'}\n")
    stdin = io.StringIO(f"file://{media / 'img2.jpg'}\n")
    url = f"file://{(media / 'sub').as_posix()}"
    items = expand_sources([f"@{listing}", "-", url], stdin=stdin)
    assert [(i.content_id, Path(i.path).name) for i in items] == [
        ("id-1", "img0.jpg"),
        (str(media / "img1.jpg"), "img1.jpg"),
        (str(media / "img2.jpg"), "img2.jpg"),
        (str(media / "sub" / "deep.png"), "deep.png"),
    ]


def test_symlink_policy(tmp_path: Path, media: Path) -> None:
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    shutil.copy(media / "img0.jpg", root / "inner" / "a.jpg")
    (root / "loop").symlink_to(root)  # back to an enclosing folder
    (root / "self").symlink_to(root / "self")  # a link to itself
    (root / "away").symlink_to(media / "img1.jpg")  # outside the root
    (root / "near").symlink_to(root / "inner" / "a.jpg")
    (root / "gone").symlink_to(root / "missing")
    default = {Path(i.path).name: i.error for i in expand_sources([str(root)])}
    assert default["a.jpg"] is None
    assert default["away"] == "symlink to a path outside the scanned roots: not followed"
    assert default["near"] == "symlink not followed (use --follow-symlinks)"
    assert default["self"] == "symlink loop"
    assert default["gone"] == "dangling symlink: target does not exist"
    followed = {
        Path(i.path).relative_to(root).as_posix(): i.error
        for i in expand_sources([str(root)], follow_symlinks=True)
    }
    assert followed["loop"] == "symlink loop: links back to an enclosing folder"
    assert followed["self"] == "symlink loop"
    assert followed["away"] is None and followed["near"] is None
    assert "loop/inner/a.jpg" not in followed


def test_file_changed_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.jpg"
    scene(1, 2400, 1800).save(path, "JPEG", quality=95)
    stop = threading.Event()

    def grow() -> None:
        # JPEG decoders ignore bytes after the end marker: the image stays valid.
        with open(path, "ab") as fh:
            while not stop.is_set():
                fh.write(b"\0" * 64)
                fh.flush()
                time.sleep(0.0002)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        # A starved writer thread may not write during one read: try again until one read
        # overlaps a write (the deadline bounds a failure only; normally the first try).
        deadline = time.monotonic() + HANG_SECONDS
        result = hash_item(str(path), HashOptions())
        while result.error is None and time.monotonic() < deadline:
            result = hash_item(str(path), HashOptions())
    finally:
        stop.set()
        writer.join()
    assert result.error is not None
    assert result.error.message == "file changed while being read (size or mtime differ)"
    assert hash_item(str(path), HashOptions()).ok  # quiet again: fine


# -- scans on both databases -------------------------------------------------------------


def test_scan_records_every_item_and_resume_skips_all(
    db_url: str, media: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(media / "img0.jpg", bad / "copy.jpg")
    os.truncate(bad / "copy.jpg", 300)  # truncated JPEG
    with open(bad / "huge.jpg", "wb") as fh:  # 100 GB sparse: refused by size, never read
        fh.truncate(100 * 1024**3)
    (bad / "loop").symlink_to(bad / "loop")
    shutil.copy(media / "img1.jpg", tmp_path / "elsewhere.jpg")
    (bad / "out").symlink_to(tmp_path / "elsewhere.jpg")
    os.mkfifo(bad / "pipe.jpg")
    jsonl = tmp_path / "r.jsonl"
    request = ScanRequest(
        sources=(str(media), str(bad), str(tmp_path / "nope.jpg")),
        options=ScanOptions(batch_size=3),
        jobs=2,
        database_url=db_url,
        out=jsonl,
    )
    seen: list[tuple[int, int]] = []
    summary = run_scan(request, progress=lambda d, t: seen.append((d, t)))
    assert (summary.total, summary.scanned, summary.skipped) == (13, 13, 0)
    assert (summary.matched, summary.failed) == (0, 7)
    assert seen[0] == (0, 13) and seen[-1] == (13, 13)

    items = items_of(db_url, summary.scan_id)
    assert len(items) == 13
    for i in range(5):
        path = str(media / f"img{i}.jpg")
        direct = hash_path(path, HashOptions())
        assert items[path]["status"] == "ok"
        assert [(s["type"], s["value"]) for s in items[path]["signals"]] == [
            (s.type, s.value) for s in direct.signals
        ]
    errors = {Path(k).name: v["error"] for k, v in items.items() if v["status"] == "failed"}
    # refused by its size (stat), before anything is read
    assert errors["huge.jpg"] == f"{100 * 1024**3} bytes exceeds the limit of {2 * 1024**3} bytes"
    assert errors["loop"] == "symlink loop"
    assert errors["out"] == "symlink to a path outside the scanned roots: not followed"
    assert errors["pipe.jpg"] == "not a regular file"
    assert errors["nope.jpg"] == "no such file"
    assert errors["notes.txt"] == "not a supported photo or video format"
    assert errors["copy.jpg"] is not None
    assert len(errors) == 7

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [ln["content_id"] for ln in lines] == list(items)  # enumeration order
    assert lines[0]["signals"] == items[lines[0]["content_id"]]["signals"]

    again = run_scan(ScanRequest(resume_id=summary.scan_id, database_url=db_url, jobs=2))
    assert (again.scan_id, again.scanned, again.skipped, again.total) == (
        summary.scan_id,
        0,
        13,
        13,
    )
    engine = make_engine(db_url)
    with session_factory(engine)() as session:
        row = store.get_scan(session, summary.scan_id)
        assert row.status == "finished" and row.finished_at is not None
        assert row.options["batch_size"] == 3
        totals = store.scan_totals(session, summary.scan_id)
        assert (totals.items, totals.failed, totals.batches) == (
            13,
            7,
            7,
        )  # batches of 3 3 2 2 1 1 1: the tail is split for 2 workers
        n = session.scalar(select(func.count()).select_from(store.ScanItemRow))
        assert n == 13
    engine.dispose()


def test_resume_picks_up_only_missing_items(db_url: str, media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        shutil.copy(media / f"img{i}.jpg", folder / f"{i}.jpg")
    first = run_scan(ScanRequest(sources=(str(folder),), database_url=db_url))
    assert first.scanned == 3
    for i in range(3, 5):  # new files since: a resume scans exactly these
        shutil.copy(media / f"img{i}.jpg", folder / f"{i}.jpg")
    out = tmp_path / "all.csv"
    second = run_scan(ScanRequest(resume_id=first.scan_id, database_url=db_url, out=out))
    assert (second.scanned, second.skipped, second.total) == (2, 3, 5)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [Path(r["path"]).name for r in rows] == [f"{i}.jpg" for i in range(5)]
    assert all(r["status"] == "ok" and r["signals"].startswith("pdq:") for r in rows)
    with pytest.raises(Exception, match="no scan with id"):
        run_scan(ScanRequest(resume_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", database_url=db_url))


def test_cli_scan_prints_summary_and_writes_out(media: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "TIPLINE_DATA_DIR": str(tmp_path / "data")}
    listing = "\n".join(str(media / f"img{i}.jpg") for i in range(3)) + "\n"
    out = ["--out", str(tmp_path / "o.jsonl"), "--progress-interval", "0"]
    proc = run_tipline(["scan", "-", "--database-url", url, *out], stdin=listing, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "scanned 3, matched 0, skipped 0 (already done), failed 0" in proc.stdout
    assert "scan: 3/3 items" in proc.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
    resume = ["--resume", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--database-url", url]
    bad = run_tipline(["scan", *resume], env=env)
    assert (tmp_path / "data" / "index").is_dir()
    assert bad.returncode == 2 and "no scan with id" in bad.stderr


def test_write_results_refuses_unknown_suffix(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    with session_factory(engine)() as session, pytest.raises(Exception, match=r"\.jsonl or \.csv"):
        write_results(session, "x", tmp_path / "r.txt")
    engine.dispose()


def test_scan_item_is_plain_data() -> None:
    item = ScanItem("id", "/p")
    assert (item.error, item.error_code) == (None, None)


def test_matches_fire_the_banks_actions(db_url: str, media: Path, tmp_path: Path) -> None:
    from tipline.services import actions
    from tipline.services.banks import add_entry, create_bank
    from tipline.services.database import open_database
    from tipline.services.scan import default_matcher_loader
    from tipline.store.db import transaction

    db = open_database(db_url)
    create_bank(db, "known")
    img0 = hash_path(str(media / "img0.jpg"), HashOptions())
    img1 = hash_path(str(media / "img1.jpg"), HashOptions())
    pdq0 = next(s.value for s in img0.signals if s.type == "pdq")
    md5_1 = next(s.value for s in img1.signals if s.type == "md5")
    # 4 bits away from img0's PDQ: a perceptual match at distance 4
    near = f"{int(pdq0, 16) ^ 0xF:064x}"
    add_entry(db, "known", [f"pdq:{near}"], entry_id="e-pdq")
    add_entry(db, "known", [f"md5:{md5_1}"], entry_id="e-md5")
    with transaction(db.sessions) as s:
        actions.add_rule(s, action="enqueue_review", bank="known")
    db.close()

    request = ScanRequest(
        sources=(str(media),),
        jobs=2,
        options=ScanOptions(batch_size=2),
        database_url=db_url,
        matcher=default_matcher_loader(db_url, index_dir=tmp_path / "index"),
    )
    summary = run_scan(request)
    assert (summary.scanned, summary.matched, summary.failed) == (7, 2, 1)
    items = items_of(db_url, summary.scan_id)
    m0 = items[str(media / "img0.jpg")]
    assert m0["status"] == "matched"
    assert [(m["bank"], m["entry_id"], m["signal_type"], m["distance"]) for m in m0["matches"]] == [
        ("known", "e-pdq", "pdq", 4)
    ]
    m1 = items[str(media / "img1.jpg")]
    assert [(m["entry_id"], m["signal_type"], m["distance"]) for m in m1["matches"]] == [
        ("e-md5", "md5", 0)
    ]
    assert items[str(media / "img2.jpg")]["status"] == "ok"

    db = open_database(db_url)
    with db.sessions() as s:
        queue = actions.review_queue(s)
    db.close()
    assert sorted(q["content_id"] for q in queue) == sorted(
        [str(media / "img0.jpg"), str(media / "img1.jpg")]
    )
    assert {q["bank"] for q in queue} == {"known"}


def test_cli_progress_bar_on_a_terminal(media: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TERM": "xterm",
        "COLUMNS": "120",
    }
    proc, seen = run_on_terminal(
        [
            sys.executable,
            "-m",
            "tipline.cli.main",
            "scan",
            str(media),
            "--no-match",
            "--batch-size",
            "1",
            "--database-url",
            f"sqlite:///{tmp_path / 'p.db'}",
        ],
        env=env,
    )
    out = proc.stdout
    screen = seen.decode("utf-8", "replace")
    assert proc.returncode == 3, screen  # notes.txt is not media
    assert f"error: {media / 'notes.txt'}: not a supported photo or video format" in screen
    assert "scanning" in screen and "items/s" in screen and "7/7" in screen
    assert "scanned 7" in out.decode()


def _root_unreadable_file() -> Path | None:
    """A file even root cannot read: a write-only sysfs attribute (open for reading
    fails with EACCES whatever the caller's privileges)."""
    for candidate in (Path("/sys/bus/pci/rescan"), Path("/sys/bus/pci/drivers_probe")):
        try:
            with open(candidate, "rb"):
                pass
        except PermissionError:
            return candidate
        except OSError:
            continue
    return None


def test_unreadable_files_and_folders_are_per_item_errors(media: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "closed").mkdir(parents=True)
    shutil.copy(media / "img1.jpg", root / "open.jpg")
    as_root = os.geteuid() == 0
    if as_root:
        secret = _root_unreadable_file()
        if secret is None:
            pytest.skip("running as root and no write-only sysfs file to read")
    else:
        secret = root / "secret.jpg"
        shutil.copy(media / "img0.jpg", secret)
        os.chmod(secret, 0)
        os.chmod(root / "closed", 0)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{secret}\n")
    url = f"sqlite:///{tmp_path / 'u.db'}"
    try:
        summary = run_scan(ScanRequest(sources=(str(root), f"@{listing}"), database_url=url))
        items = items_of(url, summary.scan_id)
    finally:
        if not as_root:
            os.chmod(secret, 0o600)
            os.chmod(root / "closed", 0o700)
    assert items[str(secret)]["error"] == "permission denied"
    assert items[str(root / "open.jpg")]["status"] == "ok"
    if not as_root:
        assert items[str(root / "closed")]["error"] == "cannot list folder: permission denied"


def test_resume_refuses_a_scan_that_is_still_running(sqlite_url: str, media: Path) -> None:
    from tipline.errors import ConflictError
    from tipline.store.db import transaction

    first = run_scan(ScanRequest(sources=(str(media / "img0.jpg"),), database_url=sqlite_url))
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    engine = make_engine(sqlite_url)
    try:
        with transaction(session_factory(engine)) as session:
            store.set_run_state(
                session,
                first.scan_id,
                status="running",
                host=os.uname().nodename,
                pids=[running.pid],
            )
        with pytest.raises(ConflictError, match=f"still running \\(process {running.pid}\\)"):
            run_scan(ScanRequest(resume_id=first.scan_id, database_url=sqlite_url))
    finally:
        running.kill()
        running.wait()
        engine.dispose()
    again = run_scan(ScanRequest(resume_id=first.scan_id, database_url=sqlite_url))
    assert (again.scanned, again.skipped) == (0, 1)


def test_a_file_that_kills_its_worker_is_recorded_and_the_scan_goes_on(
    media: Path, tmp_path: Path
) -> None:
    from tipline.services.scan import CRASH_ON_ENV, WORKER_CRASHED

    # The worker really dies (os._exit) when it reaches img2.jpg, as on a decoder crash.
    env = {**os.environ, CRASH_ON_ENV: "img2.jpg", "TIPLINE_DATA_DIR": str(tmp_path / "d")}
    url = f"sqlite:///{tmp_path / 'c.db'}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tipline.cli.main",
            "scan",
            str(media),
            "-j",
            "2",
            "--no-match",
            "--batch-size",
            "3",
            "--database-url",
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "scanned 7, matched 0, skipped 0 (already done), failed 2" in proc.stdout
    errors = sorted(ln for ln in proc.stderr.splitlines() if ln.startswith("error: "))
    assert [ln.split(": ", 2)[1] for ln in errors] == [
        str(media / "img2.jpg"),
        str(media / "notes.txt"),
    ]
    engine = make_engine(url)
    with session_factory(engine)() as session:
        scan_id = session.scalars(select(store.ScanRow.id)).one()
    engine.dispose()
    summary_id = scan_id
    items = items_of(url, summary_id)
    crashed = items[str(media / "img2.jpg")]
    assert crashed["status"] == "failed"
    assert crashed["error"].startswith("worker process died while hashing this file")
    assert all(
        v["status"] == "ok" for k, v in items.items() if not k.endswith(("img2.jpg", "notes.txt"))
    )
    engine = make_engine(url)
    with session_factory(engine)() as session:
        row = session.scalars(
            select(store.ScanItemRow).where(store.ScanItemRow.error_code == WORKER_CRASHED)
        ).one()
        totals = store.scan_totals(session, summary_id)
    engine.dispose()
    assert row.path == str(media / "img2.jpg")
    # batches [img0 img1] [img2 img3] [img4] [notes] [deep]: the second one crashed and
    # was retried one item per batch
    assert (totals.items, totals.batches) == (7, 6)


def test_file_names_that_are_not_utf8(db_url: str, media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / os.fsdecode(b"bad\xff name.jpg")).write_bytes((media / "img0.jpg").read_bytes())
    shutil.copy(media / "img1.jpg", folder / "plain.jpg")
    first = run_scan(ScanRequest(sources=(str(folder),), database_url=db_url))
    assert (first.scanned, first.failed) == (2, 0)
    items = items_of(db_url, first.scan_id)
    assert set(items) == {f"{folder}/bad\\xff name.jpg", f"{folder}/plain.jpg"}
    again = run_scan(ScanRequest(resume_id=first.scan_id, database_url=db_url))
    assert (again.scanned, again.skipped) == (0, 2)  # the exact name is the key


def _cli_scan(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIPLINE_DATA_DIR": str(cwd / "data"), "COLUMNS": "300"}
    return run_tipline(["scan", *args, "--progress-interval", "0"], stdin=stdin, env=env, cwd=cwd)


def test_cli_scan_prints_item_errors_and_fails(media: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    proc = _cli_scan(
        "/nonexistent", str(media / "img0.jpg"), "--no-match", "--database-url", url, cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr
    assert "scanned 2, matched 0, skipped 0 (already done), failed 1" in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: /nonexistent: no such file"]
    ok = _cli_scan(str(media / "img1.jpg"), "--no-match", "--database-url", url, cwd=tmp_path)
    assert ok.returncode == 0 and "error" not in ok.stderr
    no_list = _cli_scan("@missing.txt", "--database-url", url, cwd=tmp_path)
    assert no_list.returncode == 2
    assert no_list.stderr.strip() == (
        f"error: {tmp_path / 'missing.txt'}: cannot read file list: No such file or directory"
    )
    engine = make_engine(url)
    with session_factory(engine)() as session:  # refused before a scan was recorded
        assert session.scalar(select(func.count()).select_from(store.ScanRow)) == 2
    engine.dispose()


def test_resume_from_another_folder(media: Path, tmp_path: Path) -> None:
    """Relative sources (a folder, a file list, a list on stdin) are stored absolute: a
    resume from elsewhere finds the same files and only the new ones are scanned."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "pics").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(media / "img0.jpg", home / "pics" / "a.jpg")
    shutil.copy(media / "img1.jpg", home / "listed.jpg")
    shutil.copy(media / "img2.jpg", home / "piped.jpg")
    (home / "list.txt").write_text("listed.jpg\n")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = _cli_scan(
        "pics", "@list.txt", "-", "--no-match", "--database-url", url, cwd=home, stdin="piped.jpg\n"
    )
    assert first.returncode == 0, first.stderr
    assert "scanned 3, matched 0, skipped 0 (already done), failed 0" in first.stdout
    scan_id = first.stderr.split("--resume ", 1)[1].split(")")[0]
    shutil.copy(media / "img3.jpg", home / "pics" / "b.jpg")  # new since: only this is scanned
    again = _cli_scan(
        "--resume", scan_id, "--database-url", url, cwd=elsewhere, stdin="piped.jpg\n"
    )
    assert again.returncode == 0, again.stderr
    assert "scanned 1, matched 0, skipped 3 (already done), failed 0" in again.stdout
    items = items_of(url, scan_id)
    assert sorted(items) == sorted(
        str(home / p) for p in ("pics/a.jpg", "pics/b.jpg", "listed.jpg", "piped.jpg")
    )
    assert all(v["status"] == "ok" for v in items.values())
    engine = make_engine(url)
    with session_factory(engine)() as session:
        row = store.get_scan(session, scan_id)
    engine.dispose()
    assert list(row.sources) == [str(home / "pics"), f"@{home / 'list.txt'}", "-"]


def test_scan_matches_normalised_variants_by_default(db_url: str, tmp_path: Path) -> None:
    from PIL import ImageOps

    from tipline.services.banks import add_entry, create_bank
    from tipline.services.database import open_database
    from tipline.services.scan import default_matcher_loader

    folder = tmp_path / "in"
    folder.mkdir()
    original = scene(21)
    original.save(tmp_path / "original.png")
    ImageOps.expand(original, border=50, fill=(0, 0, 0)).save(folder / "padded.png")
    scene(22).save(folder / "other.png")
    db = open_database(db_url)
    create_bank(db, "known")
    pdq = hash_path(str(tmp_path / "original.png"), HashOptions()).signals[0].value
    add_entry(db, "known", [f"pdq:{pdq}"], entry_id="orig")
    db.close()

    def scan(options: ScanOptions) -> dict[str, dict[str, Any]]:
        request = ScanRequest(
            sources=(str(folder),),
            options=options,
            database_url=db_url,
            matcher=default_matcher_loader(db_url, index_dir=tmp_path / "index"),
        )
        return items_of(db_url, run_scan(request).scan_id)

    items = scan(ScanOptions())
    padded = items[str(folder / "padded.png")]
    assert [(m["entry_id"], m["variant"]) for m in padded["matches"]] == [("orig", "trim")]
    trim = next(s for s in padded["signals"] if s.get("variant") == "trim")
    assert padded["matches"][0]["query_value"] == trim["value"]
    assert items[str(folder / "other.png")]["matches"] == []

    items = scan(ScanOptions(normalize=False))
    assert items[str(folder / "padded.png")]["matches"] == []
    # scans recorded before the switch existed resume as they ran: without it
    assert ScanOptions.from_json({"signals": []}).normalize is False
    assert ScanOptions.from_json(ScanOptions().to_json()).normalize is True
